//! The gate: turns a finished stage and the run's frozen thresholds into the
//! stage's final state, and a run's facts into the next `Directive`.
//!
//! Pure functions of their inputs. The gate never reads the profile registry
//! (thresholds were copied into the run at creation), never touches SQL or
//! HTTP and never reads the clock. Pass/fail is decided here and nowhere else.

use common::event::EventLevel;
use common::run_state::{RunEvent, RunResult, RunState};
use common::stage::StageState;
use common::wire::{Directive, Power, StageOutcome};

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
}

/// A skipped stage's reason as stored: `skipped: CAUSE`.
pub fn skipped_reason(cause: &str) -> String {
    format!("skipped: {cause}")
}

/// The cause in a reason written by [`skipped_reason`]; any other reason as
/// it is (for lines that already say the stage was skipped).
pub fn skip_cause(reason: &str) -> &str {
    reason.strip_prefix("skipped: ").unwrap_or(reason)
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

/// Everything the gate looks at for one finished stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFacts<'a> {
    pub agent: StageOutcome,
    pub agent_reason: Option<&'a str>,
    pub critical_breaches: &'a [Breach],
    /// Critical spec diffs that were not ignored: `field: expected → actual`.
    pub critical_diffs: &'a [String],
    /// No stage after this one is still pending.
    pub is_last: bool,
    /// Sub-steps the agent's interlock refused, with the reason.
    pub untested: &'a [String],
    /// The run wants every disk tested (`--require-all-disks`).
    pub require_all_disks: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageDecision {
    pub state: StageState,
    pub reasons: Vec<String>,
    /// What happens to the run, if anything.
    pub run_event: Option<RunEvent>,
}

/// Decides the stage's final state: failed if the agent reported failure, any
/// critical threshold of the stage was breached, or a critical spec diff
/// stands; skipped if the agent skipped it cleanly; passed otherwise.
pub fn decide_stage(facts: &StageFacts<'_>) -> StageDecision {
    let mut reasons = Vec::new();
    if facts.agent == StageOutcome::Failed {
        reasons.push(format!(
            "agent: {}",
            facts.agent_reason.unwrap_or("stage failed")
        ));
    }
    for b in facts.critical_breaches {
        reasons.push(format!(
            "{} {} = {} breached {} {} ({} sample{})",
            b.kind,
            b.key,
            b.worst,
            b.op,
            b.threshold,
            b.count,
            if b.count == 1 { "" } else { "s" }
        ));
    }
    for d in facts.critical_diffs {
        reasons.push(format!("spec: {d}"));
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
    StageDecision {
        state,
        reasons,
        run_event,
    }
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
pub fn directive_for(facts: &RunFacts, pass_power: Power) -> Directive {
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
            },
            // The key is being made; ask again shortly.
            None => Directive::Wait { secs: 2 },
        },
        RunState::Passed => Directive::Done { power: pass_power },
        RunState::Failed => Directive::Release {
            power: facts.release_power.unwrap_or(Power::None),
        },
        RunState::Aborted if facts.running_stage.is_some() => Directive::AbortStage {
            reason: "run aborted".into(),
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
        assert_eq!(skip_cause(&skipped_reason("no GPU")), "no GPU");
        assert_eq!(skip_cause("agent: cannot read"), "agent: cannot read");
    }

    fn facts<'a>(
        agent: StageOutcome,
        breaches: &'a [Breach],
        diffs: &'a [String],
        is_last: bool,
    ) -> StageFacts<'a> {
        StageFacts {
            agent,
            agent_reason: None,
            critical_breaches: breaches,
            critical_diffs: diffs,
            is_last,
            untested: &[],
            require_all_disks: false,
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
    fn directives_by_state() {
        let base = RunFacts {
            run_id: 1,
            state: RunState::Running,
            running_stage: Some((4, "CPUStress".into())),
            live_breach: None,
            hold_public_key: None,
            release_power: None,
        };
        assert_eq!(directive_for(&base, Power::None), Directive::Continue);
        let hot = RunFacts {
            live_breach: Some("temp too high".into()),
            ..base.clone()
        };
        assert_eq!(
            directive_for(&hot, Power::None),
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
            directive_for(&held, Power::None),
            Directive::Wait { secs: 2 }
        );
        let keyed = RunFacts {
            hold_public_key: Some("ssh-ed25519 AAAA".into()),
            ..held
        };
        assert_eq!(
            directive_for(&keyed, Power::None),
            Directive::Hold {
                public_key: "ssh-ed25519 AAAA".into()
            }
        );
        let passed = RunFacts {
            state: RunState::Passed,
            running_stage: None,
            ..base.clone()
        };
        assert_eq!(
            directive_for(&passed, Power::Poweroff),
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
            directive_for(&released, Power::None),
            Directive::Release {
                power: Power::Reboot
            }
        );
        let aborted = RunFacts {
            state: RunState::Aborted,
            ..base.clone()
        };
        assert!(matches!(
            directive_for(&aborted, Power::None),
            Directive::AbortStage { .. }
        ));
        let cancelled = RunFacts {
            state: RunState::Cancelled,
            running_stage: None,
            ..base
        };
        assert_eq!(
            directive_for(&cancelled, Power::Poweroff),
            Directive::Done { power: Power::None }
        );
    }
}
