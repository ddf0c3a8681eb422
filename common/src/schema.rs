//! JSON Schemas for the types that serialize themselves as strings (their
//! serde impls are hand-written, so `schemars` cannot derive them). Only with
//! the `schema` feature; the coordinator builds its OpenAPI document from
//! these and the derived schemas of [`crate::wire`].
//!
//! Never: a schema that accepts less or more than the type's `Deserialize`.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_schema!(crate::mac::Mac, "Mac", {
    "type": "string",
    "description": "A 48-bit MAC address, aa:bb:cc:dd:ee:ff",
    "pattern": "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
});

string_schema!(crate::time::Timestamp, "Timestamp", {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339; the coordinator writes UTC with milliseconds",
    "examples": ["2026-11-23T09:15:43.123Z"]
});

string_schema!(crate::threshold::StageSel, "StageSel", {
    "type": "string",
    "description": "A stage name (Inventory … Burn), or * for every stage"
});

string_schema!(crate::threshold::KeySelector, "KeySelector", {
    "type": "string",
    "description": "A glob over measurement keys, e.g. coretemp/*"
});
