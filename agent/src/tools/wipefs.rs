//! wipefs: the read-only probe for data signatures (partition tables,
//! filesystems, RAID members) and its `--json` answer.
//!
//! Never: build a command that erases; only `--json` listing, which writes
//! nothing.

use std::time::Duration;

use crate::exec::ToolCommand;

/// `wipefs --json DEV`: lists signatures, changes nothing.
pub fn probe(dev: &str) -> ToolCommand {
    ToolCommand::new("wipefs", "util-linux", Duration::from_secs(60))
        .arg("--json")
        .arg(dev)
}

/// Signatures `wipefs` finds (partition tables and filesystems), by type.
pub fn parse(stdout: &[u8]) -> Result<Vec<String>, String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| format!("wipefs output not JSON: {e}"))?;
    let sigs = v
        .get("signatures")
        .and_then(|s| s.as_array())
        .ok_or("wipefs JSON without \"signatures\"")?;
    Ok(sigs
        .iter()
        .map(|s| {
            let t = s.get("type").and_then(|t| t.as_str()).unwrap_or("unknown");
            let off = s.get("offset").and_then(|t| t.as_str()).unwrap_or("?");
            format!("{t} at {off}")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../fixtures/misc/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn recorded_signatures_are_named_with_their_offsets() {
        assert_eq!(
            parse(&recorded("wipefs-2.38-loop-gpt.json")).unwrap(),
            ["gpt at 0x200", "gpt at 0x3fffe00", "PMBR at 0x1fe"]
        );
        assert_eq!(
            parse(&recorded("wipefs-2.38-loop-ext4.json")).unwrap(),
            ["ext4 at 0x438"]
        );
        assert!(parse(&recorded("wipefs-2.38-loop-blank.json"))
            .unwrap()
            .is_empty());
        // No signature at all: wipefs may print nothing.
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{}").is_err());
    }
}
