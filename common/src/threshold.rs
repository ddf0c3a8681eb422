//! Threshold rules and their evaluation.
//!
//! `op` is the pass condition: a sample passes when `value op threshold`
//! (`temp lt 90` passes below 90). `within_pct` is two-sided:
//! `|value − nominal| ≤ threshold % of nominal`. NaN and infinity never pass.
//! Key selectors are globs (`coretemp/*`); `*` also crosses `/`.

use std::fmt;
use std::str::FromStr;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::measurement::Kind;
use crate::stage::Stage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Lt,
    Lte,
    Gt,
    Gte,
    WithinPct,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::WithinPct => "within_pct",
        }
    }

    /// Whether `value` passes. Any non-finite input fails.
    pub fn passes(self, value: f64, threshold: f64, nominal: f64) -> bool {
        if !(value.is_finite() && threshold.is_finite() && nominal.is_finite()) {
            return false;
        }
        match self {
            Op::Lt => value < threshold,
            Op::Lte => value <= threshold,
            Op::Gt => value > threshold,
            Op::Gte => value >= threshold,
            Op::WithinPct => (value - nominal).abs() <= (threshold / 100.0 * nominal).abs(),
        }
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "within_pct" => Op::WithinPct,
            _ => return Err(format!("unknown op {s:?} (lt lte gt gte within_pct)")),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "critical" => Ok(Severity::Critical),
            "warning" => Ok(Severity::Warning),
            _ => Err(format!("unknown severity {s:?} (critical warning)")),
        }
    }
}

/// Where a run's threshold came from (`thresholds.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Profile,
    HostOverride,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Profile => "profile",
            Source::HostOverride => "host_override",
        }
    }
}

/// Which stages a rule applies to: one stage, or `*` for any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageSel {
    Any,
    One(Stage),
}

impl StageSel {
    pub fn as_str(self) -> &'static str {
        match self {
            StageSel::Any => "*",
            StageSel::One(stage) => stage.name(),
        }
    }

    pub fn matches(self, stage: Stage) -> bool {
        match self {
            StageSel::Any => true,
            StageSel::One(s) => s == stage,
        }
    }
}

impl FromStr for StageSel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            Ok(StageSel::Any)
        } else {
            s.parse().map(StageSel::One).map_err(|e| e.to_string())
        }
    }
}

impl fmt::Display for StageSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StageSel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StageSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A glob over measurement keys, checked when it is made.
#[derive(Debug, Clone)]
pub struct KeySelector {
    pattern: String,
    matcher: GlobMatcher,
}

impl KeySelector {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let glob = Glob::new(pattern).map_err(|e| format!("bad key selector {pattern:?}: {e}"))?;
        Ok(Self {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, key: &str) -> bool {
        self.matcher.is_match(key)
    }
}

impl PartialEq for KeySelector {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Serialize for KeySelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for KeySelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeySelector::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One threshold rule, as profiles define it, spec YAML overrides it and a
/// run freezes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub stage: StageSel,
    pub kind: Kind,
    pub key: KeySelector,
    pub op: Op,
    pub threshold: f64,
    #[serde(default)]
    pub nominal: f64,
    #[serde(default)]
    pub unit: String,
    pub severity: Severity,
}

/// Why a rule is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("threshold {stage}/{kind}/{key}: unit {unit:?} is not the unit of {kind} ({want})")]
    UnitMismatch {
        stage: String,
        kind: Kind,
        key: String,
        unit: String,
        want: String,
    },
    #[error("threshold {stage}/{kind}/{key}: {field} must be a finite number")]
    NotFinite {
        stage: String,
        kind: Kind,
        key: String,
        field: &'static str,
    },
    #[error("threshold {stage}/{kind}/{key}: within_pct needs a non-zero nominal")]
    NoNominal {
        stage: String,
        kind: Kind,
        key: String,
    },
}

impl Rule {
    /// Checks units and numbers: a unit must be the kind's unit (or empty).
    pub fn validate(&self) -> Result<(), RuleError> {
        let (stage, kind, key) = (
            self.stage.to_string(),
            self.kind,
            self.key.as_str().to_string(),
        );
        for (field, v) in [("threshold", self.threshold), ("nominal", self.nominal)] {
            if !v.is_finite() {
                return Err(RuleError::NotFinite {
                    stage,
                    kind,
                    key,
                    field,
                });
            }
        }
        if !self.kind.accepts_unit(self.key.as_str(), &self.unit) {
            let want = match self.kind.unit_for_key(self.key.as_str()) {
                Some(u) => u.to_string(),
                None => self.kind.units().join(" or "),
            };
            return Err(RuleError::UnitMismatch {
                stage,
                kind,
                key,
                unit: self.unit.clone(),
                want,
            });
        }
        if self.op == Op::WithinPct && self.nominal == 0.0 {
            return Err(RuleError::NoNominal { stage, kind, key });
        }
        Ok(())
    }

    /// Whether the rule applies to a sample of `stage`, `kind`, `key`.
    pub fn applies_to(&self, stage: Stage, kind: Kind, key: &str) -> bool {
        self.stage.matches(stage) && self.kind == kind && self.key.matches(key)
    }

    pub fn passes(&self, value: f64) -> bool {
        self.op.passes(value, self.threshold, self.nominal)
    }

    /// The identity under which a host override replaces a profile rule.
    pub fn identity(&self) -> (StageSel, Kind, &str) {
        (self.stage, self.kind, self.key.as_str())
    }
}

/// The rules a run freezes: the profile's, with host overrides replacing any
/// profile rule of the same (stage, kind, key) and the rest added.
pub fn merge(profile: &[Rule], overrides: &[Rule]) -> Vec<(Rule, Source)> {
    let mut out: Vec<(Rule, Source)> = profile
        .iter()
        .filter(|p| !overrides.iter().any(|o| o.identity() == p.identity()))
        .map(|r| (r.clone(), Source::Profile))
        .collect();
    out.extend(overrides.iter().map(|r| (r.clone(), Source::HostOverride)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(stage: &str, kind: Kind, key: &str, op: Op, threshold: f64) -> Rule {
        Rule {
            stage: stage.parse().unwrap(),
            kind,
            key: KeySelector::new(key).unwrap(),
            op,
            threshold,
            nominal: 0.0,
            unit: String::new(),
            severity: Severity::Critical,
        }
    }

    #[test]
    fn op_table() {
        // (op, value, threshold, nominal, passes)
        let cases = [
            (Op::Lt, 89.9, 90.0, 0.0, true),
            (Op::Lt, 90.0, 90.0, 0.0, false),
            (Op::Lte, 90.0, 90.0, 0.0, true),
            (Op::Lte, 90.1, 90.0, 0.0, false),
            (Op::Gt, 0.1, 0.0, 0.0, true),
            (Op::Gt, 0.0, 0.0, 0.0, false),
            (Op::Gte, 10.0, 10.0, 0.0, true),
            (Op::Gte, 9.99, 10.0, 0.0, false),
            (Op::WithinPct, 3200.0, 15.0, 3200.0, true),
            (Op::WithinPct, 2720.0, 15.0, 3200.0, true),
            (Op::WithinPct, 3680.0, 15.0, 3200.0, true),
            (Op::WithinPct, 2719.0, 15.0, 3200.0, false),
            (Op::WithinPct, 3681.0, 15.0, 3200.0, false),
            (Op::Lt, f64::NAN, 90.0, 0.0, false),
            (Op::Gt, f64::INFINITY, 0.0, 0.0, false),
            (Op::Lt, f64::NEG_INFINITY, 0.0, 0.0, false),
            (Op::Lt, 1.0, f64::NAN, 0.0, false),
        ];
        for (op, v, t, n, want) in cases {
            assert_eq!(op.passes(v, t, n), want, "{v} {op:?} {t} (nominal {n})");
        }
    }

    #[test]
    fn globs_select_keys() {
        let r = rule("CPUStress", Kind::Temp, "coretemp/*", Op::Lt, 90.0);
        assert!(r.applies_to(Stage::CpuStress, Kind::Temp, "coretemp/Core 0"));
        assert!(!r.applies_to(Stage::Burn, Kind::Temp, "coretemp/Core 0"));
        assert!(!r.applies_to(Stage::CpuStress, Kind::Fan, "coretemp/Core 0"));
        assert!(!r.applies_to(Stage::CpuStress, Kind::Temp, "nvme/Composite"));
        let any = rule("*", Kind::Fio, "*/read_bw_mbps", Op::Gt, 0.0);
        assert!(any.applies_to(Stage::Burn, Kind::Fio, "nvme0n1/read_bw_mbps"));
        assert!(any.applies_to(Stage::DiskPerf, Kind::Fio, "dev/loop0/read_bw_mbps"));
        assert!(!any.applies_to(Stage::DiskPerf, Kind::Fio, "nvme0n1/write_bw_mbps"));
        assert!(KeySelector::new("a/[b").is_err());
    }

    #[test]
    fn overrides_replace_by_identity_and_add_the_rest() {
        let profile = vec![
            rule("CPUStress", Kind::Temp, "*", Op::Lt, 95.0),
            rule("SMART", Kind::SmartAttr, "*/5_*", Op::Lte, 10.0),
        ];
        let overrides = vec![
            rule("CPUStress", Kind::Temp, "*", Op::Lt, 85.0),
            rule("Burn", Kind::Temp, "*", Op::Lt, 80.0),
        ];
        let merged = merge(&profile, &overrides);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].1, Source::Profile);
        assert_eq!(merged[0].0.stage, StageSel::One(Stage::Smart));
        let cpu: Vec<_> = merged
            .iter()
            .filter(|(r, _)| r.stage == StageSel::One(Stage::CpuStress))
            .collect();
        assert_eq!(cpu.len(), 1);
        assert_eq!(cpu[0].0.threshold, 85.0);
        assert_eq!(cpu[0].1, Source::HostOverride);
    }

    #[test]
    fn validate_names_unit_mismatch() {
        let mut r = rule("CPUStress", Kind::Temp, "coretemp/*", Op::Lt, 90.0);
        r.unit = "F".into();
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("unit \"F\"") && err.contains("(C)"), "{err}");
        r.unit = "C".into();
        assert!(r.validate().is_ok());
        let mut w = rule("DiskPerf", Kind::Fio, "*/read_bw_mbps", Op::WithinPct, 15.0);
        assert!(matches!(w.validate(), Err(RuleError::NoNominal { .. })));
        w.nominal = 3200.0;
        assert!(w.validate().is_ok());
    }

    proptest! {
        #[test]
        fn non_finite_never_passes(t in -1e6f64..1e6, n in -1e6f64..1e6, pick in 0usize..3, op in 0usize..5) {
            let v = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][pick];
            let op = [Op::Lt, Op::Lte, Op::Gt, Op::Gte, Op::WithinPct][op];
            prop_assert!(!op.passes(v, t, n));
            prop_assert!(!op.passes(t, v, n));
        }

        #[test]
        fn ops_are_complementary(v in -1e9f64..1e9, t in -1e9f64..1e9) {
            prop_assert_ne!(Op::Lt.passes(v, t, 0.0), Op::Gte.passes(v, t, 0.0));
            prop_assert_ne!(Op::Gt.passes(v, t, 0.0), Op::Lte.passes(v, t, 0.0));
        }

        #[test]
        fn within_pct_is_symmetric(nominal in 1.0f64..1e6, pct in 0.0f64..100.0, d in 0.0f64..2.0) {
            let delta = nominal * pct / 100.0 * d;
            prop_assert_eq!(
                Op::WithinPct.passes(nominal + delta, pct, nominal),
                Op::WithinPct.passes(nominal - delta, pct, nominal)
            );
            prop_assert!(Op::WithinPct.passes(nominal, pct, nominal));
        }
    }
}
