//! `vet-agent host` as an operator runs it: the real binary, a token from
//! the coordinator's API in a file, heartbeats that move `last_seen_at`,
//! SIGTERM for a clean stop, and a revoked token ending it with one line.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use support::{workspace_binary, Coord};

async fn last_seen(coord: &Coord, host: &str) -> Option<String> {
    coord.get(&format!("/hosts/{host}")).await["last_seen_at"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_mode_heartbeats_until_stopped_and_quits_on_a_revoked_token() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeats every second (a quarter of the 5 s timeout).
    let coord = Coord::start_with(dir.path(), 0, |c| {
        c.heartbeat_timeout = Duration::from_secs(5)
    })
    .await;
    coord
        .operator()
        .add_host("prod-1", "52:54:00:e2:e1:21", None)
        .await;
    let token = coord.post("/hosts/prod-1/token", json!({})).await;
    let token_file = dir.path().join("host.token");
    std::fs::write(
        &token_file,
        format!("{}\n", token["token"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(last_seen(&coord, "prod-1").await, None);

    let agent = workspace_binary("vet-agent", "vet-agent");
    let child = Command::new(&agent)
        .args(["host", "--coordinator", &coord.base, "--token-file"])
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(t) = last_seen(&coord, "prod-1").await {
            break t;
        }
        assert!(Instant::now() < deadline, "no heartbeat arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        if last_seen(&coord, "prod-1").await.is_some_and(|t| t > first) {
            break;
        }
        assert!(Instant::now() < deadline, "the second heartbeat never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SIGTERM is a clean stop: {:?}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("as host prod-1"), "{stdout}");

    // A new token replaces the one in the file: the agent says what to do.
    coord.post("/hosts/prod-1/token", json!({})).await;
    let out = Command::new(&agent)
        .args(["host", "--coordinator", &coord.base, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("vet-agent: ") && last.contains("vetctl host token"),
        "{stderr}"
    );

    // A missing token file is one clear line too.
    let out = Command::new(&agent)
        .args([
            "host",
            "--coordinator",
            &coord.base,
            "--token-file",
            "/nonexistent/host.token",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/host.token"));
}

/// Host mode in this process for `mac` with `token`, stopped by the
/// returned sender (what SIGTERM does to the binary).
fn in_process(
    coordinator: &str,
    token: &str,
    mac: &str,
    boot_id: &str,
    runs: vet_agent::run::BootOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<
        Result<vet_agent::host_mode::HostModeEnd, vet_agent::host_mode::HostModeError>,
    >,
) {
    let opts = vet_agent::host_mode::HostModeOptions {
        coordinator: coordinator.into(),
        token: token.into(),
        roots: vet_agent::host::Roots::default(),
        macs: Some(vec![mac.parse().unwrap()]),
        boot_id: Some(boot_id.into()),
        runs,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(vet_agent::host_mode::run(opts, async {
        let _ = stopped.await;
    }));
    (stop, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_mode_runs_queued_non_destructive_runs_in_place_and_never_destructive_ones() {
    let dir = tempfile::tempdir().unwrap();
    let disk = support::Loop::new(dir.path(), 64);
    // Host heartbeats every 5 s (a quarter of the timeout); the run's agent
    // heartbeats well inside it.
    let coord = Coord::start_with(dir.path(), 0, |c| {
        c.heartbeat_timeout = Duration::from_secs(20);
        c.iperf3_ports = vec![support::free_port()];
    })
    .await;
    let mac = "52:54:00:e2:e1:22";
    coord.operator().add_host("prod-2", mac, None).await;
    let token = coord.post("/hosts/prod-2/token", json!({})).await;
    // Queued before the host was ever seen, so the coordinator allowed it.
    let destructive = coord
        .operator()
        .start_run("prod-2", json!({"non_destructive": false}))
        .await;

    let runs = support::options(&coord, dir.path(), mac, &disk.0);
    let (stop, agent) = in_process(
        &coord.base,
        token["token"].as_str().unwrap(),
        mac,
        "prod-2-boot",
        runs,
    );

    let d = support::wait_run(
        &coord,
        destructive,
        Duration::from_secs(30),
        "refusal noted",
        |d| {
            d["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "host_mode_refused")
        },
    )
    .await;
    assert_eq!(d["state"], "Queued", "the host-mode agent did not claim it");
    coord
        .post(&format!("/runs/{destructive}/cancel"), json!({}))
        .await;
    // A host seen in host mode gets only non-destructive runs.
    let r = coord
        .http
        .post(format!("{}/api/v1/runs", coord.base))
        .bearer_auth(&coord.token)
        .json(&json!({"host": "prod-2", "non_destructive": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let run = coord
        .operator()
        .start_run("prod-2", json!({"non_destructive": true}))
        .await;
    let d = support::wait_run(&coord, run, Duration::from_secs(400), "run in place", |d| {
        d["state"] != "Queued" && d["state"] != "Running"
    })
    .await;
    assert_eq!(d["state"], "Passed", "{}", d["events"]);
    let seen_during = last_seen(&coord, "prod-2").await;
    // Heartbeats resume after the run: last seen moves on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while last_seen(&coord, "prod-2").await <= seen_during {
        assert!(
            std::time::Instant::now() < deadline,
            "heartbeats did not resume after the run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    let end = agent.await.unwrap().unwrap();
    assert_eq!(end.runs, [(run, common::run_state::RunState::Passed)]);
}

/// A run in place whose `boot` fails part-way (its Inventory report is
/// refused) leaves nothing posting for it: its heartbeats stop with it, so
/// the silent-agent sweep aborts the run while the host keeps heartbeating.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_in_place_that_fails_part_way_leaves_no_task_posting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let disk = support::Loop::new(dir.path(), 64);
    // The quick profile heartbeats every 5 s; 12 s of silence is a dead agent.
    let coord = Coord::start_with(dir.path(), 0, |c| {
        c.heartbeat_timeout = Duration::from_secs(12);
    })
    .await;
    let (proxy, refused, _proxy) =
        support::refusing_proxy(&coord.base, |p| p.ends_with("/stages/0/finish")).await;
    let mac = "52:54:00:e2:e1:23";
    coord.operator().add_host("prod-3", mac, None).await;
    let token = coord.post("/hosts/prod-3/token", json!({})).await;
    let run = coord
        .operator()
        .start_run("prod-3", json!({"non_destructive": true}))
        .await;

    let mut runs = support::options(&coord, dir.path(), mac, &disk.0);
    runs.kmsg = None;
    let (stop, agent) = in_process(
        &proxy,
        token["token"].as_str().unwrap(),
        mac,
        "prod-3-boot",
        runs,
    );

    let d = support::wait_run(
        &coord,
        run,
        Duration::from_secs(90),
        "the silent-agent sweep aborts the failed run",
        |d| d["state"] == "Aborted",
    )
    .await;
    assert_eq!(
        refused.lock().unwrap().as_slice(),
        [format!("/api/v1/runs/{run}/stages/0/finish")],
        "the run failed where the proxy refused it, once (a 400 is not retried)"
    );
    assert_eq!(d["failed_stage"], "Inventory", "{d}");
    assert!(
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "agent_silent"),
        "{}",
        d["events"]
    );
    // The host itself lives on: its heartbeats still arrive.
    let before = last_seen(&coord, "prod-3").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_seen(&coord, "prod-3").await <= before {
        assert!(Instant::now() < deadline, "host heartbeats stopped too");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    let end = agent.await.unwrap().unwrap();
    assert!(end.runs.is_empty(), "{:?}", end.runs);
}

/// Host mode stopped (SIGTERM resolves its shutdown future) while a run in
/// place holds the host: the hold is undone on the way out, its key
/// removed and its SSH server stopped.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_host_mode_during_a_hold_undoes_the_hold() {
    let dir = tempfile::tempdir().unwrap();
    let disk = support::Loop::new(dir.path(), 64);
    let coord = Coord::start_with(dir.path(), 0, |c| {
        c.heartbeat_timeout = Duration::from_secs(20);
        c.iperf3_ports = vec![support::free_port()];
    })
    .await;
    let mac = "52:54:00:e2:e1:24";
    coord
        .operator()
        .add_host("prod-4", mac, Some(support::HELD_AT_CPU_STRESS))
        .await;
    let token = coord.post("/hosts/prod-4/token", json!({})).await;
    let run = coord
        .operator()
        .start_run("prod-4", json!({"non_destructive": true}))
        .await;
    let mut runs = support::options(&coord, dir.path(), mac, &disk.0);
    runs.kmsg = None;
    let (keys_file, ssh_port) = (runs.hold.authorized_keys.clone(), runs.hold.ssh_port);
    let (stop, agent) = in_process(
        &coord.base,
        token["token"].as_str().unwrap(),
        mac,
        "prod-4-boot",
        runs,
    );
    support::wait_run(&coord, run, Duration::from_secs(300), "held", |d| {
        d["state"] == "FailedHolding" && !d["hold_ip"].is_null()
    })
    .await;
    let marker = format!("vetting-hold-run-{run}");
    let keys = std::fs::read_to_string(&keys_file).unwrap();
    assert!(keys.contains(&marker), "{keys}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_ok(),
        "no SSH server for the hold"
    );

    stop.send(()).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("host mode did not stop")
        .unwrap()
        .unwrap();
    assert!(end.runs.is_empty(), "{:?}", end.runs);
    let keys = std::fs::read_to_string(&keys_file).unwrap_or_default();
    assert!(!keys.contains(&marker), "the hold key stayed: {keys}");
    // The SSH server is killed with its process group on the way out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the hold's SSH server outlived host mode"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
