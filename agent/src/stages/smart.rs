//! SMART: `smartctl --json=c -x` per disk, in parallel, one sub-step each.
//! A disk without SMART (virtio, loop) is a skipped sub-step with its reason.
//! The self-test run (short in quick, long in deep) is not in this build.

use std::time::Duration;

use common::stage::StageState;

use super::{sub_step, StageCtx, StageReport};
use crate::exec::{ToolCommand, ToolError};
use crate::tools::smartctl;

pub async fn run(ctx: &StageCtx) -> StageReport {
    let jobs = ctx.disks().iter().enumerate().map(|(i, d)| async move {
        let started = ctx.clock.now();
        let cmd = ToolCommand::new("smartctl", "smartmontools", Duration::from_secs(120)).args(["--json=c", "-x"]).arg(format!("/dev/{}", d.name));
        let (state, summary) = match ctx.run_tool(&cmd).await {
            Err(e @ ToolError::NotInstalled { .. }) => (StageState::Failed, serde_json::json!({"reason": e.to_string()})),
            Err(e) => (StageState::Failed, serde_json::json!({"reason": super::tool_failure(&e)})),
            Ok(out) => match smartctl::parse(&out.stdout, Some(&d.name)) {
                Err(e) => (StageState::Failed, serde_json::json!({"reason": e.to_string(), "stderr": out.stderr_tail})),
                Ok(r) if !r.errors.is_empty() => (StageState::Skipped, serde_json::json!({"reason": format!("no SMART: {}", r.errors.join("; ")), "notes": r.notes})),
                Ok(r) => {
                    for m in &r.measurements {
                        ctx.emit(m.kind, m.key.clone(), m.value);
                    }
                    (StageState::Passed, serde_json::json!({"measurements": r.measurements.len(), "notes": r.notes}))
                }
            },
        };
        sub_step(i, format!("{} SMART", d.name), state, started, ctx.clock.now(), summary)
    });
    let subs = futures_util::future::join_all(jobs).await;
    StageReport::from_sub_steps(subs, serde_json::json!({"disks": ctx.disks().len()}))
}
