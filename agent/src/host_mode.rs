//! `vet-agent host`: the agent installed on a host in production. It
//! heartbeats with its host's token so the coordinator knows the host is up
//! (`hosts.last_seen_at`), and when a non-destructive run is queued for the
//! host it claims it and runs it in place, then goes back to heartbeating.
//!
//! Never: claim a destructive run (the coordinator records why), power
//! anything off, or give up while the coordinator is merely unreachable (it
//! backs off and keeps trying). A refused token ends it with a clear error,
//! since retrying cannot help.

use std::future::Future;
use std::time::Duration;

use common::mac::Mac;
use common::wire::HostHeartbeat;

use crate::host::{self, Roots};
use crate::run::{boot, BootOptions};
use crate::uplink::client::{Client, UplinkError};
use crate::uplink::retry::Backoff;

pub struct HostModeOptions {
    pub coordinator: String,
    pub token: String,
    pub roots: Roots,
    /// Tests pass these; otherwise read from the machine.
    pub macs: Option<Vec<Mac>>,
    pub boot_id: Option<String>,
    /// How queued runs are run (coordinator, power and destructive
    /// settings are forced: this host, `--power none`, non-destructive).
    pub runs: BootOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum HostModeError {
    #[error("the coordinator refused this host's token ({0}); issue a new one with `vetctl host token NAME`")]
    TokenRefused(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Setup(String),
}

/// What a host-mode session did before it was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostModeEnd {
    pub host: Option<String>,
    pub heartbeats: u64,
    /// Runs claimed and run in place, with how they ended.
    pub runs: Vec<(i64, common::run_state::RunState)>,
}

/// Heartbeats until `shutdown` resolves.
pub async fn run(
    opts: HostModeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<HostModeEnd, HostModeError> {
    let client = Client::new(&opts.coordinator, &opts.runs.trust)
        .map_err(|e| HostModeError::Setup(e.to_string()))?;
    client.set_token(&opts.token);
    let hb = HostHeartbeat {
        boot_id: opts
            .boot_id
            .or_else(|| host::boot_id(&opts.roots))
            .unwrap_or_else(|| "unknown".into()),
        macs: opts.macs.unwrap_or_else(|| host::macs(&opts.roots)),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut end = HostModeEnd {
        host: None,
        heartbeats: 0,
        runs: Vec::new(),
    };
    let mut refused: Option<i64> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    tokio::pin!(shutdown);
    loop {
        let wait = match client.host_heartbeat(&hb).await {
            Ok(ack) => {
                if end.host.as_deref() != Some(ack.host.as_str()) {
                    tracing::info!(host = %ack.host, every_s = ack.interval_s, "host mode: the coordinator knows this host");
                }
                end.host = Some(ack.host);
                end.heartbeats += 1;
                backoff.reset();
                match ack.queued_run {
                    Some(q) if q.non_destructive => {
                        tracing::info!(
                            run = q.run_id,
                            "running a queued non-destructive run in place"
                        );
                        let mut o = opts.runs.clone();
                        o.coordinator = opts.coordinator.clone();
                        o.power = crate::power::log_only();
                        o.macs = Some(hb.macs.clone());
                        o.boot_id = Some(format!("{}-host-run-{}", hb.boot_id, q.run_id));
                        o.host_mode_run = Some(q.run_id);
                        tokio::select! {
                            _ = &mut shutdown => return Ok(end),
                            r = boot(o) => match r {
                                Ok(done) => end.runs.push((done.run_id, done.state)),
                                Err(e) => tracing::error!(run = q.run_id, "run in place failed: {e:#}"),
                            },
                        }
                        Duration::from_secs(1)
                    }
                    Some(q) => {
                        if refused != Some(q.run_id) {
                            tracing::warn!(
                                run = q.run_id,
                                "not claiming a destructive run in host mode"
                            );
                            refused = Some(q.run_id);
                        }
                        Duration::from_secs(ack.interval_s.max(1))
                    }
                    None => Duration::from_secs(ack.interval_s.max(1)),
                }
            }
            Err(UplinkError::Rejected {
                status: 401,
                message,
                ..
            }) => return Err(HostModeError::TokenRefused(message)),
            Err(e @ UplinkError::Rejected { .. }) => {
                return Err(HostModeError::Refused(e.to_string()))
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!("host heartbeat failed, retrying in {d:?}: {e}");
                d
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(end),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
