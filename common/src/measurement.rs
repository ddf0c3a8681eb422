//! Measurements: kinds, their units, and the finite-value type that makes
//! NaN and infinity unrepresentable on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Timestamp;

/// What a sample measures. Spelled as in DESIGN.md's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Temp,
    Fan,
    PsuVolt,
    Power,
    SmartAttr,
    Fio,
    Iperf,
    Stress,
    Mem,
    Kmsg,
    /// What a disk's surface scan or read-back probe found: bad blocks,
    /// mismatched sectors, I/O errors (counts).
    Disk,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Temp,
        Kind::Fan,
        Kind::PsuVolt,
        Kind::Power,
        Kind::SmartAttr,
        Kind::Fio,
        Kind::Iperf,
        Kind::Stress,
        Kind::Mem,
        Kind::Kmsg,
        Kind::Disk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Temp => "temp",
            Kind::Fan => "fan",
            Kind::PsuVolt => "psu_volt",
            Kind::Power => "power",
            Kind::SmartAttr => "smart_attr",
            Kind::Fio => "fio",
            Kind::Iperf => "iperf",
            Kind::Stress => "stress",
            Kind::Mem => "mem",
            Kind::Kmsg => "kmsg",
            Kind::Disk => "disk",
        }
    }

    /// Every unit a measurement of this kind may carry (`''` for raw values).
    pub fn units(self) -> &'static [&'static str] {
        match self {
            Kind::Temp => &["C"],
            Kind::Fan => &["rpm"],
            Kind::PsuVolt => &["V"],
            Kind::Power => &["W"],
            Kind::SmartAttr => &[""],
            Kind::Fio => &["MB/s", "IOPS", "µs"],
            Kind::Iperf => &["bit/s", "count", "%"],
            Kind::Stress => &["ops/s"],
            Kind::Mem | Kind::Kmsg | Kind::Disk => &["count"],
        }
    }

    /// The unit a key of this kind is measured in, when the key's last part
    /// says it (fio and iperf keys end in their metric); otherwise the
    /// kind's only unit, or `None` when the kind has several.
    pub fn unit_for_key(self, key: &str) -> Option<&'static str> {
        let metric = key.rsplit('/').next().unwrap_or(key);
        match self {
            Kind::Fio if metric.ends_with("_bw_mbps") => Some("MB/s"),
            Kind::Fio if metric.ends_with("_iops") => Some("IOPS"),
            Kind::Fio if metric.ends_with("_us") => Some("µs"),
            Kind::Iperf if metric == "bps" || metric.ends_with("_bps") => Some("bit/s"),
            Kind::Iperf if metric == "retransmits" => Some("count"),
            Kind::Iperf if metric == "lost_pct" => Some("%"),
            _ => match self.units() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    /// Whether `key` is one interval of a throughput series (fio's
    /// `<disk>/{read,write}_interval_bw_mbps`, iperf's `<nic>/interval_bps`
    /// and `<nic>/reverse_interval_bps`): the tool's progress reports during
    /// one pass, plotted over time. A pass's own result is the key without
    /// `interval_` ([`Kind::summary_key`]); thresholds judge that one.
    pub fn is_interval_key(self, key: &str) -> bool {
        let metric = key.rsplit('/').next().unwrap_or(key);
        matches!(self, Kind::Fio | Kind::Iperf)
            && (metric.starts_with("interval_") || metric.contains("_interval_"))
    }

    /// The pass result an interval key belongs to (`sda/read_interval_bw_mbps`
    /// → `sda/read_bw_mbps`); `None` for a key that is not an interval.
    pub fn summary_key(self, key: &str) -> Option<String> {
        if !self.is_interval_key(key) {
            return None;
        }
        let (device, metric) = key.rsplit_once('/').unwrap_or(("", key));
        let metric = metric.replacen("interval_", "", 1);
        Some(if key.contains('/') {
            format!("{device}/{metric}")
        } else {
            metric
        })
    }

    /// Whether `unit` is acceptable for `key` of this kind. `''` means "the
    /// kind's unit" and is always accepted; `us` is accepted for `µs`.
    pub fn accepts_unit(self, key: &str, unit: &str) -> bool {
        if unit.is_empty() {
            return true;
        }
        let unit = if unit == "us" { "µs" } else { unit };
        match self.unit_for_key(key) {
            Some(want) => want == unit,
            None => self.units().contains(&unit),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown measurement kind {0:?} (temp fan psu_volt power smart_attr fio iperf stress mem kmsg)"
)]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// An `f64` that is known to be finite. Deserializing NaN or ±infinity fails.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Finite(f64);

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("value is not a finite number: {0}")]
pub struct NotFinite(pub f64);

impl Finite {
    pub fn new(v: f64) -> Result<Self, NotFinite> {
        if v.is_finite() {
            Ok(Finite(v))
        } else {
            Err(NotFinite(v))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Finite::new(v).map_err(serde::de::Error::custom)
    }
}

/// Longest series key, in bytes.
pub const KEY_MAX_BYTES: usize = 128;

/// Why a series key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {0} bytes; at most 128")]
    TooLong(usize),
    #[error("key has {0:?} at byte {1}; keys are printable ASCII without \" \\ * ? [ ]")]
    Char(char, usize),
}

/// A key may be printed, globbed and quoted without surprise: 1 to
/// [`KEY_MAX_BYTES`] bytes of printable ASCII (space allowed), none of
/// `"` `\` `*` `?` `[` `]` (the glob characters belong to threshold keys).
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > KEY_MAX_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    match key.char_indices().find(|&(_, c)| !key_char(c)) {
        Some((i, c)) => Err(KeyError::Char(c, i)),
        None => Ok(()),
    }
}

fn key_char(c: char) -> bool {
    (c == ' ' || c.is_ascii_graphic()) && !matches!(c, '"' | '\\' | '*' | '?' | '[' | ']')
}

/// `key` made acceptable to [`check_key`]: each refused character becomes
/// `_`, and it is cut to [`KEY_MAX_BYTES`]. For keys built from what the
/// hardware names itself (sensor labels, attribute names).
pub fn clean_key(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if key_char(c) { c } else { '_' })
        .take(KEY_MAX_BYTES)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// One measurement as the agent sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub ts: Timestamp,
    pub kind: Kind,
    pub key: String,
    pub value: Finite,
    #[serde(default)]
    pub unit: String,
    /// Ordinal of the stage the sample belongs to; `None` between stages.
    #[serde(default)]
    pub stage: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_without_quotes_or_globs() {
        for good in [
            "coretemp/Core 0",
            "nvme0n1/5_Reallocated_Sector_Ct",
            "a",
            &"k".repeat(128),
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key(&"k".repeat(129)), Err(KeyError::TooLong(129)));
        for (bad, c) in [
            ("a*b", '*'),
            ("a?", '?'),
            ("[x", '['),
            ("x]", ']'),
            ("q\"", '"'),
            ("b\\s", '\\'),
            ("t\tab", '\t'),
            ("é", 'é'),
            ("nl\n", '\n'),
        ] {
            assert!(
                matches!(check_key(bad), Err(KeyError::Char(got, _)) if got == c),
                "{bad:?}"
            );
        }
        assert_eq!(clean_key("fan*1\tx"), "fan_1_x");
        assert_eq!(clean_key(""), "_");
        assert_eq!(clean_key(&"é".repeat(200)).len(), 128);
        assert_eq!(check_key(&clean_key("ünïcode [label]")), Ok(()));
    }

    #[test]
    fn units_by_kind_and_key() {
        let cases = [
            (Kind::Temp, "coretemp/Core 0", "C", true),
            (Kind::Temp, "coretemp/*", "F", false),
            (Kind::Temp, "x", "", true),
            (Kind::Fio, "*/read_bw_mbps", "MB/s", true),
            (Kind::Fio, "nvme0n1/read_bw_mbps", "IOPS", false),
            (Kind::Fio, "sda/write_clat_p99_us", "us", true),
            (Kind::Fio, "sda/write_clat_p99_us", "µs", true),
            (Kind::Fio, "*", "IOPS", true),
            (Kind::Fio, "*", "rpm", false),
            (Kind::Iperf, "eth0/bps", "bit/s", true),
            (Kind::Iperf, "eth0/lost_pct", "%", true),
            (Kind::Iperf, "eth0/lost_pct", "bit/s", false),
            (Kind::Iperf, "eth0/reverse_bps", "bit/s", true),
            (Kind::Iperf, "eth0/interval_bps", "bit/s", true),
            (Kind::Fio, "sda/write_interval_bw_mbps", "MB/s", true),
            (Kind::SmartAttr, "sda/5_Reallocated_Sector_Ct", "", true),
            (Kind::SmartAttr, "sda/5_Reallocated_Sector_Ct", "C", false),
            (Kind::Power, "rapl/package-0", "W", true),
            (Kind::Kmsg, "io_error/sda", "count", true),
        ];
        for (kind, key, unit, ok) in cases {
            assert_eq!(kind.accepts_unit(key, unit), ok, "{kind} {key} {unit}");
        }
    }

    #[test]
    fn interval_keys_name_their_pass_result() {
        let cases = [
            (
                Kind::Fio,
                "sda/read_interval_bw_mbps",
                Some("sda/read_bw_mbps"),
            ),
            (
                Kind::Fio,
                "nvme0n1/write_interval_bw_mbps",
                Some("nvme0n1/write_bw_mbps"),
            ),
            (Kind::Iperf, "eth0/interval_bps", Some("eth0/bps")),
            (
                Kind::Iperf,
                "eth0/reverse_interval_bps",
                Some("eth0/reverse_bps"),
            ),
            (Kind::Fio, "sda/read_bw_mbps", None),
            (Kind::Iperf, "eth0/bps", None),
            // A device may be called anything; only the metric counts.
            (Kind::Iperf, "interval_0/bps", None),
            (Kind::Temp, "x/interval_bps", None),
        ];
        for (kind, key, want) in cases {
            assert_eq!(kind.summary_key(key).as_deref(), want, "{kind} {key}");
            assert_eq!(kind.is_interval_key(key), want.is_some(), "{kind} {key}");
        }
    }

    #[test]
    fn finite_refuses_nan_and_infinity() {
        assert!(Finite::new(f64::NAN).is_err());
        assert!(Finite::new(f64::INFINITY).is_err());
        assert!(Finite::new(f64::NEG_INFINITY).is_err());
        assert_eq!(Finite::new(1.5).unwrap().get(), 1.5);
        assert!(serde_json::from_str::<Finite>("1e999").is_err());
        assert!(serde_json::from_str::<Finite>("\"NaN\"").is_err());
    }

    #[test]
    fn sample_wire_shape() {
        let s: Sample = serde_json::from_str(
            r#"{"ts":"2026-11-23T09:15:43.123Z","kind":"temp","key":"coretemp/Core 0","value":61.5,"unit":"C","stage":4}"#,
        )
        .unwrap();
        assert_eq!(s.kind, Kind::Temp);
        assert_eq!(s.stage, Some(4));
        assert!(serde_json::from_str::<Sample>(
            r#"{"ts":"2026-11-23T09:15:43.123Z","kind":"heat","key":"k","value":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Sample>(
            r#"{"ts":"2026-11-23T09:15:43.123Z","kind":"temp","key":"k","value":"1"}"#
        )
        .is_err());
    }
}
