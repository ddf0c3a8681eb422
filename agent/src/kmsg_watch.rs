//! Follows the kernel log (`/dev/kmsg`) from the moment the run starts and
//! passes on every hardware failure it reports (see `tools::kmsg`).
//!
//! Never: replay messages from before the run (it seeks to the end first),
//! or block the async runtime (reads happen on a thread of their own).

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::tools::kmsg::{classify_record, KernelError, Record};

/// Starts following `path`; failures arrive on the receiver. The thread
/// ends at the first record after the receiver is dropped.
pub fn spawn(path: PathBuf) -> std::io::Result<mpsc::UnboundedReceiver<(Record, KernelError)>> {
    let mut f = std::fs::File::open(&path)?;
    // On /dev/kmsg, SEEK_END means "only records logged from now on".
    f.seek(SeekFrom::End(0))?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("kmsg-watch".into())
        .spawn(move || {
            // One read returns one record; records are at most a few KiB.
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        for line in text.lines() {
                            if let Some(found) = classify_record(line) {
                                if tx.send(found).is_err() {
                                    return;
                                }
                            }
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                    // Records were overwritten before we read them: go on.
                    Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "kernel log watch stopped");
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}
