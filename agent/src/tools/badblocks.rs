//! badblocks: the destructive write-mode command over a block range, and
//! its `-o` file (one bad block number per line) read as sector ranges.
//!
//! Never: run anything; the stage runs the command this builds.

use std::path::Path;
use std::time::Duration;

use crate::exec::ToolCommand;
use crate::interlock::WriteGrant;

/// badblocks' block size.
pub const BLOCK: u64 = 4096;
/// Stop counting after this many bad blocks: the disk has failed anyway.
const MAX_BAD: u32 = 256;

/// `badblocks -w` over blocks `first..=last` of the granted disk, bad blocks
/// listed in `out_file`. Four patterns, each written and read back: about
/// eight passes of I/O, which the timeout allows for.
pub fn write_test(grant: &WriteGrant, first: u64, last: u64, out_file: &Path) -> ToolCommand {
    let bytes = (last + 1 - first) * BLOCK;
    let secs = 600 + bytes / (20 << 20) * 8;
    ToolCommand::new("badblocks", "e2fsprogs", Duration::from_secs(secs))
        .args([
            "-w",
            // The agent holds the disk with O_EXCL from its check to the end
            // of this write, which badblocks' own in-use probe sees as busy;
            // -f lets it run under that hold (the interlock checked mounts,
            // swap and holders, and nobody can take the disk meanwhile).
            "-f",
            "-b",
            &BLOCK.to_string(),
            "-e",
            &MAX_BAD.to_string(),
            "-o",
        ])
        .arg(out_file)
        .arg(grant.device())
        .arg(last.to_string())
        .arg(first.to_string())
}

/// Parses badblocks' `-o` output: one block number per line.
pub fn parse(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<u64>()
                .map_err(|_| format!("badblocks output line {l:?} is not a block number"))
        })
        .collect()
}

/// Bad blocks as inclusive 512-byte sector ranges, adjacent blocks merged.
pub fn sector_ranges(blocks: &[u64], block_size: u64) -> Vec<(u64, u64)> {
    let per = block_size / 512;
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for b in sorted {
        let (first, last) = (b * per, b * per + per - 1);
        match out.last_mut() {
            Some(r) if r.1 + 1 == first => r.1 = last,
            _ => out.push((first, last)),
        }
    }
    out
}

/// The first ten ranges as a person reads them.
pub fn describe(ranges: &[(u64, u64)]) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .take(10)
        .map(|(a, b)| format!("{a}-{b}"))
        .collect();
    let more = if ranges.len() > 10 {
        format!(" and {} more ranges", ranges.len() - 10)
    } else {
        String::new()
    };
    format!("sectors {}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_recorded_pass_lists_no_block() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/misc/badblocks-1.47-loop-clean.txt"
        ))
        .unwrap();
        assert_eq!(parse(&text).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn bad_blocks_become_merged_sector_ranges() {
        assert_eq!(parse("12\n13\n40\n").unwrap(), [12, 13, 40]);
        assert!(parse("12\nx\n").is_err());
        assert_eq!(sector_ranges(&[13, 12, 40], 4096), [(96, 111), (320, 327)]);
        assert!(describe(&sector_ranges(&[1], 4096)).contains("sectors 8-15"));
    }

    #[test]
    fn the_write_test_names_its_range_last_block_first() {
        let cmd = write_test(
            &WriteGrant::for_test("loop3"),
            0,
            4095,
            Path::new("/w/bb.txt"),
        );
        assert_eq!(cmd.program, "badblocks");
        let argv: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv[argv.len() - 3..], ["/dev/loop3", "4095", "0"]);
        assert!(argv.contains(&"-w".to_string()));
    }
}
