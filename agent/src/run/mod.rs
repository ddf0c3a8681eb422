//! The run loop of `vet-agent boot`: claim the queued run for this machine,
//! run each pending stage, report it, and do what the coordinator answers.
//! One [`RunSession`] owns everything that runs beside the stages (the
//! heartbeat, the thermal sidecar, the kernel-log watch and the uplink), and
//! the stage loop selects over the stage's work and the coordinator's
//! answers, so an `abort_stage` from a batch ack or a heartbeat kills the
//! running stage's process group at once.
//!
//! Never: decide pass/fail (the coordinator's answer is obeyed), report a
//! stage finished before its batches are acknowledged, leave a task of a run
//! running once `boot` has returned (by any path, an error included), or
//! power anything off unless started with `--power exec`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use common::mac::Mac;
use common::run_state::RunState;
use common::stage::{Stage, StageState};
use common::wire::{
    ClaimResponse, Directive, DirectiveResponse, Heartbeat, Power, StageFinish, StagePlan,
    StageStart, StageVerdict,
};

mod claim;
mod holding;
mod tasks;

use crate::host::{self, Roots, Selector};
use crate::stages::{self, Clock, StageAbort, StageCtx, StageReport};
use crate::uplink::batcher::UplinkTasks;
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
    /// The host's claim secret, when its host has one.
    pub claim_secret: Option<String>,
    /// Whom to trust as the coordinator over HTTPS.
    pub trust: crate::uplink::trust::Trust,
    /// Host mode: claim only this run, and only while it is
    /// non-destructive (the coordinator refuses anything else).
    pub host_mode_run: Option<i64>,
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
    let client =
        Arc::new(Client::new(&opts.coordinator, &opts.trust).map_err(|e| anyhow::anyhow!("{e}"))?);
    // A hold this agent's earlier boot left (a crash, a power cut).
    match crate::hold::remove_stale_keys(&opts.hold.authorized_keys) {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(n, file = %opts.hold.authorized_keys.display(), "removed stale hold keys")
        }
        Err(e) => {
            tracing::error!(error = %e, file = %opts.hold.authorized_keys.display(), "could not check for stale hold keys")
        }
    }
    let claim = Arc::new(claim::claim(&client, &opts).await?);
    tracing::info!(run = claim.run_id, host = %claim.host, profile = %claim.profile, resume_from = claim.resume_from, "claimed");
    let mut session = RunSession::start(client, claim.clone(), &opts)?;
    let last = session.run_stages(&opts).await?;
    let power = session.obey(last, &opts).await;
    let (state, produced) = if session.unanswered {
        // The coordinator did not answer after a hold's deadline: the node
        // powers off whether or not it comes back for the sample count.
        match tokio::time::timeout(opts.hold.grace, session.finish()).await {
            Ok(end) => end?,
            Err(_) => {
                tracing::warn!(
                    "the coordinator is still unreachable after the hold's deadline; \
                     ending without reporting the sample count"
                );
                (RunState::Failed, 0)
            }
        }
    } else {
        session.finish().await?
    };
    if power != Power::None {
        opts.power.act(power).await;
    }
    Ok(RunEnd {
        run_id: claim.run_id,
        state,
        power,
        samples_produced: produced,
    })
}

/// One claimed run as this agent lives it. Owns every task it starts;
/// dropping it (when `boot` returns, fails part-way, or its future is
/// dropped) aborts them all, so nothing posts for a run after it.
struct RunSession {
    /// Each stage this agent reported finished, with its report: what it
    /// reports again when the coordinator lost data.
    reported: Vec<(u32, StageStart, StageFinish)>,
    client: Arc<Client>,
    claim: Arc<ClaimResponse>,
    clock: Clock,
    inventory: common::inventory::Inventory,
    uplink: Uplink,
    /// The heartbeat, the sidecar and the kernel-log watch.
    tasks: JoinSet<()>,
    /// Set when a hold's deadline passed and the coordinator never said
    /// what next: the run then ends without waiting on it for ever.
    unanswered: bool,
    /// The uplink's sealer and sender (aborted when dropped).
    _uplink_tasks: UplinkTasks,
    /// The ordinal of the running stage (`None` between stages), which the
    /// heartbeat reports and the samples of the tasks carry.
    stage: watch::Sender<Option<u32>>,
    from_batches: watch::Receiver<Option<Directive>>,
    from_heartbeat: watch::Receiver<Option<Directive>>,
    /// The uplink found the coordinator lost acknowledged batches.
    lost: watch::Receiver<bool>,
}

impl RunSession {
    fn start(
        client: Arc<Client>,
        claim: Arc<ClaimResponse>,
        opts: &BootOptions,
    ) -> anyhow::Result<Self> {
        let clock = Clock::from_claim(claim.coordinator_time);
        let inventory = host::inventory(&opts.roots, opts.disks.as_ref(), opts.nics.as_ref());
        let spool = opts.work_dir.join(format!("run-{}.spool", claim.run_id));
        let (uplink, uplink_tasks) = Uplink::start(client.clone(), &spool, claim.next_batch_seq)
            .with_context(|| format!("opening spool {}", spool.display()))?;
        let (stage, _) = watch::channel(None);
        let (hb_tx, from_heartbeat) = watch::channel(None);
        let mut tasks = JoinSet::new();
        tasks.spawn(tasks::heartbeat(
            client.clone(),
            Duration::from_secs(claim.heartbeat_interval_s.max(1)),
            stage.subscribe(),
            hb_tx,
        ));
        tasks.spawn(tasks::sidecar(
            uplink.clone(),
            clock,
            opts.sensors_root.clone(),
            Duration::from_millis(claim.sidecar_interval_ms.max(100)),
            stage.subscribe(),
        ));
        match opts
            .kmsg
            .as_ref()
            .map(|p| crate::kmsg_watch::spawn(p.clone()))
        {
            None => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot follow the kernel log; kernel errors will not be seen")
            }
            Some(Ok(rx)) => {
                tasks.spawn(tasks::kernel_watch(
                    rx,
                    uplink.clone(),
                    client.clone(),
                    clock,
                    stage.subscribe(),
                ));
            }
        }
        Ok(Self {
            reported: Vec::new(),
            lost: uplink.data_lost(),
            from_batches: uplink.directives(),
            client,
            claim,
            clock,
            inventory,
            uplink,
            tasks,
            unanswered: false,
            _uplink_tasks: uplink_tasks,
            stage,
            from_heartbeat,
        })
    }

    /// Runs every pending stage of the plan in order; returns the first
    /// answer that is not `continue` (or `continue` after the last stage).
    async fn run_stages(&mut self, opts: &BootOptions) -> anyhow::Result<Directive> {
        let claim = self.claim.clone();
        let pending = claim
            .stages
            .iter()
            .filter(|s| s.ordinal >= claim.resume_from && s.state == StageState::Pending);
        for plan in pending {
            let Some(stage) = Stage::from_ordinal(plan.ordinal) else {
                continue;
            };
            // Answers that arrived between stages are about the last one.
            self.from_batches.borrow_and_update();
            self.from_heartbeat.borrow_and_update();
            let start = StageStart {
                at: Some(self.clock.now()),
            };
            let started: DirectiveResponse = match self.start_stage(plan.ordinal, &start).await {
                Err(e) if e.is_run_finished() => return Ok(self.ended().await),
                Err(e) if is_out_of_step(&e) => {
                    if let Some(d) = self.resync().await? {
                        return Ok(d);
                    }
                    self.start_stage(plan.ordinal, &start)
                        .await
                        .with_context(|| format!("starting {stage} after re-synchronising"))?
                }
                r => r.with_context(|| format!("starting {stage}"))?,
            };
            if started.directive != Directive::Continue {
                return Ok(started.directive);
            }
            self.stage.send_replace(Some(plan.ordinal));
            tracing::info!(stage = %stage, "stage started");
            let ctx = StageCtx {
                stage,
                claim: claim.clone(),
                uplink: self.uplink.clone(),
                client: self.client.clone(),
                clock: self.clock,
                roots: opts.roots.clone(),
                inventory: self.inventory.clone(),
                work_dir: opts.work_dir.clone(),
                abort: StageAbort::default(),
            };
            let mut report = self.run_stage(&ctx).await;
            if ctx.abort.is_fired() {
                report = StageReport::failed(format!(
                    "aborted by the coordinator: {}",
                    ctx.abort.reason()
                ));
            }
            // Every batch of the stage is acknowledged before it is reported.
            self.uplink.flush().await;
            self.stage.send_replace(None);
            let finish = StageFinish {
                outcome: report.outcome,
                absent: report.absent,
                reason: report.reason.clone(),
                at: Some(self.clock.now()),
                summary: Some(report.summary.clone()),
                sub_steps: report.sub_steps.clone(),
            };
            if *self.lost.borrow_and_update() {
                // The coordinator lost data: bring its stages up to date first.
                if let Some(d) = self.resync().await? {
                    return Ok(d);
                }
            }
            let verdict: StageVerdict = match self.finish_stage(plan.ordinal, &start, &finish).await
            {
                Err(e) if e.is_run_finished() => return Ok(self.ended().await),
                Err(e) if is_out_of_step(&e) => {
                    if let Some(d) = self.resync().await? {
                        return Ok(d);
                    }
                    self.finish_stage(plan.ordinal, &start, &finish)
                        .await
                        .with_context(|| format!("reporting {stage} after re-synchronising"))?
                }
                r => r.with_context(|| format!("reporting {stage}"))?,
            };
            self.reported
                .push((plan.ordinal, start.clone(), finish.clone()));
            tracing::info!(stage = %stage, state = %verdict.state, reasons = ?verdict.reasons, "stage finished");
            if verdict.directive != Directive::Continue {
                return Ok(verdict.directive);
            }
        }
        Ok(Directive::Continue)
    }

    /// The stage's event loop: its work ends, or an answer (batch ack or
    /// heartbeat) says `abort_stage`, which fires the stage's abort and lets
    /// the work end on it.
    async fn run_stage(&mut self, ctx: &StageCtx) -> StageReport {
        let work = stages::run(ctx);
        tokio::pin!(work);
        let (mut batches_open, mut heartbeat_open) = (true, true);
        loop {
            let answer = tokio::select! {
                report = &mut work => return report,
                r = self.from_batches.changed(), if batches_open => match r {
                    Ok(()) => self.from_batches.borrow_and_update().clone(),
                    Err(_) => { batches_open = false; None }
                },
                r = self.from_heartbeat.changed(), if heartbeat_open => match r {
                    Ok(()) => self.from_heartbeat.borrow_and_update().clone(),
                    Err(_) => { heartbeat_open = false; None }
                },
            };
            // A run that ended under the stage (an operator's abort, a
            // release) ends the stage too.
            let reason = match answer {
                Some(Directive::AbortStage { reason }) => reason,
                Some(Directive::Done { .. } | Directive::Release { .. }) => {
                    "the run has ended on the coordinator".to_string()
                }
                _ => continue,
            };
            if ctx.abort.fire(reason.clone()) {
                tracing::warn!(%reason, "killing the running stage");
            }
        }
    }

    async fn start_stage(
        &self,
        ordinal: u32,
        start: &StageStart,
    ) -> Result<DirectiveResponse, UplinkError> {
        post_with_retry(&self.client, &format!("/stages/{ordinal}/start"), start).await
    }

    /// Reports a finished stage, starting it first if the coordinator
    /// (after losing data) has it pending.
    async fn finish_stage(
        &self,
        ordinal: u32,
        start: &StageStart,
        finish: &StageFinish,
    ) -> Result<StageVerdict, UplinkError> {
        let path = format!("/stages/{ordinal}/finish");
        match post_with_retry(&self.client, &path, finish).await {
            Err(e) if is_out_of_step(&e) => {
                let _: DirectiveResponse = self.start_stage(ordinal, start).await?;
                post_with_retry(&self.client, &path, finish).await
            }
            r => r,
        }
    }

    /// After the coordinator lost data (restored from a backup, a power
    /// cut): reads its stage states and reports again every stage this
    /// agent finished that it no longer has finished, in order. Returns
    /// the answer when one of them is not `continue`.
    async fn resync(&mut self) -> anyhow::Result<Option<Directive>> {
        let plan: Vec<StagePlan> = self
            .client
            .get("/stages")
            .await
            .context("reading the run's stages to re-synchronise")?;
        tracing::warn!("re-synchronising the run's stages with the coordinator");
        for (ordinal, start, finish) in &self.reported {
            let Some(p) = plan.iter().find(|p| p.ordinal == *ordinal) else {
                continue;
            };
            if !matches!(p.state, StageState::Pending | StageState::Running) {
                continue;
            }
            tracing::warn!(stage = %p.name, state = %p.state, "reporting a stage again the coordinator no longer has");
            let verdict = self
                .finish_stage(*ordinal, start, finish)
                .await
                .with_context(|| format!("reporting {} again", p.name))?;
            if verdict.directive != Directive::Continue {
                return Ok(Some(verdict.directive));
            }
        }
        Ok(None)
    }

    /// The run ended under the agent (an operator's abort): what the
    /// coordinator says to do now.
    async fn ended(&self) -> Directive {
        tracing::warn!("the run has ended on the coordinator; stopping");
        self.ask(Directive::Done { power: Power::None }).await
    }

    /// Asks the coordinator what to do now (`fallback` when it cannot answer).
    async fn ask(&self, fallback: Directive) -> Directive {
        self.client
            .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
            .await
            .map(|d| d.directive)
            .unwrap_or(fallback)
    }

    /// Obeys the coordinator until the run is over for this agent; returns
    /// the power action it ended with.
    async fn obey(&mut self, mut last: Directive, opts: &BootOptions) -> Power {
        loop {
            last = match last {
                Directive::Continue => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    self.ask(Directive::Wait { secs: 5 }).await
                }
                Directive::Wait { secs } => {
                    tokio::time::sleep(Duration::from_secs(secs.clamp(1, 60))).await;
                    self.ask(Directive::Wait { secs: 5 }).await
                }
                Directive::AbortStage { .. } => {
                    // The run was aborted under us; nothing is running now.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.ask(Directive::Done { power: Power::None }).await
                }
                Directive::Hold { public_key, until } => self.hold(&public_key, until, opts).await,
                Directive::Release { power } | Directive::Done { power } => return power,
            }
        }
    }

    /// Sends what is left, reports the count of samples produced, and stops
    /// every task; returns the run's state and that count.
    async fn finish(mut self) -> anyhow::Result<(RunState, u64)> {
        let produced = self.uplink.produced();
        self.uplink.flush().await;
        let complete = common::wire::RunComplete {
            samples_produced: produced,
            samples_refused: self.uplink.refused(),
        };
        let _: common::wire::CompleteAck = post_with_retry(&self.client, "/complete", &complete)
            .await
            .context("reporting the sample count")?;
        let state = self
            .client
            .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
            .await
            .map(|d| d.state)
            .unwrap_or(RunState::Running);
        self.tasks.shutdown().await;
        Ok((state, produced))
    }
}

/// The coordinator's stages are not where this agent left them (`409
/// conflict` on a stage start or report): it lost data.
fn is_out_of_step(e: &UplinkError) -> bool {
    matches!(e, UplinkError::Rejected { status: 409, code, .. } if code == "conflict")
}

/// Posts a run-token request, retrying while the coordinator is away. Every
/// such request is idempotent on the coordinator (a resent stage start or
/// report gets the same answer).
async fn post_with_retry<B: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    body: &B,
) -> Result<T, UplinkError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match client.post(path, body).await {
            Ok(v) => return Ok(v),
            Err(UplinkError::Transient(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(path, error = %e, ?d, "coordinator unreachable, retrying");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    }
}
