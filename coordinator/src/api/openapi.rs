//! The route table: one list that builds both the axum router and the
//! OpenAPI 3.1 document served at `/api/v1/openapi.json`, so the document
//! cannot name a route the server lacks or miss one it has.
//!
//! Body schemas come from the wire types themselves (`schemars`, through
//! `common`'s `schema` feature); operation ids are the handlers' own names.
//! Never: register an API route outside [`Api`] (only the dashboard's HTML
//! pages, `api::dashboard`, live beside it).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{on, MethodFilter};
use axum::Router;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No token.
    Public,
    /// The run's own token (issued by the claim).
    Run,
    /// A host-mode agent's host token.
    Host,
    /// The operator token.
    Operator,
    /// The operator token, unless the coordinator's config makes it public.
    OperatorOrPublic,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Run => "run",
            Access::Host => "host",
            Access::Operator => "operator",
            Access::OperatorOrPublic => "operator-or-public",
        }
    }
}

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

enum Body {
    None,
    Json(SchemaFn),
    /// Any bytes, with this media type.
    Raw(&'static str),
}

/// What one operation takes and gives, for the document.
pub(crate) struct Doc {
    access: Access,
    summary: &'static str,
    request: Body,
    response: Body,
    query: Vec<(&'static str, &'static str, bool, &'static str)>,
    unlimited_body: bool,
}

impl Doc {
    pub(crate) fn new(access: Access, summary: &'static str) -> Self {
        Self {
            access,
            summary,
            request: Body::None,
            response: Body::None,
            query: Vec::new(),
            unlimited_body: false,
        }
    }

    /// A JSON request body of type `T`.
    pub(crate) fn body<T: JsonSchema>(mut self) -> Self {
        self.request = Body::Json(schema_of::<T>);
        self
    }

    /// A raw request body streamed to disk, exempt from the body limit.
    pub(crate) fn raw_body(mut self) -> Self {
        self.request = Body::Raw("application/octet-stream");
        self.unlimited_body = true;
        self
    }

    /// A JSON answer of type `T`.
    pub(crate) fn returns<T: JsonSchema>(mut self) -> Self {
        self.response = Body::Json(schema_of::<T>);
        self
    }

    /// A non-JSON answer of this media type.
    pub(crate) fn returns_raw(mut self, media_type: &'static str) -> Self {
        self.response = Body::Raw(media_type);
        self
    }

    /// A query parameter: name, JSON type, required, description.
    pub(crate) fn query(
        mut self,
        name: &'static str,
        ty: &'static str,
        required: bool,
        description: &'static str,
    ) -> Self {
        self.query.push((name, ty, required, description));
        self
    }
}

struct Op {
    method: &'static str,
    path: String,
    operation_id: String,
    doc: Doc,
}

/// Collects routes into a router and their documentation into a list.
pub(crate) struct Api {
    router: Router<AppState>,
    ops: Vec<Op>,
}

impl Api {
    pub(crate) fn new() -> Self {
        Self {
            router: Router::new(),
            ops: Vec::new(),
        }
    }

    pub(crate) fn get<H, T>(self, path: &str, handler: H, doc: Doc) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add("get", MethodFilter::GET, path, handler, doc)
    }

    pub(crate) fn post<H, T>(self, path: &str, handler: H, doc: Doc) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add("post", MethodFilter::POST, path, handler, doc)
    }

    pub(crate) fn patch<H, T>(self, path: &str, handler: H, doc: Doc) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add("patch", MethodFilter::PATCH, path, handler, doc)
    }

    fn add<H, T>(
        mut self,
        method: &'static str,
        filter: MethodFilter,
        path: &str,
        handler: H,
        doc: Doc,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let mut method_router = on(filter, handler);
        if doc.unlimited_body {
            method_router = method_router.layer(DefaultBodyLimit::disable());
        }
        self.router = self.router.route(path, method_router);
        self.ops.push(Op {
            method,
            path: path.to_string(),
            operation_id: handler_name::<H>(),
            doc,
        });
        self
    }

    /// The router, with `openapi_path` serving the document (itself listed).
    pub(crate) fn finish(mut self, openapi_path: &str, version: &str) -> Router<AppState> {
        self.ops.push(Op {
            method: "get",
            path: openapi_path.to_string(),
            operation_id: "openapi".into(),
            doc: Doc::new(Access::Public, "This document").returns_raw("application/json"),
        });
        let doc: Arc<str> = document(&self.ops, version).to_string().into();
        self.router.route(
            openapi_path,
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
    }
}

/// `vetting_coordinator::api::agent::claim` → `claim`.
fn handler_name<H>() -> String {
    let full = std::any::type_name::<H>();
    full.rsplit("::").next().unwrap_or(full).to_string()
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn content(g: &mut SchemaGenerator, body: &Body) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json(f) => Some(json!({"application/json": {"schema": f(g)}})),
        Body::Raw(media) => {
            Some(json!({ *media: {"schema": {"type": "string", "format": "binary"}} }))
        }
    }
}

/// The OpenAPI 3.1 document for `ops`.
fn document(ops: &[Op], version: &str) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = g.subschema_for::<common::wire::ErrorBody>();
    let mut paths = Map::new();
    for op in ops {
        let mut params: Vec<Value> = path_params(&op.path)
            .into_iter()
            .map(|name| {
                let ty = if name == "name" { "string" } else { "integer" };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
            })
            .collect();
        params.extend(op.doc.query.iter().map(|(name, ty, required, desc)| {
            json!({"name": name, "in": "query", "required": required,
                   "description": desc, "schema": {"type": ty}})
        }));
        let mut operation = json!({
            "operationId": op.operation_id,
            "summary": op.doc.summary,
            "tags": [op.doc.access.as_str()],
            "x-vetting-access": op.doc.access.as_str(),
            "responses": {
                "4XX": {"description": "bad input, bad token, unknown resource or conflict",
                        "content": {"application/json": {"schema": error.clone()}}},
                "5XX": {"description": "internal error (details only in the coordinator's log)",
                        "content": {"application/json": {"schema": error.clone()}}},
            },
        });
        let ok = match content(&mut g, &op.doc.response) {
            Some(c) => json!({"description": "success", "content": c}),
            None => json!({"description": "success"}),
        };
        operation["responses"]["200"] = ok;
        if let Some(c) = content(&mut g, &op.doc.request) {
            operation["requestBody"] = json!({"required": true, "content": c});
        }
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        operation["security"] = match op.doc.access {
            Access::Public => json!([]),
            Access::OperatorOrPublic => json!([{"bearer": []}, {}]),
            _ => json!([{"bearer": []}]),
        };
        let item = paths
            .entry(op.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        item[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Vetting coordinator",
            "version": version,
            "description": "Agents claim runs, stream measurements and obey directives; operators drive runs. Every timestamp is RFC 3339 UTC with milliseconds. Errors are {\"error\": {\"code\", \"message\"}}."
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "run, host or operator token, per operation's x-vetting-access"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_are_the_braced_segments() {
        assert_eq!(
            path_params("/api/v1/runs/{id}/stages/{ordinal}/start"),
            vec!["id", "ordinal"]
        );
        assert!(path_params("/api/v1/claim").is_empty());
    }

    fn name_of<H>(_: &H) -> String {
        handler_name::<H>()
    }

    #[test]
    fn operation_ids_are_handler_names() {
        assert_eq!(name_of(&super::super::agent::claim), "claim");
        assert_eq!(name_of(&super::super::operator::list_runs), "list_runs");
    }
}
