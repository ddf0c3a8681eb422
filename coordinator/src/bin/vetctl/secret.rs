//! Secrets vetctl writes to disk (host tokens, hold keys): mode 0600 from
//! the first byte, through a private temp file renamed into place.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};

/// Whether an existing file at the path may be replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    Refuse,
}

/// Writes `contents` to `path` with mode 0600, never readable by others.
pub fn write_private(path: &Path, contents: &str, existing: Existing) -> anyhow::Result<()> {
    if existing == Existing::Refuse && path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
