//! The ProfileRegistry: what `quick`, `deep` and `soak` run, for how long,
//! and the default thresholds a run copies at creation.
//!
//! Throughput thresholds (fio, iperf) are deliberately absent: only a host
//! spec knows what a disk or link should do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::measurement::Kind;
use crate::stage::{Stage, DEFAULT_STAGE_ORDER};
use crate::threshold::{KeySelector, Op, Rule, Severity, StageSel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Quick,
    Deep,
    Soak,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Quick, Profile::Deep, Profile::Soak];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Deep => "deep",
            Profile::Soak => "soak",
        }
    }

    pub fn definition(self) -> ProfileDef {
        match self {
            Profile::Quick => ProfileDef {
                profile: self,
                stages: DEFAULT_STAGE_ORDER.to_vec(),
                durations: Durations {
                    cpu_stress_s: 30,
                    memory_s: 30,
                    disk_perf_per_disk_s: 10,
                    network_per_nic_s: 5,
                    burn_s: 60,
                    smart_self_test: SelfTest::Short,
                    memtester: false,
                    destructive_scope: DestructiveScope::Sample,
                },
                sidecar_interval_ms: 1_000,
                heartbeat_interval_s: 5,
            },
            Profile::Deep => ProfileDef {
                profile: self,
                stages: DEFAULT_STAGE_ORDER.to_vec(),
                durations: Durations {
                    cpu_stress_s: 30 * 60,
                    memory_s: 60 * 60,
                    disk_perf_per_disk_s: 120,
                    network_per_nic_s: 60,
                    burn_s: 4 * 3600,
                    smart_self_test: SelfTest::Long,
                    memtester: true,
                    destructive_scope: DestructiveScope::WholeDisk,
                },
                sidecar_interval_ms: 5_000,
                heartbeat_interval_s: 10,
            },
            Profile::Soak => ProfileDef {
                profile: self,
                stages: DEFAULT_STAGE_ORDER.to_vec(),
                durations: Durations {
                    cpu_stress_s: 30 * 60,
                    memory_s: 60 * 60,
                    disk_perf_per_disk_s: 120,
                    network_per_nic_s: 60,
                    burn_s: 24 * 3600,
                    smart_self_test: SelfTest::Long,
                    memtester: true,
                    destructive_scope: DestructiveScope::WholeDisk,
                },
                sidecar_interval_ms: 10_000,
                heartbeat_interval_s: 10,
            },
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown profile {s:?} (quick deep soak)"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SelfTest {
    Short,
    Long,
}

/// How much of a disk the destructive stages cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DestructiveScope {
    /// A short bounded pass over a sample of the disk.
    Sample,
    WholeDisk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Durations {
    pub cpu_stress_s: u64,
    pub memory_s: u64,
    pub disk_perf_per_disk_s: u64,
    pub network_per_nic_s: u64,
    pub burn_s: u64,
    pub smart_self_test: SelfTest,
    /// Memory also runs memtester (when installed) for half its time.
    #[serde(default)]
    pub memtester: bool,
    pub destructive_scope: DestructiveScope,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileDef {
    pub profile: Profile,
    /// Stages this profile runs; the others are seeded as skipped.
    pub stages: Vec<Stage>,
    pub durations: Durations,
    pub sidecar_interval_ms: u64,
    pub heartbeat_interval_s: u64,
}

impl ProfileDef {
    pub fn runs(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }

    /// The nominal time the timed stages take for a machine with `disks`
    /// disks and `nics` NICs (what the budget in DESIGN.md is about).
    pub fn timed_seconds(&self, disks: u64, nics: u64) -> u64 {
        let d = &self.durations;
        d.cpu_stress_s
            + d.memory_s
            + d.disk_perf_per_disk_s * disks
            + d.network_per_nic_s * nics
            + d.burn_s
    }

    /// The default thresholds every run of this profile starts from.
    pub fn default_thresholds(&self) -> Vec<Rule> {
        use Kind::*;
        use Op::*;
        use Severity::*;
        let mut rules = vec![
            // Temperatures: anywhere, any sensor.
            rule("*", Temp, "*", Lt, 95.0, Critical),
            rule("*", Temp, "*", Lt, 85.0, Warning),
            // SMART health, as the agent reports it per disk (1 = passed).
            rule(
                "SMART",
                SmartAttr,
                "*/smart_status_passed",
                Gte,
                1.0,
                Critical,
            ),
            // The self-test this run started (1 = completed without error).
            rule("SMART", SmartAttr, "*/self_test_passed", Gte, 1.0, Critical),
            // ATA: reallocated (5) warn from 1, fail above 10; pending (197),
            // offline uncorrectable (198), reported uncorrectable (187) fail from 1.
            rule("SMART", SmartAttr, "*/5_*", Lte, 10.0, Critical),
            rule("SMART", SmartAttr, "*/5_*", Lte, 0.0, Warning),
            rule("SMART", SmartAttr, "*/197_*", Lte, 0.0, Critical),
            rule("SMART", SmartAttr, "*/198_*", Lte, 0.0, Critical),
            rule("SMART", SmartAttr, "*/187_*", Lte, 0.0, Critical),
            rule("SMART", SmartAttr, "*/199_*", Lte, 0.0, Warning),
            // SCSI grown defect list.
            rule(
                "SMART",
                SmartAttr,
                "*/scsi_grown_defect_list",
                Lte,
                10.0,
                Critical,
            ),
            // NVMe health log.
            rule("SMART", SmartAttr, "*/critical_warning", Lte, 0.0, Critical),
            rule("SMART", SmartAttr, "*/media_errors", Lte, 0.0, Critical),
            rule("SMART", SmartAttr, "*/percentage_used", Lt, 100.0, Critical),
            rule(
                "SMART",
                SmartAttr,
                "*/available_spare_margin",
                Gte,
                0.0,
                Critical,
            ),
            rule(
                "SMART",
                SmartAttr,
                "*/num_err_log_entries",
                Lte,
                0.0,
                Warning,
            ),
            // Memory and machine checks.
            rule("*", Mem, "*/ue", Lte, 0.0, Critical),
            rule("*", Mem, "*/ce", Lte, 0.0, Warning),
            rule("*", Mem, "mce/count", Lte, 0.0, Critical),
            // memtester's failed tests (deep and soak run it).
            rule("Memory", Mem, "memtester/failures", Lte, 0.0, Critical),
            // Disk surface: badblocks' bad blocks, the write/read-back
            // probe's mismatched sectors and I/O errors.
            rule("*", Disk, "*/bad_blocks", Lte, 0.0, Critical),
            rule("*", Disk, "*/mismatched_sectors", Lte, 0.0, Critical),
            rule("*", Disk, "*/io_errors", Lte, 0.0, Critical),
            // Kernel log: hardware failures seen during a stage.
            rule("*", Kmsg, "medium_error/*", Lte, 0.0, Critical),
            rule("*", Kmsg, "mce/*_uc", Lte, 0.0, Critical),
            rule("*", Kmsg, "mce/*_ce", Lte, 0.0, Warning),
            rule("*", Kmsg, "edac/*_ue", Lte, 0.0, Critical),
            rule("*", Kmsg, "edac/*_ce", Lte, 0.0, Warning),
            rule("*", Kmsg, "io_error/*", Lte, 0.0, Warning),
            rule("*", Kmsg, "aer/*", Lte, 0.0, Warning),
            rule("*", Kmsg, "throttle/*", Lte, 0.0, Warning),
            // UDP loss on the network test.
            rule("Network", Iperf, "*/lost_pct", Lte, 1.0, Critical),
        ];
        if self.profile != Profile::Quick {
            // Long runs tolerate a few corrected errors but not a stream.
            rules.push(rule("*", Mem, "*/ce", Lte, 100.0, Critical));
        }
        rules
    }
}

fn rule(stage: &str, kind: Kind, key: &str, op: Op, threshold: f64, severity: Severity) -> Rule {
    Rule {
        stage: stage
            .parse::<StageSel>()
            .expect("profile stage names are valid"),
        kind,
        key: KeySelector::new(key).expect("profile key selectors are valid globs"),
        op,
        threshold,
        nominal: 0.0,
        unit: String::new(),
        severity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_fits_its_budget() {
        let quick = Profile::Quick.definition();
        // One disk and one NIC: the demo machine. The timed stages leave
        // more than a minute of the four for inventory, SMART and the rest.
        assert!(
            quick.timed_seconds(1, 1) <= 180,
            "{}",
            quick.timed_seconds(1, 1)
        );
        assert_eq!(quick.durations.cpu_stress_s, 30);
        assert_eq!(quick.durations.memory_s, 30);
        assert_eq!(quick.durations.disk_perf_per_disk_s, 10);
        assert_eq!(quick.durations.network_per_nic_s, 5);
        assert_eq!(quick.durations.burn_s, 60);
        assert!(Profile::Soak.definition().durations.burn_s >= 24 * 3600);
        assert!(Profile::Deep.definition().timed_seconds(1, 1) >= 3600);
    }

    #[test]
    fn every_default_rule_is_valid_and_has_no_throughput_guess() {
        for p in Profile::ALL {
            let def = p.definition();
            assert_eq!(def.stages.len(), 12);
            for r in def.default_thresholds() {
                r.validate().unwrap();
                let throughput = matches!(r.kind, Kind::Fio)
                    || (r.kind == Kind::Iperf && r.key.as_str().ends_with("/bps"));
                assert!(!throughput, "{p}: profile guesses throughput: {r:?}");
            }
        }
    }

    #[test]
    fn smart_defaults_match_the_brief() {
        let rules = Profile::Quick.definition().default_thresholds();
        let verdict = |key: &str, value: f64| -> (bool, bool) {
            let applicable: Vec<_> = rules
                .iter()
                .filter(|r| r.applies_to(Stage::Smart, Kind::SmartAttr, key))
                .collect();
            assert!(!applicable.is_empty(), "no rule for {key}");
            let crit = applicable
                .iter()
                .filter(|r| r.severity == Severity::Critical)
                .all(|r| r.passes(value));
            let warn = applicable
                .iter()
                .filter(|r| r.severity == Severity::Warning)
                .all(|r| r.passes(value));
            (crit, warn)
        };
        assert_eq!(verdict("sda/5_Reallocated_Sector_Ct", 0.0), (true, true));
        assert_eq!(verdict("sda/5_Reallocated_Sector_Ct", 1.0), (true, false));
        assert_eq!(verdict("sda/5_Reallocated_Sector_Ct", 11.0), (false, false));
        assert!(!verdict("sda/197_Current_Pending_Sector", 1.0).0);
        assert_eq!(verdict("sda/199_UDMA_CRC_Error_Count", 5.0), (true, false));
        assert!(!verdict("nvme0/critical_warning", 4.0).0);
        assert!(!verdict("nvme0/media_errors", 7.0).0);
        assert!(verdict("nvme0/percentage_used", 99.0).0);
        assert!(!verdict("nvme0/percentage_used", 100.0).0);
        assert_eq!(verdict("nvme0/num_err_log_entries", 3.0), (true, false));
        assert!(!verdict("nvme0/smart_status_passed", 0.0).0);
    }
}
