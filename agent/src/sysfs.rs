//! Small readers for /proc and /sys files: trimmed text, numbers, sorted
//! directory entries. A missing or unreadable file is `None`/empty, never an
//! error: hardware comes and goes.

use std::fs;
use std::path::Path;

pub fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

pub fn read_num(p: &Path) -> Option<f64> {
    read(p)?.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Entry names of a directory, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
