//! The run loop of `vet-agent boot`: claim the queued run for this machine,
//! run each pending stage, report it, and do what the coordinator answers.
//! Beside it: the heartbeat, the thermal sidecar, and a monitor that turns
//! an `abort_stage` directive (from a batch ack or a heartbeat) into killing
//! the running stage's process group.
//!
//! Never: decide pass/fail (the coordinator's answer is obeyed), report a
//! stage finished before its batches are acknowledged, or power anything
//! off unless started with `--power exec`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use common::mac::Mac;
use common::measurement::{Finite, Sample};
use common::run_state::RunState;
use common::stage::{Stage, StageState};
use common::wire::{
    ClaimRequest, ClaimResponse, Directive, DirectiveResponse, Heartbeat, HoldReport, Power,
    StageFinish, StageStart, StageVerdict,
};

use crate::host::{self, Roots, Selector};
use crate::sensors::Sidecar;
use crate::stages::{self, Clock, StageCtx, StageReport};
use crate::uplink::retry::Backoff;
use crate::uplink::{Client, Uplink, UplinkError};

#[derive(Clone)]
pub struct BootOptions {
    pub coordinator: String,
    /// Carries out power actions; `power::log_only()` everywhere but the live image.
    pub power: std::sync::Arc<dyn crate::power::PowerControl>,
    pub disks: Option<Selector>,
    pub nics: Option<Selector>,
    pub roots: Roots,
    /// sysfs root the sidecar reads (default /sys).
    pub sensors_root: PathBuf,
    /// Spool and scratch files.
    pub work_dir: PathBuf,
    /// How long to keep asking for a queued run.
    pub claim_timeout: Duration,
    /// Overrides for tests: the MACs and boot id to claim with.
    pub macs: Option<Vec<Mac>>,
    pub boot_id: Option<String>,
    /// Where a hold installs its key and which port its SSH server uses.
    pub hold: crate::hold::HoldOptions,
    /// The kernel log to follow (`/dev/kmsg`); `None` follows nothing.
    pub kmsg: Option<PathBuf>,
}

/// How the run ended for this agent.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub run_id: i64,
    pub state: RunState,
    pub power: Power,
    pub samples_produced: u64,
}

async fn claim(client: &Client, opts: &BootOptions) -> anyhow::Result<ClaimResponse> {
    let macs = match &opts.macs {
        Some(m) => m.clone(),
        None => host::macs(&opts.roots),
    };
    anyhow::ensure!(
        !macs.is_empty(),
        "no network interface with a MAC address: nothing to claim with"
    );
    let boot_id = opts
        .boot_id
        .clone()
        .or_else(|| host::boot_id(&opts.roots))
        .unwrap_or_else(|| "unknown-boot".into());
    let req = ClaimRequest {
        macs: macs.clone(),
        boot_id,
    };
    let deadline = Instant::now() + opts.claim_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        let why = match client.claim(&req).await {
            Ok(c) => return Ok(c),
            Err(UplinkError::Rejected { status: 404, .. }) => {
                "nothing queued for this machine yet".to_string()
            }
            Err(UplinkError::Transient(e)) => format!("coordinator unreachable: {e}"),
            Err(e) => return Err(e).context("claim refused"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "no run claimed within {:?}: {why}",
            opts.claim_timeout
        );
        let delay = backoff.next_delay().max(Duration::from_millis(200));
        tracing::info!(%why, ?delay, macs = ?macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(), "claim: retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The address the coordinator can reach us at (the local end of a route
/// to it; no packet is sent).
fn local_ip_towards(base: &str) -> Option<String> {
    let rest = base.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .ok()?
        .next()?;
    let sock = std::net::UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    sock.connect(addr).ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

/// Claims and runs the machine's run to its end.
pub async fn boot(opts: BootOptions) -> anyhow::Result<RunEnd> {
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let client = Arc::new(Client::new(&opts.coordinator).map_err(|e| anyhow::anyhow!("{e}"))?);
    let claim = Arc::new(claim(&client, &opts).await?);
    let clock = Clock::from_claim(claim.coordinator_time);
    tracing::info!(run = claim.run_id, host = %claim.host, profile = %claim.profile, resume_from = claim.resume_from, "claimed");
    let inventory = host::inventory(&opts.roots, opts.disks.as_ref(), opts.nics.as_ref());
    let spool = opts.work_dir.join(format!("run-{}.spool", claim.run_id));
    let (uplink, uplink_tasks) = Uplink::start(client.clone(), &spool, claim.next_batch_seq)
        .with_context(|| format!("opening spool {}", spool.display()))?;

    let current_stage = Arc::new(AtomicI64::new(-1));
    let stage_token: Arc<Mutex<CancellationToken>> = Arc::new(Mutex::new(CancellationToken::new()));
    let abort_reason = Arc::new(Mutex::new(String::new()));
    let (hb_tx, hb_rx) = watch::channel::<Option<Directive>>(None);

    // Heartbeat.
    let heartbeat = {
        let (client, current_stage) = (client.clone(), current_stage.clone());
        let every = Duration::from_secs(claim.heartbeat_interval_s.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let stage = u32::try_from(current_stage.load(Ordering::SeqCst)).ok();
                match client
                    .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage })
                    .await
                {
                    Ok(d) => {
                        hb_tx.send_replace(Some(d.directive));
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    };
    // Sidecar.
    let sidecar = {
        let (uplink, current_stage, root) = (
            uplink.clone(),
            current_stage.clone(),
            opts.sensors_root.clone(),
        );
        let every = Duration::from_millis(claim.sidecar_interval_ms.max(100));
        tokio::spawn(async move {
            let mut sensors = Sidecar::new(&root);
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let stage = u32::try_from(current_stage.load(Ordering::SeqCst)).ok();
                let ts = clock.now();
                for r in sensors.read() {
                    if let Ok(value) = Finite::new(r.value) {
                        let unit = r.kind.unit_for_key(&r.key).unwrap_or("").to_string();
                        uplink.push(Sample {
                            ts,
                            kind: r.kind,
                            key: r.key,
                            value,
                            unit,
                            stage,
                        });
                    }
                }
            }
        })
    };
    // Kernel log: each hardware failure is a `kmsg` sample (the count of its
    // key within the stage) and a `kernel_error` event with the line.
    let kernel_watch = match opts
        .kmsg
        .as_ref()
        .map(|p| crate::kmsg_watch::spawn(p.clone()))
    {
        None => None,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot follow the kernel log; kernel errors will not be seen");
            None
        }
        Some(Ok(mut rx)) => {
            let (uplink, current_stage, client) =
                (uplink.clone(), current_stage.clone(), client.clone());
            Some(tokio::spawn(async move {
                // A failing link can log thousands of AER lines a second: every
                // line counts, but only the first few per key and stage become
                // events, then one saying the rest are counted only.
                const EVENTS_PER_KEY: u32 = 5;
                let mut counts: std::collections::HashMap<(i64, String), (f64, u32)> =
                    Default::default();
                while let Some((record, err)) = rx.recv().await {
                    let stage = current_stage.load(Ordering::SeqCst);
                    let key = err.key();
                    let (n, lines) = counts.entry((stage, key.clone())).or_default();
                    *n += err.count as f64;
                    *lines += 1;
                    let lines = *lines;
                    if let Ok(value) = Finite::new(*n) {
                        uplink.push(Sample {
                            ts: clock.now(),
                            kind: common::measurement::Kind::Kmsg,
                            key: key.clone(),
                            value,
                            unit: "count".into(),
                            stage: u32::try_from(stage).ok(),
                        });
                    }
                    if lines > EVENTS_PER_KEY + 1 {
                        continue;
                    }
                    let message = if lines > EVENTS_PER_KEY {
                        format!("{key}: more lines like this in this stage are counted in the kmsg measurement, not listed")
                    } else {
                        format!(
                            "{key}: {}",
                            record.message.chars().take(1500).collect::<String>()
                        )
                    };
                    let event = common::wire::AgentEvent {
                        kind: "kernel_error".into(),
                        level: if err.is_critical() { "error" } else { "warn" }.into(),
                        message,
                    };
                    if let Err(e) = client
                        .post::<_, common::wire::EventAck>("/events", &event)
                        .await
                    {
                        tracing::warn!(error = %e, "could not report a kernel error event");
                    }
                }
            }))
        }
    };
    // abort_stage, from whichever answer carries it first.
    let monitor = {
        let (mut from_batches, mut from_heartbeat) = (uplink.directives(), hb_rx.clone());
        let (stage_token, abort_reason) = (stage_token.clone(), abort_reason.clone());
        tokio::spawn(async move {
            loop {
                let d = tokio::select! {
                    r = from_batches.changed() => { if r.is_err() { return; } from_batches.borrow_and_update().clone() }
                    r = from_heartbeat.changed() => { if r.is_err() { return; } from_heartbeat.borrow_and_update().clone() }
                };
                if let Some(Directive::AbortStage { reason }) = d {
                    *abort_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.clone();
                    let token = stage_token
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if !token.is_cancelled() {
                        tracing::warn!(%reason, "abort_stage: killing the running stage");
                        token.cancel();
                    }
                }
            }
        })
    };

    let mut last = Directive::Continue;
    for plan in claim
        .stages
        .iter()
        .filter(|s| s.ordinal >= claim.resume_from && s.state == StageState::Pending)
    {
        let Some(stage) = Stage::from_ordinal(plan.ordinal) else {
            continue;
        };
        let token = CancellationToken::new();
        *stage_token.lock().unwrap_or_else(|p| p.into_inner()) = token.clone();
        abort_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let started: DirectiveResponse = client
            .post(
                &format!("/stages/{}/start", plan.ordinal),
                &StageStart {
                    at: Some(clock.now()),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("starting {stage}: {e}"))?;
        if started.directive != Directive::Continue {
            last = started.directive;
            break;
        }
        current_stage.store(plan.ordinal as i64, Ordering::SeqCst);
        tracing::info!(stage = %stage, "stage started");
        let ctx = StageCtx {
            stage,
            claim: claim.clone(),
            uplink: uplink.clone(),
            client: client.clone(),
            clock,
            roots: opts.roots.clone(),
            inventory: inventory.clone(),
            work_dir: opts.work_dir.clone(),
            abort: token.clone(),
            abort_reason: abort_reason.clone(),
        };
        let mut report = stages::run(&ctx).await;
        if token.is_cancelled() {
            let why = abort_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            report = StageReport::failed(format!("aborted by the coordinator: {why}"));
        }
        // Every batch of the stage is acknowledged before it is reported.
        uplink.flush().await;
        current_stage.store(-1, Ordering::SeqCst);
        let finish = StageFinish {
            outcome: report.outcome,
            reason: report.reason.clone(),
            at: Some(clock.now()),
            summary: Some(report.summary.clone()),
            sub_steps: report.sub_steps.clone(),
        };
        let verdict: StageVerdict = post_with_retry(
            &client,
            &format!("/stages/{}/finish", plan.ordinal),
            &finish,
        )
        .await?;
        tracing::info!(stage = %stage, state = %verdict.state, reasons = ?verdict.reasons, "stage finished");
        last = verdict.directive;
        if last != Directive::Continue {
            break;
        }
    }

    // Obey until the run is over for this agent.
    let end_power = loop {
        match last {
            Directive::Continue | Directive::Wait { .. } => {
                let secs = if let Directive::Wait { secs } = last {
                    secs.clamp(1, 60)
                } else {
                    2
                };
                tokio::time::sleep(Duration::from_secs(secs)).await;
                last = client
                    .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
                    .await
                    .map(|d| d.directive)
                    .unwrap_or(Directive::Wait { secs: 5 });
            }
            Directive::AbortStage { .. } => {
                // The run was aborted under us; nothing is running now.
                tokio::time::sleep(Duration::from_secs(1)).await;
                last = client
                    .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
                    .await
                    .map(|d| d.directive)
                    .unwrap_or(Directive::Done { power: Power::None });
            }
            Directive::Hold { public_key } => {
                let held = crate::hold::begin(&opts.hold, claim.run_id, &public_key).await;
                let (ssh_port, ssh_error) = match &held {
                    Ok(h) => (h.ssh_port, h.ssh_error.clone()),
                    Err(e) => (None, Some(e.to_string())),
                };
                if let Some(ip) = local_ip_towards(client.base()) {
                    let report = HoldReport {
                        hold_ip: ip.clone(),
                        ssh_port,
                        ssh_error: ssh_error.clone(),
                    };
                    // Refused when the operator released the host meanwhile;
                    // the next heartbeat says what to do then.
                    if let Err(e) =
                        post_with_retry::<_, DirectiveResponse>(&client, "/hold-ip", &report).await
                    {
                        tracing::warn!(error = %e, "hold report not taken");
                    }
                    tracing::warn!(hold_ip = %ip, ?ssh_port, ?ssh_error, "host held for debugging; waiting for release");
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    match client
                        .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
                        .await
                    {
                        Ok(d)
                            if matches!(
                                d.directive,
                                Directive::Hold { .. } | Directive::Wait { .. }
                            ) =>
                        {
                            continue
                        }
                        Ok(d) => {
                            last = d.directive;
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat during hold failed"),
                    }
                }
                if let Ok(h) = held {
                    h.end().await;
                }
            }
            Directive::Release { power } | Directive::Done { power } => break power,
        }
    };
    let produced = uplink.produced();
    uplink.flush().await;
    let complete = common::wire::RunComplete {
        samples_produced: produced,
    };
    let _: common::wire::CompleteAck = post_with_retry(&client, "/complete", &complete).await?;
    let state = client
        .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
        .await
        .map(|d| d.state)
        .unwrap_or(RunState::Running);
    heartbeat.abort();
    sidecar.abort();
    if let Some(k) = kernel_watch {
        k.abort();
    }
    monitor.abort();
    uplink_tasks.abort();
    if end_power != Power::None {
        opts.power.act(end_power).await;
    }
    Ok(RunEnd {
        run_id: claim.run_id,
        state,
        power: end_power,
        samples_produced: produced,
    })
}

/// Posts a run-token request, retrying while the coordinator is away. Every
/// such request is idempotent on the coordinator (a resent stage start or
/// report gets the same answer).
async fn post_with_retry<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    body: &B,
) -> anyhow::Result<T> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match client.post(path, body).await {
            Ok(v) => return Ok(v),
            Err(UplinkError::Transient(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(path, error = %e, ?d, "coordinator unreachable, retrying");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(anyhow::anyhow!("{path} refused: {e}")),
        }
    }
}
