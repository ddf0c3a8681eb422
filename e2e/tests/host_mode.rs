//! `vet-agent host` as an operator runs it: the real binary, a token from
//! the coordinator's API in a file, heartbeats that move `last_seen_at`,
//! SIGTERM for a clean stop, and a revoked token ending it with one line.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use support::{workspace_binary, Coord};

async fn last_seen(coord: &Coord) -> Option<String> {
    coord.get("/hosts/prod-1").await["last_seen_at"]
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
        .post(
            "/hosts",
            json!({"name": "prod-1", "mac": "52:54:00:e2:e1:21"}),
        )
        .await;
    let token = coord.post("/hosts/prod-1/token", json!({})).await;
    let token_file = dir.path().join("host.token");
    std::fs::write(
        &token_file,
        format!("{}\n", token["token"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(last_seen(&coord).await, None);

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
        if let Some(t) = last_seen(&coord).await {
            break t;
        }
        assert!(Instant::now() < deadline, "no heartbeat arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        if last_seen(&coord).await.is_some_and(|t| t > first) {
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
