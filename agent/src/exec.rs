//! The only place that spawns processes. Each tool runs in its own process
//! group with a timeout; on timeout or abort the whole group is killed
//! (SIGKILL to the group), so a stress tool's workers die with it. stdout is
//! collected, stderr drained concurrently (a full pipe never blocks the
//! child) and its tail kept for the error message.
//!
//! Never: decide whether a tool's exit status is a failure (smartctl's is a
//! bit mask); that is the caller's, per tool.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 2048;

/// A tool invocation.
#[derive(Debug, Clone)]
pub struct ToolCommand {
    /// Program name, looked up in PATH.
    pub program: &'static str,
    /// Debian package that provides it (for the "not installed" error).
    pub package: &'static str,
    pub args: Vec<OsString>,
    pub timeout: Duration,
}

impl ToolCommand {
    pub fn new(program: &'static str, package: &'static str, timeout: Duration) -> Self {
        Self {
            program,
            package,
            args: Vec::new(),
            timeout,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// What a finished tool left behind.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
    pub elapsed: Duration,
}

/// Why running a tool did not give us its output.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} not found; install package `{package}`")]
    NotInstalled {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} still running after {after:?}; process group killed")]
    TimedOut {
        tool: &'static str,
        after: Duration,
        stderr_tail: String,
    },
    #[error("{tool} aborted: {reason}; process group killed")]
    Aborted { tool: &'static str, reason: String },
    #[error("{tool}: {source}")]
    Io {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn kill_group(pgid: u32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    // The group may be gone already; nothing to do then.
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
}

/// Runs `cmd` to completion, its timeout, or `abort` (with the reason the
/// token's owner gives through `abort_reason`), whichever comes first.
pub async fn run(
    cmd: &ToolCommand,
    abort: &CancellationToken,
    abort_reason: impl Fn() -> String,
) -> Result<ToolOutput, ToolError> {
    let tool = cmd.program;
    let started = Instant::now();
    let mut child = Command::new(cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::NotInstalled {
                tool,
                package: cmd.package,
            },
            _ => ToolError::Io { tool, source: e },
        })?;
    let pgid = child.id().ok_or_else(|| ToolError::Io {
        tool,
        source: std::io::Error::other("child exited before its id was read"),
    })?;
    let mut stdout = child.stdout.take().ok_or_else(|| ToolError::Io {
        tool,
        source: std::io::Error::other("no stdout pipe"),
    })?;
    let mut stderr = child.stderr.take().ok_or_else(|| ToolError::Io {
        tool,
        source: std::io::Error::other("no stderr pipe"),
    })?;
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).await.map(|_| buf)
    });
    let err_task = tokio::spawn(async move {
        // Keep reading so the pipe never fills; keep only the tail.
        let mut kept = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > 4 * STDERR_TAIL {
                        kept.drain(..kept.len() - STDERR_TAIL);
                    }
                }
            }
        }
        kept
    });
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        _ = tokio::time::sleep(cmd.timeout) => Err(None),
        _ = abort.cancelled() => Err(Some(abort_reason())),
    };
    match outcome {
        Ok(status) => {
            // The leader is gone; make sure no worker it left outlives it.
            kill_group(pgid);
            let status = status.map_err(|e| ToolError::Io { tool, source: e })?;
            let stdout = out_task
                .await
                .map_err(|e| ToolError::Io {
                    tool,
                    source: std::io::Error::other(e),
                })?
                .map_err(|e| ToolError::Io { tool, source: e })?;
            let stderr = err_task.await.unwrap_or_default();
            Ok(ToolOutput {
                status,
                stdout,
                stderr_tail: tail(&stderr),
                elapsed: started.elapsed(),
            })
        }
        Err(reason) => {
            kill_group(pgid);
            let _ = child.wait().await;
            out_task.abort();
            let stderr = err_task.await.unwrap_or_default();
            Err(match reason {
                None => ToolError::TimedOut {
                    tool,
                    after: cmd.timeout,
                    stderr_tail: tail(&stderr),
                },
                Some(reason) => ToolError::Aborted { tool, reason },
            })
        }
    }
}
