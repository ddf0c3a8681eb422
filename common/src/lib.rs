//! Vetting's shared model: the wire protocol, stages, run states, profiles,
//! thresholds, host specs and their diff.
//!
//! Layout:
//! - [`wire`]: every `/api/v1` body; the only types that cross HTTP.
//! - [`event`]: the kinds and levels of events.
//! - [`stage`], [`run_state`]: DefaultStageOrder, stage states, the run state machine.
//! - [`profile`]: the ProfileRegistry (quick, deep, soak) and default thresholds.
//! - [`threshold`]: ops, severities, glob key selectors, override merge.
//! - [`measurement`]: kinds, units, finite values, samples.
//! - [`spec`], [`inventory`], [`version`]: host spec YAML, inventory, spec diff.
//! - [`time`], [`mac`]: the timestamp format and MAC addresses.
//!
//! Architecture invariant: this crate does no I/O and never reads the clock;
//! callers pass `now`. Everything here is a pure function of its inputs.

/// Serializes a type as its `Display` text and deserializes it through
/// its `FromStr` (a parse error is the deserializer's error).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Declares a closed string enum: variants, their wire names, `as_str`,
/// `ALL`, `Display` and `FromStr`.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $err:literal, { $($(#[$vm:meta])* $v:ident => $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Compares with a wire name, as a row read back is checked.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownName;
            fn from_str(s: &str) -> Result<Self, $crate::UnknownName> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::UnknownName { what: $err, name: s.to_string() })
            }
        }
    };
}

/// A name that is not in one of the closed lists `string_enum!` declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

pub mod event;
pub mod inventory;
pub mod mac;
pub mod measurement;
pub mod profile;
pub mod run_state;
#[cfg(feature = "schema")]
mod schema;
pub mod spec;
pub mod stage;
pub mod threshold;
pub mod time;
pub mod version;
pub mod wire;
