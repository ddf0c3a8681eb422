//! The stages of a vetting run (DefaultStageOrder) and their states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One stage of the pipeline, in DefaultStageOrder. The discriminant is the
/// stage's ordinal: the number every sample and report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Stage {
    Inventory = 0,
    SpecValidate = 1,
    Firmware = 2,
    #[serde(rename = "SMART")]
    Smart = 3,
    #[serde(rename = "CPUStress")]
    CpuStress = 4,
    Memory = 5,
    DiskPerf = 6,
    DiskSurface = 7,
    WipeProbe = 8,
    Network = 9,
    #[serde(rename = "GPU")]
    Gpu = 10,
    Burn = 11,
}

/// DefaultStageOrder: the order stages are seeded and run in.
pub const DEFAULT_STAGE_ORDER: [Stage; 12] = [
    Stage::Inventory,
    Stage::SpecValidate,
    Stage::Firmware,
    Stage::Smart,
    Stage::CpuStress,
    Stage::Memory,
    Stage::DiskPerf,
    Stage::DiskSurface,
    Stage::WipeProbe,
    Stage::Network,
    Stage::Gpu,
    Stage::Burn,
];

impl Stage {
    /// 0-based position in DefaultStageOrder.
    pub fn ordinal(self) -> u32 {
        self as u32
    }

    pub fn from_ordinal(ordinal: u32) -> Option<Stage> {
        DEFAULT_STAGE_ORDER.get(ordinal as usize).copied()
    }

    /// The name stored in `stages.name` and used in thresholds.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Inventory => "Inventory",
            Stage::SpecValidate => "SpecValidate",
            Stage::Firmware => "Firmware",
            Stage::Smart => "SMART",
            Stage::CpuStress => "CPUStress",
            Stage::Memory => "Memory",
            Stage::DiskPerf => "DiskPerf",
            Stage::DiskSurface => "DiskSurface",
            Stage::WipeProbe => "WipeProbe",
            Stage::Network => "Network",
            Stage::Gpu => "GPU",
            Stage::Burn => "Burn",
        }
    }

    /// Stages that write to disks and are skipped entirely by a
    /// non-destructive run (as the seed says).
    pub fn is_destructive(self) -> bool {
        matches!(self, Stage::DiskSurface | Stage::WipeProbe)
    }

    /// Stages the coordinator computes itself rather than the agent.
    pub fn computed_by_coordinator(self) -> bool {
        matches!(self, Stage::SpecValidate)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {0:?} (stages: Inventory SpecValidate Firmware SMART CPUStress Memory DiskPerf DiskSurface WipeProbe Network GPU Burn)")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DEFAULT_STAGE_ORDER
            .iter()
            .copied()
            .find(|stage| stage.name() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

/// State of a stage or sub-step, spelled as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    Pending,
    Running,
    Passed,
    Failed,
    Skipped,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Running => "running",
            StageState::Passed => "passed",
            StageState::Failed => "failed",
            StageState::Skipped => "skipped",
        }
    }

    /// Finished without stopping the pipeline.
    pub fn lets_pipeline_continue(self) -> bool {
        matches!(self, StageState::Passed | StageState::Skipped)
    }
}

impl fmt::Display for StageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage state {0:?} (pending running passed failed skipped)")]
pub struct UnknownStageState(pub String);

impl FromStr for StageState {
    type Err = UnknownStageState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => StageState::Pending,
            "running" => StageState::Running,
            "passed" => StageState::Passed,
            "failed" => StageState::Failed,
            "skipped" => StageState::Skipped,
            _ => return Err(UnknownStageState(s.to_string())),
        })
    }
}

/// Why a stage ended as it did: one of the gate's reasons. Stored and
/// shown as text (`agent: R`, `skipped: R`, `spec: D`, or the text itself);
/// [`StageReason::parse`] reads the text back, so every reader and writer
/// goes through this one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageReason {
    /// The agent reported the stage failed, saying why.
    Agent(String),
    /// The stage was skipped, and why.
    Skipped(String),
    /// A critical spec difference that was not ignored.
    Spec(String),
    /// Anything else the gate said (a breach, untested disks).
    Other(String),
}

impl StageReason {
    const AGENT: &'static str = "agent: ";
    const SKIPPED: &'static str = "skipped: ";
    const SPEC: &'static str = "spec: ";

    /// Reads a stored reason.
    pub fn parse(text: &str) -> StageReason {
        if let Some(r) = text.strip_prefix(Self::AGENT) {
            StageReason::Agent(r.to_string())
        } else if let Some(r) = text.strip_prefix(Self::SKIPPED) {
            StageReason::Skipped(r.to_string())
        } else if let Some(r) = text.strip_prefix(Self::SPEC) {
            StageReason::Spec(r.to_string())
        } else {
            StageReason::Other(text.to_string())
        }
    }

    /// What the reason says without its label: the cause of a skip, the
    /// agent's own words, the diff.
    pub fn cause(&self) -> &str {
        match self {
            StageReason::Agent(r)
            | StageReason::Skipped(r)
            | StageReason::Spec(r)
            | StageReason::Other(r) => r,
        }
    }

    /// The reason on a line that already says the stage was skipped: a
    /// skip's cause alone, any other reason whole.
    pub fn after_skipped(text: &str) -> String {
        match StageReason::parse(text) {
            StageReason::Skipped(cause) => cause,
            other => other.to_string(),
        }
    }

    /// Whether this reason already says what the agent reported as `agent_reason`.
    pub fn carries(&self, agent_reason: &str) -> bool {
        matches!(self, StageReason::Agent(r) | StageReason::Skipped(r) if r == agent_reason)
    }
}

impl fmt::Display for StageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageReason::Agent(r) => write!(f, "{}{r}", Self::AGENT),
            StageReason::Skipped(r) => write!(f, "{}{r}", Self::SKIPPED),
            StageReason::Spec(r) => write!(f, "{}{r}", Self::SPEC),
            StageReason::Other(r) => f.write_str(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_follow_default_order() {
        for (i, stage) in DEFAULT_STAGE_ORDER.iter().enumerate() {
            assert_eq!(stage.ordinal() as usize, i);
            assert_eq!(Stage::from_ordinal(i as u32), Some(*stage));
            assert_eq!(stage.name().parse::<Stage>(), Ok(*stage));
            let json = serde_json::to_string(stage).unwrap();
            assert_eq!(json, format!("\"{}\"", stage.name()));
        }
        assert_eq!(Stage::from_ordinal(12), None);
        assert!("smart".parse::<Stage>().is_err());
    }

    #[test]
    fn stage_states_round_trip() {
        for s in ["pending", "running", "passed", "failed", "skipped"] {
            assert_eq!(s.parse::<StageState>().unwrap().as_str(), s);
        }
        assert!("Passed".parse::<StageState>().is_err());
    }

    #[test]
    fn a_stage_reason_reads_back_as_it_was_written() {
        for r in [
            StageReason::Agent("3 stressors failed".into()),
            StageReason::Skipped("no GPU".into()),
            StageReason::Spec("cpu.logical_cores: expected 48, found 24".into()),
            StageReason::Other("temp coretemp/Core 0 = 97 breached lt 90 (1 sample)".into()),
        ] {
            assert_eq!(StageReason::parse(&r.to_string()), r);
        }
        assert_eq!(
            StageReason::Skipped("no GPU".into()).to_string(),
            "skipped: no GPU"
        );
        assert_eq!(StageReason::parse("skipped: no GPU").cause(), "no GPU");
        assert!(StageReason::parse("agent: cannot read").carries("cannot read"));
        assert!(!StageReason::parse("spec: cannot read").carries("cannot read"));
        assert_eq!(StageReason::after_skipped("skipped: no GPU"), "no GPU");
        assert_eq!(StageReason::after_skipped("agent: x"), "agent: x");
    }
}
