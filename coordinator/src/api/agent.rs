//! Agent routes: claim (public) and everything under `/runs/{id}/` that a
//! run token may write.

use std::collections::HashMap;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use common::event::EventKind;
use common::profile::Profile;
use common::stage::Stage;
use common::wire::{
    AgentEvent, ArtifactInfo, BatchAck, ClaimRequest, ClaimResponse, CompleteAck,
    DirectiveResponse, EventAck, FirmwareAck, FirmwareReport, Health, HoldReport, HostHeartbeat,
    HostHeartbeatAck, Iperf3Servers, MeasurementBatch, RunComplete, StageFinish, StagePlan,
    StageStart, StageVerdict,
};

use super::caller::{HostCaller, RunCaller};
use super::error::{ApiError, AppJson, AppQuery};
use super::AppState;
use crate::auth;
use crate::lifecycle::{self, now};
use crate::store::{ClaimAttempt, ClaimOutcome, ClaimRefusal, NewArtifact, RunFacts, Store};

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        time: now(),
    })
}

/// Most MACs one claim may name (a server has a handful of NICs).
pub const MAX_CLAIM_MACS: usize = 64;

pub async fn claim(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AppJson(req): AppJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    if req.macs.is_empty() {
        return Err(ApiError::BadRequest(
            "macs must list at least one MAC address".into(),
        ));
    }
    if req.macs.len() > MAX_CLAIM_MACS {
        return Err(ApiError::Refused {
            status: StatusCode::BAD_REQUEST,
            code: "too_many_macs",
            message: format!(
                "macs lists {} addresses; a claim may name at most {MAX_CLAIM_MACS}",
                req.macs.len()
            ),
        });
    }
    let boot_id = req.boot_id.trim().to_string();
    if boot_id.is_empty() || boot_id.len() > 128 {
        return Err(ApiError::BadRequest(
            "boot_id must be 1 to 128 characters".into(),
        ));
    }
    // After the shape checks: a malformed claim is a 400 at any rate.
    app.claim_limit
        .check(peer.ip())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let token = auth::new_token();
    let agent_version = req.agent_version.clone().map(|v| {
        // Ours to print in events: printable, bounded.
        v.chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>()
    });
    let attempt = ClaimAttempt {
        macs: req.macs.clone(),
        boot_id,
        token_hash: auth::hash_token(&token),
        caller: peer.ip().to_string(),
        secret_hash: req.claim_secret.as_deref().map(auth::hash_token),
        protocol_version: req.protocol_version.unwrap_or(1),
        agent_version,
        host_mode_run: req.host_mode_run,
    };
    let outcome = {
        let _slot = app
            .claim_slots
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the claim slots are closed".into()))?;
        app.db(move |s| Ok(s.claim(&attempt, now())?)).await?
    };
    let claimed = match outcome {
        ClaimOutcome::Claimed(c) => c,
        ClaimOutcome::NothingQueued => {
            let list: Vec<String> = req.macs.iter().map(|m| m.to_string()).collect();
            return Err(ApiError::NotFound(format!(
                "no queued or running run for MACs {}",
                list.join(", ")
            )));
        }
        ClaimOutcome::Refused {
            run_id,
            why,
            message,
        } => {
            let (status, code) = match why {
                ClaimRefusal::Conflict => (StatusCode::CONFLICT, "claim_conflict"),
                ClaimRefusal::SecretMismatch => (StatusCode::FORBIDDEN, "claim_secret_mismatch"),
                ClaimRefusal::Incompatible => (StatusCode::CONFLICT, "agent_incompatible"),
                ClaimRefusal::NotTheNamedRun => (StatusCode::CONFLICT, "claim_mismatch"),
            };
            return Err(ApiError::Refused {
                status,
                code,
                message: format!("run {run_id}: {message}"),
            });
        }
    };
    let def = Profile::definition(claimed.run.profile);
    Ok(Json(ClaimResponse {
        run_id: claimed.run.id,
        token,
        host: claimed.run.host.clone(),
        profile: claimed.run.profile,
        non_destructive: claimed.run.non_destructive,
        overrides: claimed.overrides,
        stages: claimed.stages,
        resume_from: claimed.resume_from,
        durations: def.durations.clone(),
        thresholds: claimed.thresholds,
        sidecar_interval_ms: def.sidecar_interval_ms,
        heartbeat_interval_s: def.heartbeat_interval_s,
        iperf3: Iperf3Servers {
            host: app.config.iperf3_host.clone(),
            ports: app.config.iperf3_ports.clone(),
        },
        coordinator_time: now(),
        next_batch_seq: claimed.next_batch_seq,
    }))
}

fn parse_ordinal(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|o| Stage::from_ordinal(*o).is_some())
        .ok_or_else(|| ApiError::BadRequest(format!("stage ordinal must be 0 to 11, got {s:?}")))
}

/// Runs `f` on the store and answers with the run's state and next directive.
async fn with_directive<F>(app: &AppState, f: F) -> Result<Json<DirectiveResponse>, ApiError>
where
    F: FnOnce(&dyn Store) -> Result<RunFacts, ApiError> + Send + 'static,
{
    let facts = app.db(f).await?;
    let (facts, directive) = app.directive(facts).await?;
    Ok(Json(DirectiveResponse {
        state: facts.state,
        directive,
    }))
}

pub async fn stage_start(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    Path((_, ordinal)): Path<(String, String)>,
    AppJson(body): AppJson<StageStart>,
) -> Result<Json<DirectiveResponse>, ApiError> {
    let ordinal = parse_ordinal(&ordinal)?;
    with_directive(&app, move |s| {
        let now = now();
        Ok(s.start_stage(run_id, ordinal, body.at.unwrap_or(now), now)?)
    })
    .await
}

pub async fn stage_finish(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    Path((_, ordinal)): Path<(String, String)>,
    AppJson(body): AppJson<StageFinish>,
) -> Result<Json<StageVerdict>, ApiError> {
    let ordinal = parse_ordinal(&ordinal)?;
    if body.sub_steps.len() > 1024 {
        return Err(ApiError::BadRequest(
            "more than 1024 sub_steps in one report".into(),
        ));
    }
    let result = app
        .db(move |s| {
            let run = s.run(run_id)?;
            let stage = Stage::from_ordinal(ordinal)
                .ok_or_else(|| ApiError::BadRequest(format!("no stage {ordinal}")))?;
            // Judged from uploaded data, read before the transaction.
            let diffs = lifecycle::computed_diffs(s, &run, stage)?;
            Ok(s.finish_stage(run_id, ordinal, &body, diffs, now())?)
        })
        .await?;
    let (_, directive) = app.directive(result.facts).await?;
    Ok(Json(StageVerdict {
        ordinal: result.ordinal,
        name: result.name,
        state: result.state,
        reasons: result.reasons,
        directive,
    }))
}

pub async fn batch(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppJson(batch): AppJson<MeasurementBatch>,
) -> Result<Json<BatchAck>, ApiError> {
    let started = std::time::Instant::now();
    for (i, s) in batch.samples.iter().enumerate() {
        common::measurement::check_key(&s.key)
            .map_err(|e| ApiError::BadRequest(format!("sample {i} ({}): {e}", s.kind)))?;
    }
    let (mut ack, facts) = app.ingest.append(run_id, batch).await?;
    let (_, directive) = app.directive(facts).await?;
    ack.directive = directive;
    // A resend stores nothing new.
    let stored = if ack.duplicate {
        0
    } else {
        ack.stored as usize
    };
    app.counters.batch(stored, started.elapsed());
    Ok(Json(ack))
}

pub async fn heartbeat(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
) -> Result<Json<DirectiveResponse>, ApiError> {
    with_directive(&app, move |s| Ok(s.heartbeat(run_id, now())?)).await
}

/// Event kinds an agent may report.
/// Something the agent saw (a kernel error line) for `run show`.
pub async fn event(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppJson(ev): AppJson<AgentEvent>,
) -> Result<Json<EventAck>, ApiError> {
    if !ev.kind.is_from_agent() {
        let kinds: Vec<&str> = EventKind::FROM_AGENT.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::BadRequest(format!(
            "event kind {:?} is not one an agent reports ({})",
            ev.kind.as_str(),
            kinds.join(" ")
        )));
    }
    if ev.message.is_empty() || ev.message.len() > 2000 {
        return Err(ApiError::BadRequest(
            "event message must be 1 to 2000 bytes".into(),
        ));
    }
    app.db(move |s| Ok(s.agent_event(run_id, ev.level, ev.kind, &ev.message, now())?))
        .await?;
    Ok(Json(EventAck { recorded: true }))
}

/// A host-mode agent's heartbeat, authenticated by its host's token.
pub async fn host_heartbeat(
    State(app): State<AppState>,
    caller: HostCaller,
    AppJson(hb): AppJson<HostHeartbeat>,
) -> Result<Json<HostHeartbeatAck>, ApiError> {
    if hb.boot_id.is_empty() || hb.boot_id.len() > 128 {
        return Err(ApiError::BadRequest(
            "boot_id must be 1 to 128 characters".into(),
        ));
    }
    let hash = caller.token_hash;
    let (host, queued_run) = app
        .db(move |s| Ok(s.host_heartbeat(&hash, now())?))
        .await?
        .ok_or(ApiError::Unauthorized("not a host-mode token"))?;
    tracing::debug!(host = %host.name, boot_id = %hb.boot_id, "host heartbeat");
    Ok(Json(HostHeartbeatAck {
        host: host.name,
        server_time: now(),
        interval_s: (app.config.heartbeat_timeout.as_secs() / 4).max(1),
        queued_run,
    }))
}

/// The run's stages as the coordinator has them now.
pub async fn stages(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
) -> Result<Json<Vec<StagePlan>>, ApiError> {
    Ok(Json(app.db(move |s| Ok(s.stage_plan(run_id)?)).await?))
}

pub async fn directive(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
) -> Result<Json<DirectiveResponse>, ApiError> {
    with_directive(&app, move |s| Ok(s.facts(run_id)?)).await
}

pub async fn firmware(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppJson(report): AppJson<FirmwareReport>,
) -> Result<Json<FirmwareAck>, ApiError> {
    if report
        .components
        .iter()
        .any(|c| c.component.is_empty() || c.version.is_empty())
    {
        return Err(ApiError::BadRequest(
            "firmware components need a component and a version".into(),
        ));
    }
    let n = report.components.len();
    app.db(move |s| Ok(s.record_firmware(run_id, &report.components, now())?))
        .await?;
    Ok(Json(FirmwareAck { stored: n as u64 }))
}

pub async fn hold_ip(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppJson(report): AppJson<HoldReport>,
) -> Result<Json<DirectiveResponse>, ApiError> {
    let ip: std::net::IpAddr = report.hold_ip.parse().map_err(|_| {
        ApiError::BadRequest(format!("hold_ip {:?} is not an IP address", report.hold_ip))
    })?;
    with_directive(&app, move |s| {
        let report = HoldReport {
            hold_ip: ip.to_string(),
            ..report
        };
        Ok(s.report_hold_ip(run_id, &report, now())?)
    })
    .await
}

pub async fn complete(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppJson(body): AppJson<RunComplete>,
) -> Result<Json<CompleteAck>, ApiError> {
    let produced = body.samples_produced;
    let (stored, facts) = app
        .db(move |s| Ok(s.complete(run_id, &body, now())?))
        .await?;
    let (facts, directive) = app.directive(facts).await?;
    Ok(Json(CompleteAck {
        samples_produced: produced,
        samples_stored: stored,
        state: facts.state,
        directive,
    }))
}

/// Streams the body to a temporary file, hashing as it goes, then renames it
/// to its BLAKE3 name and records it. Over the size limit: 413, nothing kept.
pub async fn artifact(
    State(app): State<AppState>,
    RunCaller(run_id): RunCaller,
    AppQuery(q): AppQuery<HashMap<String, String>>,
    body: Body,
) -> Result<Json<ArtifactInfo>, ApiError> {
    use sha2::Digest;
    let kind = q.get("kind").cloned().unwrap_or_default();
    if kind.is_empty()
        || kind.len() > 32
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        return Err(ApiError::BadRequest(
            "query parameter kind must be 1 to 32 of [a-z0-9_]".into(),
        ));
    }
    if kind == "hold_key" || kind.starts_with("report") {
        return Err(ApiError::BadRequest(format!(
            "artifact kind {kind:?} is written by the coordinator only"
        )));
    }
    let stage_ordinal = q.get("stage").map(|s| parse_ordinal(s)).transpose()?;
    // Refused before a byte is written: a finished run, a full run.
    app.db(move |s| Ok(s.check_agent_artifact(run_id)?)).await?;
    let limit = app.config.max_artifact_bytes;
    let dir = app.config.artifacts_dir();
    let tmp = dir.join(format!(".upload-{}.tmp", auth::new_token()));
    let io = |e: std::io::Error| ApiError::Internal(format!("writing artifact: {e}"));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut sha = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading upload: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::TooLarge(format!(
                    "artifact larger than {limit} bytes"
                )));
            }
            sha.update(&chunk);
            b3.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let blake3 = b3.finalize().to_hex().to_string();
    let path = dir.join(&blake3);
    let artifact = NewArtifact {
        run_id,
        stage_ordinal,
        kind,
        path: path.display().to_string(),
        sha256: hex::encode(sha.finalize()),
        blake3,
        size_bytes: size as i64,
    };
    let info = app
        .db(move |s| {
            // The file and its row land together, never split by the janitor.
            let _files = lifecycle::artifact_files();
            let existed = path.exists();
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(ApiError::Internal(format!("writing artifact: {e}")));
            }
            s.record_agent_artifact(&artifact, now()).map_err(|e| {
                // Refused after the check (the run ended meanwhile): the
                // file goes unless another row already named it.
                if !existed {
                    let _ = std::fs::remove_file(&path);
                }
                ApiError::from(e)
            })
        })
        .await?;
    Ok(Json(info))
}
