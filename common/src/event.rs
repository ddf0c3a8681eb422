//! What an event is about and how loud it is: the closed lists an `events`
//! row's `kind` and `level` come from, so no caller spells one as a string.
//!
//! Never: accept a kind or level outside these lists; a stored row with one
//! is a corrupt row, and an agent that sends one gets a clear refusal.

string_enum!(
    /// How much an event matters to an operator.
    EventLevel, "event level", {
        Info => "info",
        Warn => "warn",
        Error => "error",
    }
);

string_enum!(
    /// What an event records.
    EventKind, "event kind", {
        /// A run state change (`from`, `to`, `event` in its data).
        Transition => "transition",
        /// An agent claimed the run (first claim, or the same boot again).
        Claim => "claim",
        /// A new boot resumed a running run.
        Resume => "resume",
        /// A claim of a running run whose agent still heartbeats, refused
        /// (the caller's address in the message).
        ClaimRefused => "claim_refused",
        /// A critical threshold breached during a stage.
        Breach => "breach",
        /// The agent's interlock refused a destructive sub-step.
        InterlockRefused => "interlock_refused",
        /// The run passed with something not tested.
        PassIncomplete => "pass_incomplete",
        /// The agent stopped heartbeating; the run was aborted.
        AgentSilent => "agent_silent",
        HoldStarted => "hold_started",
        HoldTimeout => "hold_timeout",
        Release => "release",
        IgnoreDiff => "ignore_diff",
        HostAdded => "host_added",
        HostEdited => "host_edited",
        HostToken => "host_token",
        HostModeRefused => "host_mode_refused",
        SampleCountMismatch => "sample_count_mismatch",
        Prune => "prune",
        WolSent => "wol_sent",
        WolFailed => "wol_failed",
        /// A kernel log line the agent classified as a hardware error.
        KernelError => "kernel_error",
        /// A tool a stage needs is not installed.
        ToolMissing => "tool_missing",
        /// A tool outlived its timeout and was killed.
        ToolTimeout => "tool_timeout",
        /// The coordinator lost batches it had acknowledged (a power cut, a
        /// restore from backup); the agent says which and renumbers. The
        /// run can then pass only incompletely.
        DataLost => "data_lost",
    }
);

impl EventKind {
    /// The kinds an agent may report through `POST /runs/{id}/events`.
    pub const FROM_AGENT: &'static [EventKind] = &[
        EventKind::KernelError,
        EventKind::ToolMissing,
        EventKind::ToolTimeout,
        EventKind::DataLost,
    ];

    pub fn is_from_agent(self) -> bool {
        EventKind::FROM_AGENT.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
            assert_eq!(
                serde_json::to_string(k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for l in EventLevel::ALL {
            assert_eq!(l.as_str().parse::<EventLevel>(), Ok(*l));
        }
        let err = "loud".parse::<EventLevel>().unwrap_err();
        assert_eq!(err.to_string(), "unknown event level \"loud\"");
        assert!(serde_json::from_str::<EventKind>("\"reboot\"").is_err());
        assert!(EventKind::KernelError.is_from_agent());
        assert!(!EventKind::Transition.is_from_agent());
    }
}
