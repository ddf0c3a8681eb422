//! `/api/v1`: every route, the shared state, and `serve`.
//!
//! Handlers authenticate, parse, call the store on the blocking pool, and
//! turn the store's facts into directives through the gate. The daemon and
//! the tests call the same [`serve`].

mod agent;
mod caller;
pub mod dashboard;
pub mod edge;
pub mod error;
mod limit;
mod openapi;
mod operator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::Router;
use tokio::net::TcpListener;

use common::wire::{self, Directive};

use crate::auth;
use crate::background::Supervisor;
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
    pub sessions: Arc<dashboard::Sessions>,
    /// Claims per source address.
    pub claim_limit: Arc<limit::PerAddress>,
    /// Dashboard logins per address: [`limit::LOGIN_RATE`], bursts of
    /// [`limit::LOGIN_BURST`].
    pub login_limit: Arc<limit::PerAddress>,
    /// Claims looked up in the store at once: a flood of claims waits here
    /// (cheaply) instead of filling the blocking pool ahead of batches.
    pub claim_slots: Arc<tokio::sync::Semaphore>,
    /// Measurement batches go through here: group commit.
    pub ingest: Arc<crate::ingest::Ingest>,
    operator_hash: Arc<str>,
}

impl AppState {
    /// Also starts the store's writer thread (group commit).
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        operator_token: &str,
    ) -> std::io::Result<Self> {
        let counters: Arc<crate::metrics::Counters> = Arc::default();
        let ingest = Arc::new(crate::ingest::Ingest::start(
            store.clone(),
            counters.clone(),
        )?);
        let claim_limit = Arc::new(limit::PerAddress::new(
            config.claim_rate,
            config.claim_burst,
        ));
        Ok(Self {
            store,
            config: Arc::new(config),
            counters,
            sessions: Arc::default(),
            claim_limit,
            login_limit: Arc::new(limit::PerAddress::new(
                limit::LOGIN_RATE,
                limit::LOGIN_BURST,
            )),
            claim_slots: Arc::new(tokio::sync::Semaphore::new(limit::CLAIMS_AT_ONCE)),
            ingest,
            operator_hash: auth::hash_token(operator_token).into(),
        })
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

    /// Whether `token` is the operator token (constant-time).
    pub(crate) fn is_operator_token(&self, token: &str) -> bool {
        auth::token_matches(token, &self.operator_hash)
    }

    pub(crate) fn require_operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if self.is_operator_token(t) => Ok(()),
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
        let d = gate::directive_for(&facts, self.config.pass_power, self.config.hold_timeout);
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

/// Every route: `/api/v1` and `/metrics` from one table (documented at
/// `/api/v1/openapi.json`), and the dashboard's HTML pages under `/ui`.
pub fn router(state: AppState) -> Router {
    use openapi::Access as A;
    use openapi::{Api, Doc};
    use wire::*;
    let body_limit = state.config.max_body_bytes;
    let p = |path: &str| format!("{API_PREFIX}{path}");
    let api = Api::new()
        .get(
            &p("/health"),
            agent::health,
            Doc::new(A::Public, "Liveness and version").returns::<Health>(),
        )
        .post(
            &p("/claim"),
            agent::claim,
            Doc::new(
                A::Public,
                "Claim the run queued for these MACs (404: nothing queued)",
            )
            .body::<ClaimRequest>()
            .returns::<ClaimResponse>(),
        )
        .post(
            &p("/runs/{id}/stages/{ordinal}/start"),
            agent::stage_start,
            Doc::new(A::Run, "Report that a stage started")
                .body::<StageStart>()
                .returns::<DirectiveResponse>(),
        )
        .post(
            &p("/runs/{id}/stages/{ordinal}/finish"),
            agent::stage_finish,
            Doc::new(A::Run, "Report a stage's result; the gate answers")
                .body::<StageFinish>()
                .returns::<StageVerdict>(),
        )
        .post(
            &p("/runs/{id}/batches"),
            agent::batch,
            Doc::new(
                A::Run,
                "Store a numbered batch of measurements (409 batch_gap names the expected number)",
            )
            .body::<MeasurementBatch>()
            .returns::<BatchAck>(),
        )
        .post(
            &p("/runs/{id}/heartbeat"),
            agent::heartbeat,
            Doc::new(A::Run, "Heartbeat; answers the directive").returns::<DirectiveResponse>(),
        )
        .get(
            &p("/runs/{id}/stages"),
            agent::stages,
            Doc::new(
                A::Run,
                "The run's stages as the coordinator has them (an agent re-synchronises after data_lost)",
            )
            .returns::<Vec<StagePlan>>(),
        )
        .get(
            &p("/runs/{id}/directive"),
            agent::directive,
            Doc::new(A::Run, "The run's current directive").returns::<DirectiveResponse>(),
        )
        .post(
            &p("/runs/{id}/firmware"),
            agent::firmware,
            Doc::new(A::Run, "Firmware versions found on the node")
                .body::<FirmwareReport>()
                .returns::<FirmwareAck>(),
        )
        .post(
            &p("/runs/{id}/artifacts"),
            agent::artifact,
            Doc::new(
                A::Run,
                "Upload an artifact (raw bytes, streamed; stored by BLAKE3)",
            )
            .raw_body()
            .query(
                "kind",
                "string",
                true,
                "artifact kind, 1 to 32 of [a-z0-9_]",
            )
            .query(
                "stage",
                "integer",
                false,
                "ordinal of the stage it belongs to",
            )
            .returns::<ArtifactInfo>(),
        )
        .post(
            &p("/runs/{id}/hold-ip"),
            agent::hold_ip,
            Doc::new(A::Run, "A held node's address and SSH port")
                .body::<HoldReport>()
                .returns::<DirectiveResponse>(),
        )
        .post(
            &p("/runs/{id}/events"),
            agent::event,
            Doc::new(A::Run, "Record an agent event")
                .body::<AgentEvent>()
                .returns::<EventAck>(),
        )
        .post(
            &p("/runs/{id}/complete"),
            agent::complete,
            Doc::new(
                A::Run,
                "End of run: the agent's sample count, compared with what was stored",
            )
            .body::<RunComplete>()
            .returns::<CompleteAck>(),
        )
        .get(
            &p("/hosts"),
            operator::list_hosts,
            Doc::new(A::Operator, "List hosts").returns::<Vec<Host>>(),
        )
        .post(
            &p("/hosts"),
            operator::create_host,
            Doc::new(A::Operator, "Register a host")
                .body::<HostCreate>()
                .returns::<Host>(),
        )
        .get(
            &p("/hosts/{name}"),
            operator::show_host,
            Doc::new(A::Operator, "Show a host").returns::<Host>(),
        )
        .patch(
            &p("/hosts/{name}"),
            operator::edit_host,
            Doc::new(A::Operator, "Change a host's MACs, spec, BMC or mode")
                .body::<HostUpdate>()
                .returns::<Host>(),
        )
        .post(
            &p("/hosts/{name}/token"),
            operator::host_token,
            Doc::new(
                A::Operator,
                "Issue a new host-mode token (the old one stops working)",
            )
            .returns::<HostToken>(),
        )
        .post(
            &p("/hosts/{name}/claim-secret"),
            operator::set_claim_secret,
            Doc::new(
                A::Operator,
                "Set the host's claim secret (empty removes it): its runs are then claimed only by an agent that carries it",
            )
            .body::<ClaimSecret>()
            .returns::<Host>(),
        )
        .post(
            &p("/host/heartbeat"),
            agent::host_heartbeat,
            Doc::new(
                A::Host,
                "Host-mode heartbeat; names a queued run to run in place",
            )
            .body::<HostHeartbeat>()
            .returns::<HostHeartbeatAck>(),
        )
        .get(
            &p("/runs"),
            operator::list_runs,
            Doc::new(A::Operator, "List runs, newest first, one page at a time")
                .query("limit", "integer", false, "page size, 1 to 5000 (default 500)")
                .query(
                    "before",
                    "integer",
                    false,
                    "only runs with a lower id (the last id of the page before)",
                )
                .returns::<Vec<Run>>(),
        )
        .post(
            &p("/runs"),
            operator::create_run,
            Doc::new(A::Operator, "Queue a run for a host")
                .body::<RunCreate>()
                .returns::<Run>(),
        )
        .get(
            &p("/runs/{id}"),
            operator::show_run,
            Doc::new(
                A::Operator,
                "A run with its stages, sub-steps, events, artifacts and breaches",
            )
            .returns::<RunDetail>(),
        )
        .post(
            &p("/runs/{id}/cancel"),
            operator::cancel,
            Doc::new(A::Operator, "Cancel a queued run").returns::<Run>(),
        )
        .post(
            &p("/runs/{id}/abort"),
            operator::abort,
            Doc::new(A::Operator, "Abort a running run").returns::<Run>(),
        )
        .post(
            &p("/runs/{id}/release"),
            operator::release,
            Doc::new(A::Operator, "Release a held run, with a power action")
                .body::<ReleaseRequest>()
                .returns::<Run>(),
        )
        .post(
            &p("/runs/{id}/ignore-diff"),
            operator::ignore_diff,
            Doc::new(
                A::Operator,
                "Accept a spec diff so SpecValidate passes on the next run",
            )
            .body::<IgnoreDiffRequest>()
            .returns::<IgnoreDiffAck>(),
        )
        .get(
            &p("/runs/{id}/hold-key"),
            operator::hold_key,
            Doc::new(A::Operator, "A held run's SSH private key and address").returns::<HoldKey>(),
        )
        .get(
            &p("/runs/{id}/measurements"),
            operator::measurements,
            Doc::new(
                A::Operator,
                "Stored measurements, oldest first, one page at a time",
            )
            .query(
                "kind",
                "string",
                false,
                "only this kind (temp, fan, fio, …)",
            )
            .query(
                "after",
                "integer",
                false,
                "the last measurement id already seen",
            )
            .query(
                "limit",
                "integer",
                false,
                "page size, 1 to 100000 (default 10000)",
            )
            .returns::<Vec<Measurement>>(),
        )
        .get(
            &p("/runs/{id}/events"),
            operator::events,
            Doc::new(A::Operator, "A run's events, oldest first, one page at a time")
                .query("after", "integer", false, "the last event id already seen")
                .query("limit", "integer", false, "page size, 1 to 10000 (default 1000)")
                .returns::<Vec<Event>>(),
        )
        .get(
            &p("/runs/{id}/series"),
            operator::series,
            Doc::new(
                A::Operator,
                "Every measured series with its count, range, mean and latest value",
            )
            .returns::<Vec<SeriesStats>>(),
        )
        .get(
            &p("/runs/{id}/report"),
            operator::report,
            Doc::new(
                A::Operator,
                "report.json as of now (schema: docs/report.schema.json)",
            )
            .returns_raw("application/json"),
        )
        .get(
            &p("/runs/{id}/report.html"),
            operator::report_html,
            Doc::new(
                A::Operator,
                "report.html as of now: one self-contained page",
            )
            .returns_raw("text/html"),
        )
        .get(
            &p("/webhooks"),
            operator::webhooks,
            Doc::new(A::Operator, "Webhook deliveries, newest first")
                .query(
                    "state",
                    "string",
                    false,
                    "pending, delivered or dead (dead letters)",
                )
                .returns::<Vec<WebhookDelivery>>(),
        )
        .post(
            &p("/webhooks/{id}/retry"),
            operator::retry_webhook,
            Doc::new(
                A::Operator,
                "Send a dead letter again (fresh attempts, due now)",
            )
            .returns::<WebhookDelivery>(),
        )
        .get(
            "/metrics",
            operator::metrics,
            Doc::new(
                A::OperatorOrPublic,
                "Prometheus metrics (public when metrics_public is set)",
            )
            .returns_raw("text/plain; version=0.0.4"),
        );
    api.finish(&p("/openapi.json"), env!("CARGO_PKG_VERSION"))
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
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
    let evaluations = config.evaluations;
    let store = tokio::task::spawn_blocking(move || {
        SqliteStore::open(&db_path, now()).map(|s| s.with_evaluations(evaluations))
    })
    .await?
    .with_context(|| format!("opening database in {}", dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    // The webhook cursor starts before any request is answered, so a run
    // changed in the first moments after startup is still notified (the
    // notifier's own first pass may come later than that).
    let (urls, cursor_store) = (config.webhooks.clone(), store.clone());
    tokio::task::spawn_blocking(move || cursor_store.webhook_enqueue(&urls, now()))
        .await?
        .context("starting the webhook event cursor")?;
    let state = AppState::new(store.clone(), config.clone(), &token)
        .context("starting the store's writer thread")?;
    let mut background = Supervisor::default();
    let config_arc = Arc::new(config.clone());
    background.spawn(
        "silent-agent sweep",
        crate::sweep::run(store.clone(), config.heartbeat_timeout, config.hold_timeout),
    );
    background.spawn(
        "report writer",
        crate::report::writer::run(store.clone(), config_arc.clone(), Duration::from_secs(1)),
    );
    background.spawn(
        "webhook notifier",
        crate::webhooks::run(store.clone(), config_arc, Duration::from_millis(500)),
    );
    for &port in &config.iperf3_ports {
        background.spawn("iperf3 server", crate::iperf::supervise(port));
    }
    background.spawn(
        "janitor",
        crate::janitor::run(store, config.artifact_retention, config.artifacts_dir()),
    );
    let tls = match &config.tls {
        Some(t) => {
            let id = crate::tls::load_or_make(&config, t).context("setting up TLS")?;
            tracing::info!(
                cert = %id.cert_path.display(),
                sha256 = %id.sha256,
                made = id.made,
                "TLS certificate; agents pin it with --ca-sha256 or vet.ca_sha256="
            );
            Some(id.acceptor)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, data_dir = %config.data_dir.display(), max_connections = config.max_connections, "coordinator listening");
    let result = edge::serve(
        listener,
        router(state),
        tls,
        config.max_connections,
        shutdown,
    )
    .await;
    background.shutdown().await;
    result.context("serving HTTP")
}
