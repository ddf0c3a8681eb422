//! The host spec YAML (`hosts.expected_spec_yaml`) and the spec-vs-inventory
//! diff that SpecValidate and Firmware record as `spec_diffs`.
//!
//! Every part of a spec is optional; an unknown key is an error that names
//! it, and so is a threshold whose unit is not its kind's.

use std::cmp::Ordering;
use std::fmt;

use globset::Glob;
use serde::{Deserialize, Serialize};

use crate::inventory::{FirmwareComponent, Inventory};
use crate::threshold::Rule;
use crate::version;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    #[serde(default)]
    pub cpu: Option<CpuSpec>,
    #[serde(default)]
    pub memory: Option<MemorySpec>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    #[serde(default)]
    pub firmware: Option<FirmwareSpec>,
    #[serde(default)]
    pub thresholds: Vec<Rule>,
    #[serde(default)]
    pub ignore_diffs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// Exact model string or a glob.
    pub model: Option<String>,
    pub logical_cores: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    pub total_gib: Option<f64>,
    /// Allowed deviation of the total, in percent (default 3).
    pub tolerance_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Model glob; absent matches every disk.
    pub model: Option<String>,
    pub count: Option<u32>,
    /// Nominal size in GB (10^9 bytes); matched within 2 %.
    pub size_gb: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Kernel driver; absent matches every NIC.
    pub driver: Option<String>,
    pub count: Option<u32>,
    pub speed_mbps: Option<u64>,
}

/// Minimum firmware versions per component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FirmwareSpec {
    pub bios: Option<String>,
    pub bmc: Option<String>,
    pub nic: Option<String>,
    pub hba: Option<String>,
    pub microcode: Option<String>,
    pub nvme_fw: Option<String>,
}

impl FirmwareSpec {
    fn minimums(&self) -> Vec<(&'static str, &str)> {
        [
            ("bios", &self.bios),
            ("bmc", &self.bmc),
            ("nic", &self.nic),
            ("hba", &self.hba),
            ("microcode", &self.microcode),
            ("nvme_fw", &self.nvme_fw),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.as_deref().map(|v| (c, v)))
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec YAML: {0}")]
    Yaml(String),
    #[error("spec YAML: {0}")]
    Invalid(String),
}

impl HostSpec {
    /// Parses and checks a spec. An empty document is an empty spec.
    pub fn parse(yaml: &str) -> Result<HostSpec, SpecError> {
        if yaml.trim().is_empty() {
            return Ok(HostSpec::default());
        }
        let spec: HostSpec = serde_saphyr::from_str(yaml).map_err(|e| {
            // The parser's message ends with a source excerpt; keep the one line.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            SpecError::Yaml(first.trim_start_matches("error: ").to_string())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), SpecError> {
        for (i, rule) in self.thresholds.iter().enumerate() {
            rule.validate()
                .map_err(|e| SpecError::Invalid(format!("thresholds[{i}]: {e}")))?;
        }
        let globs = self
            .cpu
            .iter()
            .filter_map(|c| c.model.as_ref().map(|m| ("cpu.model".to_string(), m)));
        let disk_globs = self
            .disks
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.model.as_ref().map(|m| (format!("disks[{i}].model"), m)));
        for (field, pattern) in globs.chain(disk_globs) {
            Glob::new(pattern).map_err(|e| SpecError::Invalid(format!("{field}: {e}")))?;
        }
        if let Some(m) = &self.memory {
            for (field, v) in [
                ("memory.total_gib", m.total_gib),
                ("memory.tolerance_pct", m.tolerance_pct),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(SpecError::Invalid(format!(
                        "{field}: must be a non-negative number"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DiffSeverity {
    Critical,
    Warning,
    Info,
}

impl DiffSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffSeverity::Critical => "critical",
            DiffSeverity::Warning => "warning",
            DiffSeverity::Info => "info",
        }
    }
}

impl fmt::Display for DiffSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One expected-vs-actual divergence (`spec_diffs` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SpecDiff {
    pub field: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub severity: DiffSeverity,
    pub ignored: bool,
}

fn glob_matches(pattern: &str, value: &str) -> bool {
    Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(value))
        .unwrap_or(false)
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Compares an inventory with the spec's hardware parts.
pub fn diff_inventory(spec: &HostSpec, inv: &Inventory) -> Vec<SpecDiff> {
    let mut out = Vec::new();
    let mut push = |field: String, expected: String, actual: String, severity| {
        let ignored = spec.ignore_diffs.contains(&field);
        out.push(SpecDiff {
            field,
            expected: Some(expected),
            actual: Some(actual),
            severity,
            ignored,
        });
    };
    if let Some(cpu) = &spec.cpu {
        if let Some(model) = &cpu.model {
            if !glob_matches(model, inv.cpu.model.trim()) {
                push(
                    "cpu.model".into(),
                    model.clone(),
                    inv.cpu.model.clone(),
                    DiffSeverity::Critical,
                );
            }
        }
        if let Some(cores) = cpu.logical_cores {
            if cores != inv.cpu.logical_cores {
                push(
                    "cpu.logical_cores".into(),
                    cores.to_string(),
                    inv.cpu.logical_cores.to_string(),
                    DiffSeverity::Critical,
                );
            }
        }
    }
    if let Some(mem) = &spec.memory {
        if let Some(want) = mem.total_gib {
            let tol = mem.tolerance_pct.unwrap_or(3.0);
            let got = inv.memory.total_gib();
            if (got - want).abs() > want * tol / 100.0 {
                push(
                    "memory.total_gib".into(),
                    num(want),
                    num(got),
                    DiffSeverity::Critical,
                );
            }
        }
    }
    for (i, d) in spec.disks.iter().enumerate() {
        let matching: Vec<_> = inv
            .disks
            .iter()
            .filter(|disk| {
                d.model
                    .as_deref()
                    .is_none_or(|m| glob_matches(m, disk.model.trim()))
            })
            .collect();
        if let Some(count) = d.count {
            if matching.len() != count as usize {
                push(
                    format!("disks[{i}].count"),
                    count.to_string(),
                    matching.len().to_string(),
                    DiffSeverity::Critical,
                );
            }
        }
        if let Some(gb) = d.size_gb {
            for disk in &matching {
                let got = disk.size_bytes as f64 / 1e9;
                if (got - gb).abs() > gb * 0.02 {
                    push(
                        format!("disks[{i}].size_gb"),
                        num(gb),
                        format!("{} ({})", num(got.round()), disk.name),
                        DiffSeverity::Critical,
                    );
                }
            }
        }
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let matching: Vec<_> = inv
            .nics
            .iter()
            .filter(|nic| n.driver.as_deref().is_none_or(|d| d == nic.driver))
            .collect();
        if let Some(count) = n.count {
            if matching.len() != count as usize {
                push(
                    format!("nics[{i}].count"),
                    count.to_string(),
                    matching.len().to_string(),
                    DiffSeverity::Critical,
                );
            }
        }
        if let Some(speed) = n.speed_mbps {
            for nic in &matching {
                if nic.speed_mbps.is_none_or(|s| s < speed) {
                    let got = nic
                        .speed_mbps
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    push(
                        format!("nics[{i}].speed_mbps"),
                        speed.to_string(),
                        format!("{got} ({})", nic.name),
                        DiffSeverity::Warning,
                    );
                }
            }
        }
    }
    out
}

/// Compares firmware snapshots with the spec's minimum versions: below the
/// minimum is critical; a component the spec names but the host lacks is a
/// warning (nothing to compare).
pub fn diff_firmware(spec: &HostSpec, components: &[FirmwareComponent]) -> Vec<SpecDiff> {
    let Some(fw) = &spec.firmware else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (component, minimum) in fw.minimums() {
        let field = format!("firmware.{component}");
        let ignored = spec.ignore_diffs.contains(&field);
        let found: Vec<_> = components
            .iter()
            .filter(|c| c.component == component)
            .collect();
        if found.is_empty() {
            out.push(SpecDiff {
                field,
                expected: Some(format!(">= {minimum}")),
                actual: None,
                severity: DiffSeverity::Warning,
                ignored,
            });
            continue;
        }
        for c in found {
            if version::compare(&c.version, minimum) == Ordering::Less {
                out.push(SpecDiff {
                    field: field.clone(),
                    expected: Some(format!(">= {minimum}")),
                    actual: Some(format!("{} ({})", c.version, c.identifier)),
                    severity: DiffSeverity::Critical,
                    ignored,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{CpuInfo, DiskInfo, MemoryInfo, NicInfo};

    const DESIGN_EXAMPLE: &str = r#"
cpu: {model: "AMD EPYC 7443P", logical_cores: 48}
memory: {total_gib: 256, tolerance_pct: 2}
disks:
  - {model: "SAMSUNG MZQL23T8HCLS*", count: 2, size_gb: 3840}
nics:
  - {driver: mlx5_core, count: 2, speed_mbps: 25000}
firmware:                       # minimum versions (version-aware compare)
  bios: "2.10.2"
  nvme_fw: "GDC5902Q"
thresholds:                     # per-host overrides, source = host_override
  - {stage: CPUStress, kind: temp, key: "coretemp/*", op: lt, threshold: 90, unit: C, severity: critical}
  - {stage: DiskPerf, kind: fio, key: "*/read_bw_mbps", op: within_pct, threshold: 15, nominal: 3200, unit: MB/s, severity: warning}
ignore_diffs: [memory.total_gib]
"#;

    fn inventory() -> Inventory {
        let disk = |name: &str| DiskInfo {
            name: name.into(),
            model: "SAMSUNG MZQL23T8HCLS-00A07".into(),
            size_bytes: 3_840_755_982_336,
            ..Default::default()
        };
        let nic = |name: &str, last: u8| NicInfo {
            name: name.into(),
            mac: crate::mac::Mac([0x52, 0x54, 0, 0, 0, last]),
            driver: "mlx5_core".into(),
            speed_mbps: Some(25000),
            firmware: None,
        };
        Inventory {
            cpu: CpuInfo {
                model: "AMD EPYC 7443P 24-Core Processor".into(),
                logical_cores: 48,
                sockets: 1,
                microcode: None,
            },
            memory: MemoryInfo {
                total_bytes: 256 * (1 << 30),
            },
            disks: vec![disk("nvme0n1"), disk("nvme1n1")],
            nics: vec![nic("ens1f0", 1), nic("ens1f1", 2)],
            ..Default::default()
        }
    }

    #[test]
    fn design_example_parses() {
        let spec = HostSpec::parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(spec.cpu.as_ref().unwrap().logical_cores, Some(48));
        assert_eq!(spec.thresholds.len(), 2);
        assert_eq!(spec.thresholds[1].nominal, 3200.0);
        assert_eq!(spec.ignore_diffs, vec!["memory.total_gib"]);
        assert_eq!(HostSpec::parse("").unwrap(), HostSpec::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        for (yaml, key) in [
            ("cpuu: {}", "cpuu"),
            ("cpu: {model: x, cores: 4}", "cores"),
            ("disks: [{modle: x}]", "modle"),
            ("firmware: {bois: '1'}", "bois"),
            ("thresholds: [{stage: SMART, kind: smart_attr, key: '*', op: lt, threshold: 1, severity: critical, colour: red}]", "colour"),
        ] {
            let err = HostSpec::parse(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn bad_thresholds_are_refused_with_the_key() {
        let err = HostSpec::parse("thresholds: [{stage: CPUStress, kind: temp, key: 'coretemp/*', op: lt, threshold: 90, unit: F, severity: critical}]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thresholds[0]") && err.contains("coretemp/*") && err.contains("\"F\""),
            "{err}"
        );
        for yaml in [
            "thresholds: [{stage: Nope, kind: temp, key: '*', op: lt, threshold: 90, severity: critical}]",
            "thresholds: [{stage: CPUStress, kind: temp, key: '*', op: below, threshold: 90, severity: critical}]",
            "thresholds: [{stage: CPUStress, kind: temp, key: '*', op: lt, severity: critical}]",
            "thresholds: [{stage: CPUStress, kind: temp, key: '*', op: lt, threshold: .nan, severity: critical}]",
            "memory: {total_gib: -1}",
            "cpu: [1, 2]",
        ] {
            assert!(HostSpec::parse(yaml).is_err(), "{yaml} parsed");
        }
    }

    #[test]
    fn matching_inventory_has_no_diffs() {
        let spec = HostSpec::parse(DESIGN_EXAMPLE).unwrap();
        let spec = HostSpec {
            cpu: Some(CpuSpec {
                model: Some("AMD EPYC 7443P*".into()),
                logical_cores: Some(48),
            }),
            ..spec
        };
        assert_eq!(diff_inventory(&spec, &inventory()), vec![]);
    }

    #[test]
    fn diffs_table() {
        let spec = HostSpec::parse(DESIGN_EXAMPLE).unwrap();
        let mut inv = inventory();
        inv.cpu.logical_cores = 24;
        inv.memory.total_bytes = 192 * (1 << 30);
        inv.disks.pop();
        inv.nics[1].speed_mbps = Some(10000);
        let diffs = diff_inventory(&spec, &inv);
        let got: Vec<_> = diffs
            .iter()
            .map(|d| (d.field.as_str(), d.severity, d.ignored))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cpu.model", DiffSeverity::Critical, false),
                ("cpu.logical_cores", DiffSeverity::Critical, false),
                ("memory.total_gib", DiffSeverity::Critical, true),
                ("disks[0].count", DiffSeverity::Critical, false),
                ("nics[0].speed_mbps", DiffSeverity::Warning, false),
            ]
        );
        assert_eq!(diffs[3].expected.as_deref(), Some("2"));
        assert_eq!(diffs[3].actual.as_deref(), Some("1"));
        assert_eq!(diffs[4].actual.as_deref(), Some("10000 (ens1f1)"));
    }

    #[test]
    fn firmware_below_minimum_is_critical() {
        let spec = HostSpec::parse(DESIGN_EXAMPLE).unwrap();
        let fw = |component: &str, id: &str, version: &str| FirmwareComponent {
            component: component.into(),
            identifier: id.into(),
            version: version.into(),
            vendor: String::new(),
            raw: serde_json::json!({}),
        };
        let diffs = diff_firmware(
            &spec,
            &[
                fw("bios", "system", "2.9.4"),
                fw("nvme_fw", "nvme0", "GDC5902Q"),
                fw("nvme_fw", "nvme1", "GDC5602Q"),
            ],
        );
        let got: Vec<_> = diffs
            .iter()
            .map(|d| (d.field.as_str(), d.severity, d.actual.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "firmware.bios",
                    DiffSeverity::Critical,
                    Some("2.9.4 (system)")
                ),
                (
                    "firmware.nvme_fw",
                    DiffSeverity::Critical,
                    Some("GDC5602Q (nvme1)")
                ),
            ]
        );
        let missing = diff_firmware(&spec, &[]);
        assert!(missing
            .iter()
            .all(|d| d.severity == DiffSeverity::Warning && d.actual.is_none()));
        assert_eq!(missing.len(), 2);
    }
}
