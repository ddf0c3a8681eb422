//! The gate: turns a finished stage and the run's frozen thresholds into the
//! stage's final state, and a run's facts into the next `Directive`.
//!
//! Pure functions of their inputs. The gate never reads the profile registry
//! (thresholds were copied into the run at creation), never touches SQL or
//! HTTP and never reads the clock. Pass/fail is decided here and nowhere else.

use common::event::{EventKind, EventLevel};
use common::measurement::Kind;
use common::run_state::{RunEvent, RunResult, RunState};
use common::stage::{StageReason, StageState};
use common::threshold::Op;
use common::time::Timestamp;
use common::wire::{Directive, Power, StageOutcome, SubStepReport};

/// The facts a directive is computed from (see `gate::directive_for`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub run_id: i64,
    pub state: RunState,
    /// Ordinal and name of the stage that is running, if any.
    pub running_stage: Option<(u32, String)>,
    /// A critical temp/power breach in the running stage.
    pub live_breach: Option<String>,
    pub hold_public_key: Option<String>,
    pub release_power: Option<Power>,
    /// When the run began to hold its host.
    pub held_at: Option<Timestamp>,
}

/// A skipped stage's reason as stored: `skipped: CAUSE`.
pub fn skipped_reason(cause: &str) -> String {
    StageReason::Skipped(cause.to_string()).to_string()
}

/// A critical threshold breached during the stage, summarized per rule and key.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub kind: String,
    pub key: String,
    pub op: String,
    pub threshold: f64,
    pub worst: f64,
    pub count: i64,
}

impl Breach {
    /// The breach as a stage reason and an event say it.
    pub fn describe(&self) -> String {
        format!(
            "{} {} = {} breached {} {} ({} sample{})",
            self.kind,
            self.key,
            self.worst,
            self.op,
            self.threshold,
            self.count,
            if self.count == 1 { "" } else { "s" }
        )
    }
}

/// The worst of a rule's breaching samples (`min` and `max` of them): the
/// lowest for a lower bound, the farthest from `nominal` for a band, the
/// highest otherwise.
pub fn worst(op: Op, nominal: f64, min: f64, max: f64) -> f64 {
    match op {
        Op::Gt | Op::Gte => min,
        Op::WithinPct if (nominal - min).abs() > (max - nominal).abs() => min,
        Op::Lt | Op::Lte | Op::WithinPct => max,
    }
}

/// The kinds whose critical breach aborts the running stage at once
/// (`abort_stage`), before the stage ends: heat and power can damage the
/// node or the rack, so the load stops now.
pub const LIVE_ABORT_KINDS: [Kind; 2] = [Kind::Temp, Kind::Power];

/// The reason an `abort_stage` directive gives for a live breach.
pub fn live_breach_reason(
    kind: &str,
    key: &str,
    observed: f64,
    op: &str,
    threshold: f64,
) -> String {
    format!("critical {kind} breach: {key} = {observed} (must be {op} {threshold})")
}

/// An event a decision writes.
#[derive(Debug, Clone, PartialEq)]
pub struct GateEvent {
    pub level: EventLevel,
    pub kind: EventKind,
    pub message: String,
}

/// Everything the gate looks at for one finished stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFacts<'a> {
    /// The stage's name, for the events.
    pub stage: &'a str,
    pub agent: StageOutcome,
    pub agent_reason: Option<&'a str>,
    pub critical_breaches: &'a [Breach],
    /// Critical spec diffs that were not ignored: `field: expected → actual`.
    pub critical_diffs: &'a [String],
    /// No stage after this one is still pending.
    pub is_last: bool,
    /// The sub-steps as the agent reported them.
    pub sub_steps: &'a [SubStepReport],
    /// Sub-steps the agent's interlock refused, with the reason.
    pub untested: &'a [String],
    /// The run wants every disk tested (`--require-all-disks`).
    pub require_all_disks: bool,
    /// Interlock refusals recorded by the run's earlier stages (counted
    /// only when this is the last stage, the only time it is read).
    pub refused_before: i64,
    /// Why the run, though every stage passed, was not fully tested besides
    /// refused disks (data the coordinator lost); read for the last stage.
    pub incomplete: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageDecision {
    pub state: StageState,
    pub reasons: Vec<String>,
    /// What happens to the run, if anything.
    pub run_event: Option<RunEvent>,
    /// Events written with the decision.
    pub events: Vec<GateEvent>,
    /// Sub-steps whose state the gate changes: those whose device a
    /// critical breach names fail, with the breaches' descriptions.
    pub sub_steps: Vec<SubStepDecision>,
}

/// A sub-step's state as the gate decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubStepDecision {
    pub ordinal: u32,
    pub state: StageState,
    pub reason: String,
}

/// Decides the stage's final state: failed if the agent reported failure, any
/// critical threshold of the stage was breached, or a critical spec diff
/// stands; skipped if the agent skipped it cleanly; passed otherwise.
pub fn decide_stage(facts: &StageFacts<'_>) -> StageDecision {
    let mut reasons = Vec::new();
    if facts.agent == StageOutcome::Failed {
        let said = facts.agent_reason.unwrap_or("stage failed");
        reasons.push(StageReason::Agent(said.to_string()).to_string());
    }
    for b in facts.critical_breaches {
        reasons.push(b.describe());
    }
    for d in facts.critical_diffs {
        reasons.push(StageReason::Spec(d.clone()).to_string());
    }
    if facts.require_all_disks && !facts.untested.is_empty() {
        reasons.push(format!(
            "not every disk was tested (--require-all-disks): {}",
            facts.untested.join("; ")
        ));
    }
    let state = if !reasons.is_empty() {
        StageState::Failed
    } else if facts.agent == StageOutcome::Skipped {
        if let Some(r) = facts.agent_reason {
            reasons.push(skipped_reason(r));
        }
        StageState::Skipped
    } else {
        StageState::Passed
    };
    if state != StageState::Failed && !facts.untested.is_empty() {
        reasons.push(format!("not fully tested: {}", facts.untested.join("; ")));
    }
    let run_event = match state {
        StageState::Failed => Some(RunEvent::StageFailed),
        _ if facts.is_last => Some(RunEvent::AllStagesPassed),
        _ => None,
    };
    let events = stage_events(facts, run_event);
    StageDecision {
        state,
        reasons,
        run_event,
        events,
        sub_steps: failed_sub_steps(facts.sub_steps, facts.critical_breaches),
    }
}

/// Each sub-step on a device whose measurements (`<device>/…`) breached a
/// critical threshold, with what was breached: the agent reports what it
/// found on a disk or NIC, and the gate says which of them failed.
fn failed_sub_steps(subs: &[SubStepReport], breaches: &[Breach]) -> Vec<SubStepDecision> {
    subs.iter()
        .filter_map(|s| {
            let device = s.device.as_deref()?;
            let on_it: Vec<String> = breaches
                .iter()
                .filter(|b| b.key.split_once('/').is_some_and(|(d, _)| d == device))
                .map(Breach::describe)
                .collect();
            (!on_it.is_empty()).then(|| SubStepDecision {
                ordinal: s.ordinal,
                state: StageState::Failed,
                reason: on_it.join("; "),
            })
        })
        .collect()
}

/// The events a finished stage writes: each critical breach, each refused
/// sub-step, and a pass that was not complete.
fn stage_events(facts: &StageFacts<'_>, run_event: Option<RunEvent>) -> Vec<GateEvent> {
    let name = facts.stage;
    let mut events: Vec<GateEvent> = facts
        .critical_breaches
        .iter()
        .map(|b| GateEvent {
            level: EventLevel::Error,
            kind: EventKind::Breach,
            message: format!("{name}: {}", b.describe()),
        })
        .collect();
    events.extend(facts.untested.iter().map(|why| GateEvent {
        level: EventLevel::Warn,
        kind: EventKind::InterlockRefused,
        message: format!("{name}: {why}"),
    }));
    let refused = facts.refused_before + facts.untested.len() as i64;
    if run_event == Some(RunEvent::AllStagesPassed) && (refused > 0 || !facts.incomplete.is_empty())
    {
        let mut why: Vec<String> = facts.incomplete.to_vec();
        if refused > 0 {
            why.push(format!(
                "{refused} disk pass(es) refused by the interlock (see interlock_refused events)"
            ));
        }
        events.push(GateEvent {
            level: EventLevel::Warn,
            kind: EventKind::PassIncomplete,
            message: format!("passed, not fully tested: {}", why.join("; ")),
        });
    }
    events
}

/// A stage reported after its run ended under it (an operator's abort):
/// recorded as failed, not gated, and nothing happens to the run.
pub fn stage_after_run_ended(run_state: RunState) -> StageDecision {
    StageDecision {
        state: StageState::Failed,
        reasons: vec![format!("run {run_state} while the stage ran")],
        run_event: None,
        events: Vec::new(),
        sub_steps: Vec::new(),
    }
}

/// What a claim of a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A queued run was claimed for the first time.
    First,
    /// The same boot claimed again after its heartbeat went stale; the
    /// token was re-issued.
    SameBoot,
    /// A new boot resumed a running run whose heartbeat went stale.
    Resumed,
}

/// How many heartbeat intervals a running run's agent may miss before a
/// new claim may take the run over.
pub const CLAIM_TAKEOVER_MISSED_BEATS: u64 = 3;

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// The run's agent still heartbeats (`409 claim_conflict`).
    Conflict,
    /// The host has a claim secret and the claim did not carry it
    /// (`403 claim_secret_mismatch`).
    SecretMismatch,
    /// The agent speaks a protocol this coordinator does not serve
    /// (`409 agent_incompatible`).
    Incompatible,
    /// A host-mode agent asked for one non-destructive run and found
    /// another, or a destructive one (`409 claim_mismatch`).
    NotTheNamedRun,
}

/// The facts a claim of a found run is decided from.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimFacts<'a> {
    pub state: RunState,
    /// The claim's boot id is the run's.
    pub same_boot: bool,
    /// The run's last heartbeat (the claim counts as one).
    pub last_heartbeat: Option<Timestamp>,
    pub heartbeat_interval_s: u64,
    pub now: Timestamp,
    /// Who asked, for the refusal's event.
    pub caller: &'a str,
    /// The hash of the host's claim secret ('' when it has none).
    pub host_secret_hash: &'a str,
    /// The hash of the secret the claim carried.
    pub claim_secret_hash: Option<&'a str>,
    /// The protocol the agent speaks, and its version as it said.
    pub protocol_version: u32,
    pub agent_version: Option<&'a str>,
    /// The run found, and whether it is non-destructive.
    pub run_id: i64,
    pub non_destructive: bool,
    /// The run a host-mode agent's claim is for.
    pub host_mode_run: Option<i64>,
}

/// Decides a claim: an agent whose protocol this coordinator does not
/// serve, or that lacks its host's claim secret, is refused; the first
/// claim of a queued run wins; a running run is taken over (same boot:
/// token re-issued; new boot: resumed) only after its agent missed
/// [`CLAIM_TAKEOVER_MISSED_BEATS`] heartbeats. While it still heartbeats
/// the claim is refused, so nobody who knows a MAC can take a live run
/// from its agent. Each refusal is a `claim_refused` event.
pub fn claim(facts: &ClaimFacts<'_>) -> Result<ClaimKind, (ClaimRefusal, GateEvent)> {
    let refuse = |why: ClaimRefusal, what: String| {
        let event = GateEvent {
            level: EventLevel::Warn,
            kind: EventKind::ClaimRefused,
            message: format!("claim from {} refused: {what}", facts.caller),
        };
        Err((why, event))
    };
    let served = common::wire::MIN_PROTOCOL_VERSION..=common::wire::PROTOCOL_VERSION;
    if !served.contains(&facts.protocol_version) {
        return refuse(
            ClaimRefusal::Incompatible,
            format!(
                "agent {} speaks protocol {}; this coordinator serves {} to {}",
                facts.agent_version.unwrap_or("(version not given)"),
                facts.protocol_version,
                served.start(),
                served.end()
            ),
        );
    }
    if let Some(named) = facts.host_mode_run {
        if named != facts.run_id || !facts.non_destructive {
            let what = if named != facts.run_id {
                format!(
                    "host mode asked for run {named} and would get run {}",
                    facts.run_id
                )
            } else {
                format!("run {named} is destructive; host mode runs only non-destructive runs")
            };
            let event = GateEvent {
                level: EventLevel::Warn,
                kind: EventKind::HostModeRefused,
                message: format!("claim from {} refused: {what}", facts.caller),
            };
            return Err((ClaimRefusal::NotTheNamedRun, event));
        }
    }
    if !facts.host_secret_hash.is_empty() && facts.claim_secret_hash != Some(facts.host_secret_hash)
    {
        let what = match facts.claim_secret_hash {
            None => "the host has a claim secret and the claim carried none",
            Some(_) => "the claim's secret is not the host's",
        };
        return refuse(ClaimRefusal::SecretMismatch, what.to_string());
    }
    if facts.state == RunState::Queued {
        return Ok(ClaimKind::First);
    }
    let window_ms = (facts.heartbeat_interval_s * CLAIM_TAKEOVER_MISSED_BEATS * 1000) as i64;
    let since_ms = facts
        .last_heartbeat
        .map(|t| facts.now.unix_millis() - t.unix_millis());
    match since_ms {
        Some(ms) if ms < window_ms => refuse(
            ClaimRefusal::Conflict,
            format!(
                "the run's agent heartbeated {:.1} s ago (a claim may take the run over after {} s of silence)",
                ms.max(0) as f64 / 1000.0,
                window_ms / 1000
            ),
        ),
        _ if facts.same_boot => Ok(ClaimKind::SameBoot),
        _ => Ok(ClaimKind::Resumed),
    }
}

/// What the sweep does to a run whose agent went silent: the running (or
/// next) stage fails with `stage_reason`, and the event says `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct SilentAgent {
    /// What the running (or next) stage becomes.
    pub stage_state: StageState,
    pub stage_reason: String,
    pub event: GateEvent,
}

/// A run whose agent last heartbeated at `last` (never, since the claim:
/// `None`) during `stage` is aborted as a hardware failure: a node that
/// hangs under test is faulty.
pub fn silent_agent(last: Option<&str>, stage: Option<&str>) -> SilentAgent {
    let reason = format!("agent silent since {}", last.unwrap_or("claim"));
    let at = stage.map(|n| format!(" during {n}")).unwrap_or_default();
    SilentAgent {
        event: GateEvent {
            level: EventLevel::Error,
            kind: EventKind::AgentSilent,
            message: format!("{reason}{at}; a hang is a hardware fault"),
        },
        stage_state: StageState::Failed,
        stage_reason: reason,
    }
}

/// A hold nobody released before its time: the host is powered off.
pub fn hold_expired(held_since: &str) -> (Power, GateEvent) {
    (
        Power::Poweroff,
        GateEvent {
            level: EventLevel::Warn,
            kind: EventKind::HoldTimeout,
            message: format!("held since {held_since} and never released: powering the host off"),
        },
    )
}

/// The result a run has once it is in `to` by `event`: pass, fail, or none
/// yet (an operator's abort or cancel leaves it without one).
pub fn run_result(to: RunState, event: RunEvent) -> Option<RunResult> {
    match (to, event) {
        (RunState::Passed, _) => Some(RunResult::Pass),
        (RunState::Failed, _) | (RunState::Aborted, RunEvent::AgentSilent) => Some(RunResult::Fail),
        _ => None,
    }
}

/// How loud a transition's event is.
pub fn transition_level(to: RunState, event: RunEvent) -> EventLevel {
    match to {
        RunState::FailedHolding | RunState::Failed => EventLevel::Warn,
        RunState::Aborted if event == RunEvent::AgentSilent => EventLevel::Error,
        _ => EventLevel::Info,
    }
}

/// The directive for a run in its current state.
pub fn directive_for(
    facts: &RunFacts,
    pass_power: Power,
    hold_timeout: std::time::Duration,
) -> Directive {
    match facts.state {
        RunState::Queued => Directive::Wait { secs: 5 },
        RunState::Running => match &facts.live_breach {
            Some(reason) if facts.running_stage.is_some() => Directive::AbortStage {
                reason: reason.clone(),
            },
            _ => Directive::Continue,
        },
        RunState::FailedHolding => match &facts.hold_public_key {
            Some(key) => Directive::Hold {
                public_key: key.clone(),
                until: facts
                    .held_at
                    .map(|t| t.plus_millis(hold_timeout.as_millis() as i64)),
            },
            // The key is being made; ask again shortly.
            None => Directive::Wait { secs: 2 },
        },
        RunState::Passed => Directive::Done { power: pass_power },
        RunState::Failed => Directive::Release {
            power: facts.release_power.unwrap_or(Power::None),
        },
        RunState::Aborted | RunState::Cancelled => Directive::Done { power: Power::None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_reason_gives_back_its_cause() {
        assert_eq!(skipped_reason("no GPU"), "skipped: no GPU");
        assert_eq!(
            StageReason::parse(&skipped_reason("no GPU")).cause(),
            "no GPU"
        );
    }

    fn facts<'a>(
        agent: StageOutcome,
        breaches: &'a [Breach],
        diffs: &'a [String],
        is_last: bool,
    ) -> StageFacts<'a> {
        StageFacts {
            stage: "CPUStress",
            agent,
            agent_reason: None,
            critical_breaches: breaches,
            critical_diffs: diffs,
            is_last,
            sub_steps: &[],
            untested: &[],
            require_all_disks: false,
            refused_before: 0,
            incomplete: &[],
        }
    }

    #[test]
    fn refused_disks_pass_incomplete_unless_all_are_required() {
        let untested = ["interlock refused loop3: mounted at /mnt".to_string()];
        let mut f = facts(StageOutcome::Passed, &[], &[], false);
        f.untested = &untested;
        let d = decide_stage(&f);
        assert_eq!(d.state, StageState::Passed);
        assert!(
            d.reasons[0].starts_with("not fully tested: "),
            "{:?}",
            d.reasons
        );
        f.require_all_disks = true;
        let d = decide_stage(&f);
        assert_eq!(d.state, StageState::Failed);
        assert_eq!(d.run_event, Some(RunEvent::StageFailed));
        assert!(d.reasons[0].contains("--require-all-disks"));
    }

    #[test]
    fn stage_decision_table() {
        let breach = [Breach {
            kind: "temp".into(),
            key: "coretemp/Core 0".into(),
            op: "lt".into(),
            threshold: 90.0,
            worst: 97.0,
            count: 3,
        }];
        let diff = ["cpu.logical_cores: 48 → 24".to_string()];
        use StageOutcome::*;
        let cases: [(StageFacts, StageState, Option<RunEvent>); 7] = [
            (facts(Passed, &[], &[], false), StageState::Passed, None),
            (
                facts(Passed, &[], &[], true),
                StageState::Passed,
                Some(RunEvent::AllStagesPassed),
            ),
            (
                facts(Skipped, &[], &[], true),
                StageState::Skipped,
                Some(RunEvent::AllStagesPassed),
            ),
            (
                facts(Failed, &[], &[], false),
                StageState::Failed,
                Some(RunEvent::StageFailed),
            ),
            (
                facts(Passed, &breach, &[], true),
                StageState::Failed,
                Some(RunEvent::StageFailed),
            ),
            (
                facts(Passed, &[], &diff, false),
                StageState::Failed,
                Some(RunEvent::StageFailed),
            ),
            (
                facts(Skipped, &breach, &[], false),
                StageState::Failed,
                Some(RunEvent::StageFailed),
            ),
        ];
        for (f, state, event) in cases {
            let d = decide_stage(&f);
            assert_eq!((d.state, d.run_event), (state, event), "{f:?}");
        }
        let d = decide_stage(&facts(Passed, &breach, &diff, false));
        assert_eq!(
            d.reasons,
            vec![
                "temp coretemp/Core 0 = 97 breached lt 90 (3 samples)",
                "spec: cpu.logical_cores: 48 → 24"
            ]
        );
    }

    #[test]
    fn a_stage_writes_its_breaches_refusals_and_an_incomplete_pass() {
        let breach = [Breach {
            kind: "temp".into(),
            key: "coretemp/Core 0".into(),
            op: "lt".into(),
            threshold: 90.0,
            worst: 97.0,
            count: 1,
        }];
        let d = decide_stage(&facts(StageOutcome::Passed, &breach, &[], false));
        assert_eq!(
            d.events,
            vec![GateEvent {
                level: EventLevel::Error,
                kind: EventKind::Breach,
                message: "CPUStress: temp coretemp/Core 0 = 97 breached lt 90 (1 sample)".into(),
            }]
        );
        // The last stage passes with one refusal now and two before: the
        // pass is incomplete and says all three.
        let untested = ["interlock refused loop3: mounted".to_string()];
        let mut f = facts(StageOutcome::Passed, &[], &[], true);
        f.untested = &untested;
        f.refused_before = 2;
        let d = decide_stage(&f);
        let kinds: Vec<EventKind> = d.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::InterlockRefused, EventKind::PassIncomplete]
        );
        assert!(
            d.events[1].message.contains("3 disk pass(es)"),
            "{:?}",
            d.events
        );
        // Not the last stage: no verdict yet, so no incomplete pass.
        f.is_last = false;
        assert_eq!(decide_stage(&f).events.len(), 1);
    }

    #[test]
    fn expiry_and_results_are_decided_here() {
        let s = silent_agent(Some("2026-01-01T00:00:00.000Z"), Some("Burn"));
        assert_eq!(
            s.stage_reason,
            "agent silent since 2026-01-01T00:00:00.000Z"
        );
        assert_eq!(s.event.kind, EventKind::AgentSilent);
        assert!(s
            .event
            .message
            .ends_with("during Burn; a hang is a hardware fault"));
        assert_eq!(
            silent_agent(None, None).stage_reason,
            "agent silent since claim"
        );
        let (power, e) = hold_expired("t0");
        assert_eq!((power, e.kind), (Power::Poweroff, EventKind::HoldTimeout));
        assert_eq!(
            run_result(RunState::Aborted, RunEvent::AgentSilent),
            Some(RunResult::Fail)
        );
        assert_eq!(run_result(RunState::Aborted, RunEvent::OperatorAbort), None);
        assert_eq!(
            run_result(RunState::Passed, RunEvent::AllStagesPassed),
            Some(RunResult::Pass)
        );
        assert_eq!(worst(Op::Gt, 0.0, 3.0, 9.0), 3.0);
        assert_eq!(worst(Op::Lt, 0.0, 3.0, 9.0), 9.0);
        assert_eq!(worst(Op::WithinPct, 10.0, 1.0, 12.0), 1.0);
        let ended = stage_after_run_ended(RunState::Aborted);
        assert_eq!((ended.state, ended.run_event), (StageState::Failed, None));
    }

    const HOLD: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn directives_by_state() {
        let base = RunFacts {
            run_id: 1,
            state: RunState::Running,
            running_stage: Some((4, "CPUStress".into())),
            live_breach: None,
            hold_public_key: None,
            release_power: None,
            held_at: None,
        };
        assert_eq!(directive_for(&base, Power::None, HOLD), Directive::Continue);
        let hot = RunFacts {
            live_breach: Some("temp too high".into()),
            ..base.clone()
        };
        assert_eq!(
            directive_for(&hot, Power::None, HOLD),
            Directive::AbortStage {
                reason: "temp too high".into()
            }
        );
        let held = RunFacts {
            state: RunState::FailedHolding,
            running_stage: None,
            ..base.clone()
        };
        assert_eq!(
            directive_for(&held, Power::None, HOLD),
            Directive::Wait { secs: 2 }
        );
        let keyed = RunFacts {
            hold_public_key: Some("ssh-ed25519 AAAA".into()),
            held_at: Some(Timestamp::from_unix_millis(1_000)),
            ..held
        };
        // The deadline: when the hold began plus the hold timeout.
        assert_eq!(
            directive_for(&keyed, Power::None, HOLD),
            Directive::Hold {
                public_key: "ssh-ed25519 AAAA".into(),
                until: Some(Timestamp::from_unix_millis(61_000)),
            }
        );
        let passed = RunFacts {
            state: RunState::Passed,
            running_stage: None,
            ..base.clone()
        };
        assert_eq!(
            directive_for(&passed, Power::Poweroff, HOLD),
            Directive::Done {
                power: Power::Poweroff
            }
        );
        let released = RunFacts {
            state: RunState::Failed,
            running_stage: None,
            release_power: Some(Power::Reboot),
            ..base.clone()
        };
        assert_eq!(
            directive_for(&released, Power::None, HOLD),
            Directive::Release {
                power: Power::Reboot
            }
        );
        let aborted = RunFacts {
            state: RunState::Aborted,
            ..base.clone()
        };
        // Its running stage ended with it; `done` stops the agent's work.
        assert_eq!(
            directive_for(&aborted, Power::None, HOLD),
            Directive::Done { power: Power::None }
        );
        let cancelled = RunFacts {
            state: RunState::Cancelled,
            running_stage: None,
            ..base
        };
        assert_eq!(
            directive_for(&cancelled, Power::Poweroff, HOLD),
            Directive::Done { power: Power::None }
        );
    }

    #[test]
    fn a_breach_fails_the_sub_step_of_the_device_it_names_and_no_other() {
        let breach = [Breach {
            kind: "disk".into(),
            key: "sda/bad_blocks".into(),
            op: "lte".into(),
            threshold: 0.0,
            worst: 2.0,
            count: 1,
        }];
        let sub = |ordinal: u32, device: Option<&str>| SubStepReport {
            ordinal,
            name: format!("{} badblocks", device.unwrap_or("all")),
            state: StageState::Passed,
            device: device.map(str::to_string),
            started_at: None,
            completed_at: None,
            summary: None,
        };
        // `sdab` starts with `sda` but is another disk; a sub-step with no
        // device is never failed by a device's breach.
        let subs = [sub(0, Some("sdab")), sub(1, Some("sda")), sub(2, None)];
        let mut f = facts(StageOutcome::Passed, &breach, &[], false);
        f.sub_steps = &subs;
        let d = decide_stage(&f);
        assert_eq!(d.state, StageState::Failed);
        assert_eq!(d.sub_steps.len(), 1, "{:?}", d.sub_steps);
        assert_eq!(d.sub_steps[0].ordinal, 1);
        assert_eq!(d.sub_steps[0].state, StageState::Failed);
        assert!(
            d.sub_steps[0].reason.contains("sda/bad_blocks = 2"),
            "{:?}",
            d.sub_steps
        );
    }

    #[test]
    fn a_running_run_is_taken_over_only_after_three_silent_intervals() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let ago = |s: i64| Some(Timestamp::from_unix_millis(1_000_000 - s * 1000));
        let f = |state, same_boot, last_heartbeat| ClaimFacts {
            state,
            same_boot,
            last_heartbeat,
            heartbeat_interval_s: 5,
            now,
            caller: "192.0.2.9",
            host_secret_hash: "",
            claim_secret_hash: None,
            protocol_version: common::wire::PROTOCOL_VERSION,
            agent_version: Some("0.1.0"),
            run_id: 7,
            non_destructive: false,
            host_mode_run: None,
        };
        assert_eq!(
            claim(&f(RunState::Queued, false, None)),
            Ok(ClaimKind::First)
        );
        for same_boot in [true, false] {
            let (why, event) = claim(&f(RunState::Running, same_boot, ago(14))).unwrap_err();
            assert_eq!(why, ClaimRefusal::Conflict);
            assert_eq!(event.kind, EventKind::ClaimRefused);
            assert_eq!(event.level, EventLevel::Warn);
            assert!(event.message.contains("192.0.2.9"), "{}", event.message);
        }
        assert_eq!(
            claim(&f(RunState::Running, true, ago(15))),
            Ok(ClaimKind::SameBoot)
        );
        assert_eq!(
            claim(&f(RunState::Running, false, ago(15))),
            Ok(ClaimKind::Resumed)
        );
        assert_eq!(
            claim(&f(RunState::Running, false, None)),
            Ok(ClaimKind::Resumed),
            "never heartbeated"
        );
    }

    #[test]
    fn a_claim_needs_the_hosts_secret_and_a_protocol_this_coordinator_serves() {
        let base = ClaimFacts {
            state: RunState::Queued,
            same_boot: false,
            last_heartbeat: None,
            heartbeat_interval_s: 5,
            now: Timestamp::from_unix_millis(0),
            caller: "192.0.2.9",
            host_secret_hash: "abc",
            claim_secret_hash: Some("abc"),
            protocol_version: 1,
            agent_version: None,
            run_id: 7,
            non_destructive: true,
            host_mode_run: None,
        };
        assert_eq!(claim(&base), Ok(ClaimKind::First));
        // Host mode takes the run its heartbeat named, non-destructive only.
        let named = |run, non_destructive| ClaimFacts {
            host_mode_run: Some(run),
            non_destructive,
            ..base.clone()
        };
        assert_eq!(claim(&named(7, true)), Ok(ClaimKind::First));
        for (run, nd) in [(8, true), (7, false)] {
            let (why, event) = claim(&named(run, nd)).unwrap_err();
            assert_eq!(why, ClaimRefusal::NotTheNamedRun);
            assert_eq!(event.kind, EventKind::HostModeRefused);
        }
        for given in [None, Some("abd")] {
            let f = ClaimFacts {
                claim_secret_hash: given,
                ..base.clone()
            };
            assert_eq!(claim(&f).unwrap_err().0, ClaimRefusal::SecretMismatch);
        }
        let f = ClaimFacts {
            protocol_version: common::wire::PROTOCOL_VERSION + 1,
            agent_version: Some("9.0.0"),
            ..base.clone()
        };
        let (why, event) = claim(&f).unwrap_err();
        assert_eq!(why, ClaimRefusal::Incompatible);
        assert!(
            event.message.contains("agent 9.0.0 speaks protocol"),
            "{}",
            event.message
        );
    }
}
