//! The pool of `iperf3 -s` servers the coordinator runs next to itself, one
//! per configured port, handed to agents in the claim answer. Each server is
//! restarted when it exits and killed when the coordinator stops, even by
//! SIGKILL (parent-death signal).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Keeps `iperf3 -s -p PORT` running until the future is dropped, which
/// kills the server.
pub async fn supervise(port: u16) {
    loop {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // The server must not outlive a coordinator killed with SIGKILL.
        let child = unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            })
        }
        .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!(
                    port,
                    "iperf3 not found; install package `iperf3`: Network stages will fail"
                );
                return;
            }
            Err(e) => {
                tracing::error!(port, error = %e, "cannot start iperf3 server");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        tracing::info!(port, "iperf3 server started");
        match child.wait().await {
            Ok(status) => tracing::warn!(port, %status, "iperf3 server exited; restarting"),
            Err(e) => tracing::warn!(port, error = %e, "iperf3 server lost; restarting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
