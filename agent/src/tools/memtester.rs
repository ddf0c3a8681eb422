//! memtester's result. memtester has no machine-readable report; its exit
//! status is the structured result (memtester(8): the OR of 0x01 allocation
//! or locking error, 0x02 stuck-address failure, 0x04 failure in another
//! test). `FAILURE:` lines from stderr are kept only as the detail shown to
//! the operator.

use std::time::Duration;

use super::ToolResult;
use crate::exec::ToolCommand;

/// One memtester pass over `mib` MiB, stopped after `secs`.
pub fn one_pass(mib: u64, secs: u64) -> ToolCommand {
    ToolCommand::new("memtester", "memtester", Duration::from_secs(secs))
        .arg(format!("{mib}M"))
        .arg("1")
}

/// Meaning of each bit of memtester's exit status.
pub const EXIT_BITS: [&str; 3] = [
    "could not allocate or lock the memory (or bad invocation)",
    "stuck address test failed",
    "a pattern test failed",
];

/// Reads a finished memtester's exit code and stderr. Bit 0 means
/// memtester could not test (a tool error); bits 1–2 are the failures it
/// found in the memory, kept with their `FAILURE:` lines as facts for the
/// coordinator to judge (see [`MemtesterResult::failure_count`]).
pub fn read(exit_code: i32, stderr: &str) -> MemtesterResult {
    let failures: Vec<String> = failure_lines(stderr);
    let bits = exit_code as u32;
    let mut r = MemtesterResult::default();
    for (i, meaning) in EXIT_BITS.iter().enumerate() {
        if bits & (1 << i) != 0 {
            if i == 0 {
                r.result.errors.push(meaning.to_string());
            } else {
                r.memory_failures.push(meaning.to_string());
            }
        }
    }
    if bits & !0b111 != 0 {
        r.result
            .errors
            .push(format!("unexpected exit status {exit_code}"));
    }
    r.memory_failures.extend(failures);
    r
}

/// The `FAILURE:` lines memtester printed (at most 20).
pub fn failure_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.find("FAILURE").map(|i| l[i..].trim().to_string()))
        .take(20)
        .collect()
}

/// What memtester found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemtesterResult {
    /// memtester could not test.
    pub result: ToolResult,
    /// Memory errors found, empty when none.
    pub memory_failures: Vec<String>,
}

impl MemtesterResult {
    /// How many failures memtester found: its `FAILURE:` lines, or the
    /// failing tests its exit status names when it printed none.
    pub fn failure_count(&self) -> usize {
        let lines = self
            .memory_failures
            .iter()
            .filter(|f| f.starts_with("FAILURE"))
            .count();
        lines.max(self.memory_failures.len() - lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_bits_split_tool_errors_from_memory_failures() {
        assert_eq!(read(0, ""), MemtesterResult::default());
        let r = read(1, "");
        assert_eq!(r.result.errors.len(), 1);
        assert!(r.memory_failures.is_empty());
        let r = read(6, "");
        assert_eq!(r.memory_failures.len(), 2, "{r:?}");
        assert!(r.result.errors.is_empty());
        assert!(!read(64, "").result.errors.is_empty());
        assert_eq!(read(0, "").failure_count(), 0);
        assert_eq!(
            read(4, "").failure_count(),
            1,
            "a failing test without a line"
        );
    }

    #[test]
    fn failure_lines_count_over_the_exit_bits() {
        // The line memtester's compare_regions (tests.c) prints to stderr.
        let line = |a: u32, b: u32, at: u32| {
            format!("FAILURE: 0x{a:08x} != 0x{b:08x} at offset 0x{at:08x}.\n")
        };
        let stderr = format!(
            "{}{}{}",
            line(1, 3, 0x10),
            line(2, 6, 0x20),
            line(4, 5, 0x30)
        );
        let stderr = stderr.as_str();
        let r = read(4, stderr);
        assert_eq!(r.failure_count(), 3, "{r:?}");
        assert!(r
            .memory_failures
            .iter()
            .any(|f| f.contains("at offset 0x00000020")));
    }
}
