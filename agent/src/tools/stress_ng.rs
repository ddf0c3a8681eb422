//! `stress-ng --metrics --yaml FILE` (0.09 and later): `<stressor>/bogo_ops_per_s`
//! from each stressor's real-time bogo-ops rate.

use std::path::Path;
use std::time::Duration;

use crate::exec::ToolCommand;
use serde::Deserialize;

use super::{Measured, ParseError, ToolResult};
use common::measurement::Kind;

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    metrics: Option<Vec<Metric>>,
    #[serde(rename = "system-info", default)]
    system_info: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Metric {
    stressor: String,
    #[serde(rename = "bogo-ops-per-second-real-time")]
    real_time: Option<f64>,
    #[serde(rename = "bogo-ops")]
    bogo_ops: Option<f64>,
}

pub fn parse(bytes: &[u8]) -> Result<ToolResult, ParseError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ParseError::new("stress-ng", "not UTF-8 text"))?;
    let doc: Doc = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        ParseError::new(
            "stress-ng",
            format!(
                "not YAML metrics: {}",
                msg.lines().next().unwrap_or_default()
            ),
        )
    })?;
    if doc.metrics.is_none() && doc.system_info.is_none() {
        return Err(ParseError::new(
            "stress-ng",
            "no \"metrics\" or \"system-info\"",
        ));
    }
    let mut out = ToolResult::default();
    for m in doc.metrics.unwrap_or_default() {
        if let Some(v) = m
            .real_time
            .and_then(|v| Measured::new(Kind::Stress, format!("{}/bogo_ops_per_s", m.stressor), v))
        {
            out.measurements.push(v);
        }
        if m.bogo_ops == Some(0.0) {
            out.notes.push(format!(
                "stressor {} completed no bogo operations",
                m.stressor
            ));
        }
    }
    if out.measurements.is_empty() {
        out.errors.push("no stressor metrics in the output".into());
    }
    Ok(out)
}
/// `stress-ng STRESSORS --verify --metrics` for `secs`, its metrics
/// written as YAML to `yaml`.
pub fn command(stressors: &[&str], secs: u64, yaml: &Path) -> ToolCommand {
    ToolCommand::new("stress-ng", "stress-ng", Duration::from_secs(secs + 60))
        .args(stressors.iter().copied())
        .args(["--verify", "--metrics", "--timeout"])
        .arg(format!("{secs}s"))
        .arg("--yaml")
        .arg(yaml)
}
