//! The one error type of the HTTP edge: it decides the status code and
//! renders `{"error": {"code", "message"}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use common::wire::{ErrorBody, ErrorDetail};

use crate::lifecycle::LifecycleError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed JSON, wrong types, NaN/inf, bad values.
    BadRequest(String),
    /// 401: token missing or not valid for this resource.
    Unauthorized(&'static str),
    /// 404: unknown run, host, or nothing to claim.
    NotFound(String),
    /// 409: illegal transition, stage out of order.
    Conflict(String),
    /// 409 with the expected batch number.
    BatchGap { got: u64, expected: u64 },
    /// A refusal with its own status and error code (`claim_conflict`,
    /// `too_many_macs`).
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 429 `rate_limited`, with `Retry-After` in whole seconds.
    RateLimited { retry_after: std::time::Duration },
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 413: body over the configured limit.
    TooLarge(String),
    /// 500: the cause goes to the log; the body says only "internal error".
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<u64>) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone(), None),
            ApiError::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                m.to_string(),
                None,
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone(), None),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone(), None),
            ApiError::BatchGap { got, expected } => (
                StatusCode::CONFLICT,
                "batch_gap",
                format!("batch {got} does not follow the last accepted batch; expected {expected}"),
                Some(*expected),
            ),
            ApiError::Refused {
                status,
                code,
                message,
            } => (*status, *code, message.clone(), None),
            ApiError::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests from this address; retry in {} s",
                    retry_secs(*retry_after)
                ),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route".into(),
                None,
            ),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.clone(), None),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
                None,
            ),
        }
    }
}

/// Whole seconds to wait, at least one.
fn retry_secs(d: std::time::Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let (status, code, message, expected_seq) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
                expected_seq,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_secs(retry_after)));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::BatchGap { got, expected } => ApiError::BatchGap { got, expected },
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            e @ StoreError::RunFinished { .. } => ApiError::Refused {
                status: StatusCode::CONFLICT,
                code: "run_finished",
                message: e.to_string(),
            },
            StoreError::OverLimit { code, message } => ApiError::Refused {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code,
                message,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Invalid(m) => ApiError::BadRequest(m),
            LifecycleError::Conflict(m) => ApiError::Conflict(m),
            LifecycleError::Store(s) => s.into(),
            io @ LifecycleError::Io { .. } => ApiError::Internal(io.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(r.body_text()),
            _ => ApiError::BadRequest(r.body_text()),
        }
    }
}

/// `Json` whose rejections come back in our error shape.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(AppJson(value))
    }
}

/// `Query` whose rejections (a malformed query string) come back in our
/// error shape.
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::BadRequest(r.body_text()))?;
        Ok(AppQuery(value))
    }
}
