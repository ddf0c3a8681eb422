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
}
