//! Operator routes: hosts and runs. Every one needs the operator token.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

use common::run_state::{RunEvent, RunState};
use common::spec::HostSpec;
use common::wire::{
    HoldKey, Host, HostCreate, HostUpdate, IgnoreDiffAck, IgnoreDiffRequest, ReleaseRequest, Run,
    RunCreate, RunDetail, WebhookDelivery,
};

use super::caller::Operator;
use super::error::{ApiError, AppJson, AppQuery};
use super::{parse_id, AppState};
use crate::lifecycle::{self, now};
use crate::store::{MeasurementPage, NewHost};
use crate::wol;

fn check_spec(yaml: &str) -> Result<(), ApiError> {
    HostSpec::parse(yaml)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "host name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ -"
        )))
    }
}

pub async fn list_hosts(
    State(app): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<Host>>, ApiError> {
    Ok(Json(app.db(|s| Ok(s.list_hosts()?)).await?))
}

pub async fn create_host(
    State(app): State<AppState>,
    _: Operator,
    AppJson(req): AppJson<HostCreate>,
) -> Result<Json<Host>, ApiError> {
    check_name(&req.name)?;
    let wol = match &req.wol_broadcast {
        Some(t) => {
            let (ip, port) = wol::parse_target(t)
                .map_err(|e| ApiError::BadRequest(format!("wol_broadcast: {e}")))?;
            Some((ip.to_string(), port))
        }
        None => None,
    };
    let spec = req.expected_spec_yaml.clone().unwrap_or_default();
    check_spec(&spec)?;
    let host = NewHost {
        name: req.name,
        mac: req.mac,
        wol,
        expected_spec_yaml: spec,
        notes: req.notes.unwrap_or_default(),
    };
    Ok(Json(
        app.db(move |s| Ok(s.create_host(&host, now())?)).await?,
    ))
}

pub async fn show_host(
    State(app): State<AppState>,
    Path(name): Path<String>,
    _: Operator,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(app.db(move |s| Ok(s.host(&name)?)).await?))
}

/// Issues a new host-mode token for the host (replacing any earlier one).
pub async fn host_token(
    State(app): State<AppState>,
    Path(name): Path<String>,
    _: Operator,
) -> Result<Json<common::wire::HostToken>, ApiError> {
    let token = crate::auth::new_token();
    let hash = crate::auth::hash_token(&token);
    let host = app
        .db(move |s| Ok(s.set_host_token(&name, &hash, now())?))
        .await?;
    Ok(Json(common::wire::HostToken {
        host: host.name,
        token,
    }))
}

/// Sets or removes the host's claim secret; only its hash is stored.
pub async fn set_claim_secret(
    State(app): State<AppState>,
    Path(name): Path<String>,
    _: Operator,
    AppJson(req): AppJson<common::wire::ClaimSecret>,
) -> Result<Json<Host>, ApiError> {
    let secret = req.claim_secret.as_str();
    if !secret.is_empty() {
        common::wire::ClaimSecret::check(secret).map_err(|e| {
            ApiError::BadRequest(format!("claim_secret: {e} (or empty to remove it)"))
        })?;
    }
    let hash = if secret.is_empty() {
        String::new()
    } else {
        crate::auth::hash_token(secret)
    };
    Ok(Json(
        app.db(move |s| Ok(s.set_claim_secret(&name, &hash, now())?))
            .await?,
    ))
}

pub async fn edit_host(
    State(app): State<AppState>,
    Path(name): Path<String>,
    _: Operator,
    AppJson(req): AppJson<HostUpdate>,
) -> Result<Json<Host>, ApiError> {
    check_spec(&req.expected_spec_yaml)?;
    Ok(Json(
        app.db(move |s| Ok(s.update_host_spec(&name, &req.expected_spec_yaml, now())?))
            .await?,
    ))
}

/// Runs per page of `GET /runs` when the request names no `limit`, and the most.
const RUNS_PAGE: u32 = 500;
const RUNS_PAGE_MAX: u32 = 5_000;

/// `GET /runs?limit=&before=`: one page of runs, newest first.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    limit: Option<u32>,
    /// Only runs with an id below this (the last id of the page before).
    before: Option<i64>,
}

pub async fn list_runs(
    State(app): State<AppState>,
    _: Operator,
    AppQuery(q): AppQuery<RunsQuery>,
) -> Result<Json<Vec<Run>>, ApiError> {
    let limit = q.limit.unwrap_or(RUNS_PAGE);
    if !(1..=RUNS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {RUNS_PAGE_MAX}, got {limit}"
        )));
    }
    let before = q.before;
    Ok(Json(
        app.db(move |s| Ok(s.runs_page(before, limit)?)).await?,
    ))
}

pub async fn create_run(
    State(app): State<AppState>,
    _: Operator,
    AppJson(req): AppJson<RunCreate>,
) -> Result<Json<Run>, ApiError> {
    Ok(Json(
        app.db(move |s| Ok(lifecycle::create_run(s, &req, now())?))
            .await?,
    ))
}

pub async fn show_run(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<RunDetail>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    Ok(Json(app.db(move |s| Ok(s.run_detail(run_id)?)).await?))
}

async fn transition(
    app: AppState,
    id: String,
    event: RunEvent,
    power: Option<common::wire::Power>,
) -> Result<Json<Run>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    Ok(Json(
        app.db(move |s| Ok(s.operator_transition(run_id, event, power, now())?))
            .await?,
    ))
}

pub async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<Run>, ApiError> {
    transition(app, id, RunEvent::Cancel, None).await
}

pub async fn abort(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<Run>, ApiError> {
    transition(app, id, RunEvent::OperatorAbort, None).await
}

pub async fn release(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
    AppJson(req): AppJson<ReleaseRequest>,
) -> Result<Json<Run>, ApiError> {
    transition(app, id, RunEvent::Release, Some(req.power)).await
}

pub async fn ignore_diff(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
    AppJson(req): AppJson<IgnoreDiffRequest>,
) -> Result<Json<IgnoreDiffAck>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let field = req.field.trim().to_string();
    if field.is_empty() || field.len() > 128 {
        return Err(ApiError::BadRequest(
            "field must be 1 to 128 characters (e.g. memory.total_gib)".into(),
        ));
    }
    let f = field.clone();
    let marked = app
        .db(move |s| Ok(s.ignore_diff(run_id, &f, now())?))
        .await?;
    Ok(Json(IgnoreDiffAck {
        run_id,
        field,
        marked: marked as u64,
    }))
}

/// A body as it is, with its content type.
fn typed(
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        body.into(),
    )
        .into_response()
}

/// `GET /runs/{id}/report`: the run's report.json as of now (rendered on
/// demand; the stored one is at `report_path`).
pub async fn report(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<axum::response::Response, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let (json, _) = app
        .db(move |s| Ok(crate::report::writer::render_json(s, run_id)?))
        .await?;
    Ok(typed("application/json", json))
}

/// `GET /runs/{id}/report.html`: the run's report.html as of now.
pub async fn report_html(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<axum::response::Response, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let html = app
        .db(move |s| Ok(crate::report::writer::render_html(s, run_id)?))
        .await?;
    Ok(super::dashboard::page(axum::http::StatusCode::OK, html))
}

/// `GET /metrics` (outside `/api/v1`): Prometheus text; the operator token
/// unless the config makes it public.
pub async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    if !app.config.metrics_public {
        app.require_operator(&headers)?;
    }
    let snap = app.db(|s| Ok(s.metrics_snapshot()?)).await?;
    Ok(typed(
        "text/plain; version=0.0.4; charset=utf-8",
        crate::metrics::render(&app.counters, &snap, now()),
    ))
}

/// The hold key of a held run: private key (OpenSSH format) and where to use it.
pub async fn hold_key(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<HoldKey>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let (run, artifact, ssh_port) = app
        .db(move |s| {
            Ok((
                s.run(run_id)?,
                s.latest_artifact(run_id, "hold_key")?,
                s.hold_ssh_port(run_id)?,
            ))
        })
        .await?;
    if run.state != RunState::FailedHolding {
        return Err(ApiError::Conflict(format!(
            "run {run_id} is {}; only a held run has a hold key",
            run.state
        )));
    }
    let artifact = artifact
        .ok_or_else(|| ApiError::Conflict(format!("run {run_id}: hold key not issued yet")))?;
    let private_key = tokio::fs::read_to_string(&artifact.path)
        .await
        .map_err(|e| ApiError::Internal(format!("reading hold key {}: {e}", artifact.path)))?;
    Ok(Json(HoldKey {
        run_id,
        private_key,
        hold_ip: run.hold_ip,
        ssh_port,
        user: "root".into(),
    }))
}

/// Measurements per page when the request names no `limit`, and the most.
const MEASUREMENTS_PAGE: u32 = 10_000;
const MEASUREMENTS_PAGE_MAX: u32 = 100_000;

/// Stored measurements of a run, oldest first, one page at a time:
/// `?kind=&after=<last id seen>&limit=` (a soak run holds millions).
pub async fn measurements(
    State(app): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<HashMap<String, String>>,
    _: Operator,
) -> Result<Json<Vec<common::wire::Measurement>>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let after = match q.get("after") {
        Some(a) => a.parse::<i64>().ok().filter(|a| *a >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!("after must be a measurement id, got {a:?}"))
        })?,
        None => 0,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MEASUREMENTS_PAGE_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be 1 to {MEASUREMENTS_PAGE_MAX}, got {l:?}"
                ))
            })?,
        None => MEASUREMENTS_PAGE,
    };
    let page = MeasurementPage {
        kind: q.get("kind").cloned(),
        after,
        limit,
    };
    let rows = app
        .db(move |s| {
            s.run(run_id)?;
            Ok(s.measurements(run_id, &page)?)
        })
        .await?;
    Ok(Json(rows))
}

/// Events per page of `GET /runs/{id}/events`, by default and at most.
const EVENTS_PAGE: u32 = 1_000;
const EVENTS_PAGE_MAX: u32 = 10_000;

/// `GET /runs/{id}/events?after=&limit=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// A run's events, oldest first, one page at a time.
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
    AppQuery(q): AppQuery<EventsQuery>,
) -> Result<Json<Vec<common::wire::Event>>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    let limit = q.limit.unwrap_or(EVENTS_PAGE);
    if !(1..=EVENTS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {EVENTS_PAGE_MAX}, got {limit}"
        )));
    }
    let after = q.after.unwrap_or(0).max(0);
    Ok(Json(
        app.db(move |s| Ok(s.events_page(run_id, after, limit)?))
            .await?,
    ))
}

/// `GET /runs/{id}/series`: every measured series of a run with its count,
/// range, mean and latest value, by kind and key.
pub async fn series(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<Vec<common::wire::SeriesStats>>, ApiError> {
    let run_id = parse_id(&id, "run id")?;
    Ok(Json(app.db(move |s| Ok(s.series(run_id)?)).await?))
}

/// `GET /webhooks?state=`: deliveries, newest first.
pub async fn webhooks(
    State(app): State<AppState>,
    AppQuery(q): AppQuery<HashMap<String, String>>,
    _: Operator,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    let state = match q.get("state").map(String::as_str) {
        None => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(s.to_string()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be pending, delivered or dead, got {other:?}"
            )))
        }
    };
    let mut rows = app
        .db(move |s| Ok(s.webhook_deliveries(state.as_deref())?))
        .await?;
    for d in &mut rows {
        d.url = crate::webhooks::redacted(&d.url);
    }
    Ok(Json(rows))
}

/// `POST /webhooks/{id}/retry`: a dead letter becomes pending, due now.
pub async fn retry_webhook(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _: Operator,
) -> Result<Json<WebhookDelivery>, ApiError> {
    let id = parse_id(&id, "delivery id")?;
    let mut d = app.db(move |s| Ok(s.webhook_retry(id, now())?)).await?;
    d.url = crate::webhooks::redacted(&d.url);
    Ok(Json(d))
}
