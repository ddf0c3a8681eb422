//! The run state machine. The coordinator owns it; this module only says
//! which transitions are legal.
//!
//! ```text
//! Queued ──claim──▶ Running ──all stages passed──▶ Passed
//!   │                 │ ├──stage failed──▶ FailedHolding ──release / hold timeout──▶ Failed
//!   │                 │ └──agent silent / operator abort──▶ Aborted
//!   └──cancel──▶ Cancelled
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum RunState {
    Queued,
    Running,
    Passed,
    FailedHolding,
    Failed,
    Aborted,
    Cancelled,
}

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEvent {
    /// An agent claimed the queued run.
    Claim,
    /// An agent claimed a running run again with a new boot id.
    Resume,
    /// The gate failed a stage.
    StageFailed,
    /// The last stage passed.
    AllStagesPassed,
    /// The operator released a held host.
    Release,
    /// The hold period ran out.
    HoldTimeout,
    /// The agent stopped heartbeating during a stage.
    AgentSilent,
    /// The operator aborted the run.
    OperatorAbort,
    /// The operator cancelled the run before any claim.
    Cancel,
}

impl RunEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEvent::Claim => "claim",
            RunEvent::Resume => "resume",
            RunEvent::StageFailed => "stage failed",
            RunEvent::AllStagesPassed => "all stages passed",
            RunEvent::Release => "release",
            RunEvent::HoldTimeout => "hold timeout",
            RunEvent::AgentSilent => "agent silent",
            RunEvent::OperatorAbort => "abort",
            RunEvent::Cancel => "cancel",
        }
    }
}

/// A transition the state machine does not allow, with a hint for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run is {from}; cannot {}{}", event.as_str(), hint.map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct IllegalTransition {
    pub from: RunState,
    pub event: RunEvent,
    pub hint: Option<&'static str>,
}

string_enum!(
    /// Seed `runs.result` value of a state, once it is terminal.
    RunResult, "run result", {
        Pass => "pass",
        Fail => "fail",
    }
);

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Passed,
        RunState::FailedHolding,
        RunState::Failed,
        RunState::Aborted,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "Queued",
            RunState::Running => "Running",
            RunState::Passed => "Passed",
            RunState::FailedHolding => "FailedHolding",
            RunState::Failed => "Failed",
            RunState::Aborted => "Aborted",
            RunState::Cancelled => "Cancelled",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Passed | RunState::Failed | RunState::Aborted | RunState::Cancelled
        )
    }

    /// An agent may be working on the run (claimed, not finished).
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Running | RunState::FailedHolding)
    }

    /// The next state after `event`, or why not.
    pub fn transition(self, event: RunEvent) -> Result<RunState, IllegalTransition> {
        use RunEvent as E;
        use RunState as S;
        let next = match (self, event) {
            (S::Queued, E::Claim) => S::Running,
            (S::Queued, E::Cancel) => S::Cancelled,
            (S::Running, E::Resume) => S::Running,
            (S::Running, E::StageFailed) => S::FailedHolding,
            (S::Running, E::AllStagesPassed) => S::Passed,
            (S::Running, E::AgentSilent | E::OperatorAbort) => S::Aborted,
            (S::FailedHolding, E::Release | E::HoldTimeout) => S::Failed,
            (from, event) => {
                let hint = match (from, event) {
                    (S::Queued, E::OperatorAbort) => Some("not claimed yet: use `run cancel`"),
                    (S::Running, E::Cancel) => Some("already claimed: use `run abort`"),
                    (S::FailedHolding, E::Cancel | E::OperatorAbort) => {
                        Some("the host is held: use `run release`")
                    }
                    (S::Queued | S::Running, E::Release) => Some("only a held run can be released"),
                    _ if from.is_terminal() => Some("the run has ended"),
                    _ => None,
                };
                return Err(IllegalTransition { from, event, hint });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run state {0:?}")]
pub struct UnknownRunState(pub String);

impl FromStr for RunState {
    type Err = UnknownRunState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownRunState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunEvent as E;
    use RunState as S;

    const EVENTS: [RunEvent; 9] = [
        E::Claim,
        E::Resume,
        E::StageFailed,
        E::AllStagesPassed,
        E::Release,
        E::HoldTimeout,
        E::AgentSilent,
        E::OperatorAbort,
        E::Cancel,
    ];

    #[test]
    fn legal_transitions_table() {
        let legal = [
            (S::Queued, E::Claim, S::Running),
            (S::Queued, E::Cancel, S::Cancelled),
            (S::Running, E::Resume, S::Running),
            (S::Running, E::StageFailed, S::FailedHolding),
            (S::Running, E::AllStagesPassed, S::Passed),
            (S::Running, E::AgentSilent, S::Aborted),
            (S::Running, E::OperatorAbort, S::Aborted),
            (S::FailedHolding, E::Release, S::Failed),
            (S::FailedHolding, E::HoldTimeout, S::Failed),
        ];
        for from in RunState::ALL {
            for event in EVENTS {
                let want = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (from.transition(event), want) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{from} + {event:?}"),
                    (Err(err), None) => {
                        assert_eq!(err.from, from);
                        assert!(err.to_string().starts_with(&format!("run is {from}")));
                    }
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn terminal_states_have_no_exit() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in EVENTS {
                assert!(from.transition(event).is_err(), "{from} + {event:?}");
            }
        }
    }

    #[test]
    fn refusals_carry_hints() {
        let err = S::Running.transition(E::Cancel).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run is Running; cannot cancel (already claimed: use `run abort`)"
        );
        let err = S::Passed.transition(E::Release).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run is Passed; cannot release (the run has ended)"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
