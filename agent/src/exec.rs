//! The only place that spawns processes. Each tool runs in its own process
//! group with a timeout; on timeout or abort the whole group is killed
//! (SIGKILL to the group), so a stress tool's workers die with it. stdout is
//! collected, stderr drained concurrently (a full pipe never blocks the
//! child) and its tail kept for the error message.
//!
//! A daemon (the hold's SSH server) runs the same way but without a
//! deadline: [`spawn_daemon`] drains both of its pipes for as long as it
//! lives and [`Daemon::stop`] ends its group.
//!
//! Never: decide whether a tool's exit status is a failure (smartctl's is a
//! bit mask); that is the caller's, per tool.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
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
    /// Where the program was found when that is not on PATH (sshd lives
    /// in /usr/sbin); `program` still names it in messages.
    pub path: Option<PathBuf>,
}

impl ToolCommand {
    pub fn new(program: &'static str, package: &'static str, timeout: Duration) -> Self {
        Self {
            program,
            package,
            args: Vec::new(),
            timeout,
            path: None,
        }
    }

    /// Runs the program found at `path` instead of looking it up in PATH.
    pub fn at(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
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

fn no_pipe(tool: &'static str, which: &str) -> ToolError {
    ToolError::Io {
        tool,
        source: std::io::Error::other(format!("no {which} pipe")),
    }
}

/// Starts `cmd` as the leader of its own process group, stdin closed and
/// both outputs piped; returns the child and its group id.
fn spawn(cmd: &ToolCommand) -> Result<(Child, u32), ToolError> {
    let tool = cmd.program;
    let program = cmd
        .path
        .clone()
        .map_or_else(|| OsString::from(cmd.program), PathBuf::into_os_string);
    let child = Command::new(program)
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
    Ok((child, pgid))
}

/// Reads `pipe` until it closes so it never fills, keeping its tail in `kept`.
async fn drain_tail(mut pipe: impl tokio::io::AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 4 * STDERR_TAIL {
                    let cut = kept.len() - STDERR_TAIL;
                    kept.drain(..cut);
                }
            }
        }
    }
}

/// A long-running process in its own group whose output is drained (and its
/// tail kept) for as long as it runs. Dropping it kills the group.
pub struct Daemon {
    tool: &'static str,
    child: Child,
    pgid: u32,
    output: Arc<Mutex<Vec<u8>>>,
    drains: [tokio::task::JoinHandle<()>; 2],
}

/// Starts `cmd` as a daemon; `cmd.timeout` is not applied (see [`Daemon::stop`]).
pub fn spawn_daemon(cmd: &ToolCommand) -> Result<Daemon, ToolError> {
    let tool = cmd.program;
    let (mut child, pgid) = spawn(cmd)?;
    let stdout = child.stdout.take().ok_or_else(|| no_pipe(tool, "stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| no_pipe(tool, "stderr"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let drains = [
        tokio::spawn(drain_tail(stdout, output.clone())),
        tokio::spawn(drain_tail(stderr, output.clone())),
    ];
    Ok(Daemon {
        tool,
        child,
        pgid,
        output,
        drains,
    })
}

impl Daemon {
    /// The exit status and the tail of the output, once the daemon exited.
    pub fn exited(&mut self) -> Option<(ExitStatus, String)> {
        let status = self.child.try_wait().ok().flatten()?;
        Some((status, self.output_tail()))
    }

    /// The last few KiB the daemon wrote (stdout and stderr interleaved).
    pub fn output_tail(&self) -> String {
        tail(&self.output.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the group to end (SIGTERM), and kills it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(
            nix::unistd::Pid::from_raw(self.pgid as i32),
            Signal::SIGTERM,
        );
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tool = self.tool,
                "still running {grace:?} after SIGTERM; killing its group"
            );
        }
        // Drop kills whatever of the group is left.
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_group(self.pgid);
        for d in &self.drains {
            d.abort();
        }
    }
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
    let (mut child, pgid) = spawn(cmd)?;
    let mut stdout = child.stdout.take().ok_or_else(|| no_pipe(tool, "stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| no_pipe(tool, "stderr"))?;
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).await.map(|_| buf)
    });
    let kept = Arc::new(Mutex::new(Vec::new()));
    let err_task = tokio::spawn(drain_tail(stderr, kept.clone()));
    let stderr_tail = move || tail(&kept.lock().unwrap_or_else(|p| p.into_inner()));
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
            let _ = err_task.await;
            Ok(ToolOutput {
                status,
                stdout,
                stderr_tail: stderr_tail(),
                elapsed: started.elapsed(),
            })
        }
        Err(reason) => {
            kill_group(pgid);
            let _ = child.wait().await;
            out_task.abort();
            let _ = err_task.await;
            Err(match reason {
                None => ToolError::TimedOut {
                    tool,
                    after: cmd.timeout,
                    stderr_tail: stderr_tail(),
                },
                Some(reason) => ToolError::Aborted { tool, reason },
            })
        }
    }
}
