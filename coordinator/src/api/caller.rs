//! Who is calling: one extractor per kind of caller, so a handler names
//! its caller in its arguments and cannot forget to check it.
//!
//! - [`Operator`]: the operator bearer token.
//! - [`RunCaller`]: the run token of the run named by the path's `{id}`.
//! - [`HostCaller`]: a host-mode bearer token, hashed; the store says
//!   whose it is.
//!
//! Never: let a request reach its handler unchecked, or read its body
//! before the caller is known (extractors run before the body is parsed).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;
use super::{bearer, parse_id, AppState};
use crate::auth;

/// The caller holds the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        app.require_operator(&parts.headers)?;
        Ok(Operator)
    }
}

/// The caller holds the run token of the run in the path (`{id}`): the run's id.
#[derive(Debug, Clone, Copy)]
pub struct RunCaller(pub i64);

impl FromRequestParts<AppState> for RunCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let id = params
            .get("id")
            .ok_or_else(|| ApiError::Internal("a run route without {id}".into()))?;
        let run_id = parse_id(id, "run id")?;
        app.require_run(&parts.headers, run_id).await?;
        Ok(RunCaller(run_id))
    }
}

/// The caller sent a bearer token to use as a host-mode token: its SHA-256,
/// which the store looks up (an unknown one is refused there).
#[derive(Debug, Clone)]
pub struct HostCaller {
    pub token_hash: String,
}

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer token",
        ))?;
        Ok(HostCaller {
            token_hash: auth::hash_token(token),
        })
    }
}
