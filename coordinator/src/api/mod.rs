//! `/api/v1`: every route, the shared state, and `serve`.
//!
//! Handlers authenticate, parse, call the store on the blocking pool, and
//! turn the store's facts into directives through the gate. The daemon and
//! the tests call the same [`serve`].

mod agent;
pub mod error;
mod operator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use common::wire::{Directive, API_PREFIX};

use crate::auth;
use crate::config::Config;
use crate::gate;
use crate::lifecycle::{self, now};
use crate::store::sqlite::SqliteStore;
use crate::store::{RunFacts, Store};
use error::ApiError;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub counters: Arc<crate::metrics::Counters>,
    operator_hash: Arc<str>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config, operator_token: &str) -> Self {
        Self {
            store,
            config: Arc::new(config),
            counters: Arc::default(),
            operator_hash: auth::hash_token(operator_token).into(),
        }
    }

    /// Runs blocking store work off the async workers.
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task: {e}")))?
    }

    pub(crate) fn require_operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if auth::token_matches(t, &self.operator_hash) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("operator token required")),
            None => Err(ApiError::Unauthorized(
                "missing Authorization: Bearer token",
            )),
        }
    }

    pub(crate) async fn require_run(
        &self,
        headers: &HeaderMap,
        run_id: i64,
    ) -> Result<(), ApiError> {
        let Some(token) = bearer(headers).map(str::to_owned) else {
            return Err(ApiError::Unauthorized(
                "missing Authorization: Bearer token",
            ));
        };
        let hash = self.db(move |s| Ok(s.agent_token_hash(run_id)?)).await?;
        if auth::token_matches(&token, &hash) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("token not valid for this run"))
        }
    }

    /// The directive for these facts; a held run gets its hold key first.
    pub(crate) async fn directive(
        &self,
        facts: RunFacts,
    ) -> Result<(RunFacts, Directive), ApiError> {
        let facts = if facts.state == common::run_state::RunState::FailedHolding
            && facts.hold_public_key.is_none()
        {
            let config = self.config.clone();
            self.db(move |s| Ok(lifecycle::ensure_hold_key(s, &config, facts, now())?))
                .await?
        } else {
            facts
        };
        let d = gate::directive_for(&facts, self.config.pass_power);
        Ok((facts, d))
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty()).then_some(t)
}

pub(crate) fn parse_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::BadRequest(format!("{what} must be a positive integer, got {s:?}"))
    })
}

/// Every route of `/api/v1`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/health", get(agent::health))
        .route("/claim", post(agent::claim))
        .route(
            "/runs/{id}/stages/{ordinal}/start",
            post(agent::stage_start),
        )
        .route(
            "/runs/{id}/stages/{ordinal}/finish",
            post(agent::stage_finish),
        )
        .route("/runs/{id}/batches", post(agent::batch))
        .route("/runs/{id}/heartbeat", post(agent::heartbeat))
        .route("/runs/{id}/directive", get(agent::directive))
        .route("/runs/{id}/firmware", post(agent::firmware))
        .route(
            "/runs/{id}/artifacts",
            post(agent::artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/runs/{id}/hold-ip", post(agent::hold_ip))
        .route("/runs/{id}/events", post(agent::event))
        .route("/runs/{id}/complete", post(agent::complete))
        .route(
            "/hosts",
            get(operator::list_hosts).post(operator::create_host),
        )
        .route(
            "/hosts/{name}",
            get(operator::show_host).patch(operator::edit_host),
        )
        .route("/hosts/{name}/token", post(operator::host_token))
        .route("/host/heartbeat", post(agent::host_heartbeat))
        .route("/runs", get(operator::list_runs).post(operator::create_run))
        .route("/runs/{id}", get(operator::show_run))
        .route("/runs/{id}/cancel", post(operator::cancel))
        .route("/runs/{id}/abort", post(operator::abort))
        .route("/runs/{id}/release", post(operator::release))
        .route("/runs/{id}/ignore-diff", post(operator::ignore_diff))
        .route("/runs/{id}/hold-key", get(operator::hold_key))
        .route("/runs/{id}/measurements", get(operator::measurements))
        .route("/runs/{id}/report", get(operator::report))
        .route("/runs/{id}/report.html", get(operator::report_html))
        .layer(DefaultBodyLimit::max(body_limit));
    Router::new()
        .nest(API_PREFIX, api)
        .route("/metrics", get(operator::metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest("method not allowed on this route".into())
        })
        .with_state(state)
}

/// Opens the data directory (database, artifacts, operator token) and serves
/// until `shutdown` resolves. The operator token file exists before the
/// listener answers anything.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(config.artifacts_dir())
        .with_context(|| format!("creating {}", config.artifacts_dir().display()))?;
    let token = auth::load_or_create_operator_token(&config.operator_token_path())?;
    let db_path = config.db_path();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, now()))
        .await?
        .with_context(|| format!("opening database in {}", dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let state = AppState::new(store.clone(), config.clone(), &token);
    let store_for_janitor = store.clone();
    let sweeper = tokio::spawn(sweep(store, config.heartbeat_timeout, config.hold_timeout));
    let reports = tokio::spawn(crate::report::writer::run(
        store_for_janitor.clone(),
        Arc::new(config.clone()),
        Duration::from_secs(1),
    ));
    let iperf_servers = crate::iperf::spawn_pool(&config.iperf3_ports);
    let janitor = config.artifact_retention.map(|retention| {
        let store = store_for_janitor.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let store = store.clone();
                match tokio::task::spawn_blocking(move || {
                    crate::janitor::prune(&*store, retention, now())
                })
                .await
                {
                    Ok(Ok(files)) if !files.is_empty() => {
                        tracing::info!(count = files.len(), "pruned artifact files")
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "janitor pass failed"),
                    Err(e) => tracing::error!(error = %e, "janitor pass panicked"),
                    _ => {}
                }
            }
        })
    });
    tracing::info!(addr = %listener.local_addr()?, data_dir = %config.data_dir.display(), "coordinator listening");
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    reports.abort();
    if let Some(j) = janitor {
        j.abort();
    }
    for s in iperf_servers {
        s.abort();
    }
    result.context("serving HTTP")
}

/// Aborts runs whose agent went silent during a stage (a hang is a hardware
/// fault) and ends holds past their timeout. Checks four times per period.
async fn sweep(store: Arc<dyn Store>, timeout: Duration, hold_timeout: Duration) {
    let period = (timeout.min(hold_timeout) / 4).max(Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let now = now();
            let cutoff = now.plus_millis(-(timeout.as_millis() as i64));
            let held_since = now.plus_millis(-(hold_timeout.as_millis() as i64));
            let mut ended = store.expire_silent_agents(cutoff, now)?;
            ended.extend(store.expire_holds(held_since, now)?);
            Ok::<_, crate::store::StoreError>(ended)
        })
        .await;
        match res {
            Ok(Ok(aborted)) if !aborted.is_empty() => {
                tracing::warn!(?aborted, "ended runs with silent agents or expired holds")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "silent-agent sweep failed"),
            Err(e) => tracing::error!(error = %e, "silent-agent sweep panicked"),
            _ => {}
        }
    }
}
