//! nvidia-smi: the per-GPU query (temperature, uncorrected volatile ECC
//! errors) and its CSV answer (`--format=csv,noheader,nounits`).
//!
//! Never: panic on a row it cannot read; such a row yields nothing
//! ("[N/A]" where a GPU has no ECC, a missing column).

use std::time::Duration;

use common::measurement::Kind;

use super::Measured;
use crate::exec::ToolCommand;

/// The query: one CSV row per GPU, `index, temperature, ECC errors`.
pub fn query() -> ToolCommand {
    ToolCommand::new(
        "nvidia-smi",
        "nvidia-driver (nvidia-smi)",
        Duration::from_secs(60),
    )
    .args([
        "--query-gpu=index,temperature.gpu,ecc.errors.uncorrected.volatile.total",
        "--format=csv,noheader,nounits",
    ])
}

/// Each GPU's temperature (`temp nvidia/gpuN`) and uncorrected ECC count
/// (`mem gpuN/ue`), where the row has them.
pub fn parse(text: &str) -> Vec<Measured> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(idx) = f.first().filter(|i| !i.is_empty()) else {
            continue;
        };
        let value = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        out.extend(value(1).and_then(|t| Measured::new(Kind::Temp, format!("nvidia/gpu{idx}"), t)));
        out.extend(value(2).and_then(|e| Measured::new(Kind::Mem, format!("gpu{idx}/ue"), e)));
    }
    out
}
