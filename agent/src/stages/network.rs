//! Network: `iperf3 -J` per NIC against the servers the coordinator assigned
//! (its own host unless configured otherwise), one sub-step each, with the
//! rate of every interval over time. iperf3 reports some failures only in
//! the JSON `error` field with exit 0.

use common::stage::StageState;

use super::{sub_step, StageCtx, StageReport};
use crate::tools::iperf3;

/// The host part of the coordinator URL.
fn coordinator_host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_string()
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let ports = &ctx.claim.iperf3.ports;
    if ports.is_empty() {
        return StageReport::skipped("the coordinator assigned no iperf3 server");
    }
    let host = ctx
        .claim
        .iperf3
        .host
        .clone()
        .unwrap_or_else(|| coordinator_host(ctx.client.base()));
    let secs = ctx.claim.durations.network_per_nic_s;
    let mut subs = Vec::new();
    // One NIC at a time: they may share the path to the server.
    for (i, nic) in ctx.nics().iter().enumerate() {
        let started = ctx.clock.now();
        let port = ports[i % ports.len()];
        let cmd = iperf3::client(&host, port, secs);
        let (state, summary) = match ctx.run_tool(&cmd).await {
            Err(e) => super::tool_error_step(&e),
            Ok(out) => match iperf3::parse(&out.stdout, Some(&nic.name)) {
                Err(e) => (
                    StageState::Failed,
                    serde_json::json!({"reason": e.to_string(), "stderr": out.stderr_tail}),
                ),
                Ok(r) if !r.errors.is_empty() => (
                    StageState::Failed,
                    serde_json::json!({"reason": r.errors.join("; ")}),
                ),
                Ok(r) => {
                    ctx.emit_result(&r, ctx.clock.now());
                    (
                        StageState::Passed,
                        serde_json::json!({"server": format!("{host}:{port}"), "measurements": r.measurements}),
                    )
                }
            },
        };
        subs.push(sub_step(
            i,
            format!("{} iperf3", nic.name),
            Some(&nic.name),
            state,
            started,
            ctx.clock.now(),
            summary,
        ));
    }
    StageReport::from_sub_steps(subs, serde_json::json!({"nics": ctx.nics().len()}))
}

#[cfg(test)]
mod tests {
    use super::coordinator_host;

    #[test]
    fn host_of_the_coordinator_url() {
        assert_eq!(coordinator_host("http://10.0.2.2:8420"), "10.0.2.2");
        assert_eq!(coordinator_host("http://127.0.0.1:8420/"), "127.0.0.1");
        assert_eq!(coordinator_host("https://vet.example"), "vet.example");
        assert_eq!(coordinator_host("http://[::1]:8420"), "::1");
    }
}
