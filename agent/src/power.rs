//! Power actions (after a pass, on release, on a hold timeout) go through
//! [`PowerControl`], so the live image can act for real, every other use
//! only logs, and tests observe the call.
//!
//! Never: power anything off unless the agent was started with
//! `--power exec` (only the boot image passes it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::wire::Power;
use tokio_util::sync::CancellationToken;

use crate::exec::{self, ToolCommand};

pub type PowerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Carries out a power action the coordinator asked for.
pub trait PowerControl: Send + Sync + 'static {
    /// Called once per run end with the action (never with `Power::None`).
    fn act(&self, power: Power) -> PowerFuture<'_>;
}

/// `--power exec`: runs `poweroff` or `reboot`.
pub struct Exec;

impl PowerControl for Exec {
    fn act(&self, power: Power) -> PowerFuture<'_> {
        Box::pin(async move {
            let program = if power == Power::Reboot {
                "reboot"
            } else {
                "poweroff"
            };
            let cmd = ToolCommand::new(program, "systemd-sysv or busybox", Duration::from_secs(60));
            if let Err(e) = exec::run(&cmd, &CancellationToken::new(), String::new).await {
                tracing::error!(error = %e, "power action failed");
            }
        })
    }
}

/// `--power none`: logs the action and does nothing.
pub struct LogOnly;

impl PowerControl for LogOnly {
    fn act(&self, power: Power) -> PowerFuture<'_> {
        Box::pin(async move {
            tracing::warn!(
                action = power.as_str(),
                "power action requested; started with --power none, so not executed"
            );
        })
    }
}

pub fn exec() -> Arc<dyn PowerControl> {
    Arc::new(Exec)
}

pub fn log_only() -> Arc<dyn PowerControl> {
    Arc::new(LogOnly)
}
