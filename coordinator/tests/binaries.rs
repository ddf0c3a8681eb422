//! The real binaries: `vet-coordinator` killed with SIGKILL mid-stream and
//! restarted on the same data dir, and `vetctl` driving it.

use testkit as support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::{free_port, wait_until};

struct Daemon {
    child: Child,
    base: String,
    token: String,
}

async fn spawn_coordinator(dir: &Path, port: u16) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vet-coordinator"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VET_")) {
        cmd.env_remove(k);
    }
    let child = cmd
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let token_path = dir.join("operator.token");
    let token = wait_until("vet-coordinator /health", Duration::from_secs(30), || {
        let (http, url, token_path) = (
            http.clone(),
            format!("{base}/api/v1/health"),
            token_path.clone(),
        );
        async move {
            let ok = http.get(&url).send().await.ok()?.status() == StatusCode::OK;
            ok.then(|| std::fs::read_to_string(&token_path).ok())
                .flatten()
                .map(|t| t.trim().to_string())
        }
    })
    .await;
    Daemon { child, base, token }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn op(http: &reqwest::Client, d: &Daemon, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{}/api/v1{path}", d.base))
        .bearer_auth(&d.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = spawn_coordinator(dir.path(), port).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    op(
        &http,
        &daemon,
        "/hosts",
        json!({"name": "crash", "mac": "52:54:00:00:00:0c"}),
    )
    .await;
    let run = op(
        &http,
        &daemon,
        "/runs",
        json!({"host": "crash", "non_destructive": true}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let claim: Value = http
        .post(format!("{}/api/v1/claim", daemon.base))
        .json(&json!({"macs": ["52:54:00:00:00:0c"], "boot_id": "b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = claim["token"].as_str().unwrap().to_string();
    let base = daemon.base.clone();

    const BATCHES: u64 = 60;
    const PER_BATCH: usize = 200;
    // The agent: sends batches in order, retrying each until acknowledged.
    // A third of the way in, the agent tells the test to kill the coordinator
    // and keeps sending, paced, so the kill lands mid-stream.
    let (third_tx, third_rx) = tokio::sync::oneshot::channel::<()>();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen_failures = failures.clone();
    let sender = tokio::spawn(async move {
        let mut retries = 0;
        let mut third = Some(third_tx);
        for seq in 1..=BATCHES {
            if seq == BATCHES / 3 {
                if let Some(tx) = third.take() {
                    let _ = tx.send(());
                }
            }
            if seq >= BATCHES / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let samples: Vec<Value> = (0..PER_BATCH)
                .map(|i| json!({"ts": "2026-11-23T09:15:43.123Z", "kind": "temp", "key": format!("s/{i}"), "value": seq}))
                .collect();
            let body = json!({"seq": seq, "samples": samples});
            loop {
                let res = http
                    .post(format!("{base}/api/v1/runs/{run}/batches"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == StatusCode::OK => break,
                    Ok(r) => panic!(
                        "batch {seq}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(_) => {
                        retries += 1;
                        failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        retries
    });
    // Kill the coordinator once a third of the batches are in.
    third_rx.await.expect("the sender reached a third");
    let mut daemon = daemon;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    daemon.child.wait().unwrap();
    // The agent notices the outage before the coordinator comes back.
    wait_until(
        "the agent to see the coordinator gone",
        Duration::from_secs(30),
        || {
            let n = seen_failures.load(std::sync::atomic::Ordering::SeqCst);
            async move { (n > 0).then_some(()) }
        },
    )
    .await;
    let restarted = spawn_coordinator(dir.path(), port).await;
    assert_eq!(restarted.token, daemon.token, "the operator token survives");
    let retries = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .unwrap()
        .unwrap();
    assert!(retries > 0, "the kill happened while the agent was sending");

    let db = support::open_db(&dir.path().join("vetting.db"));
    let rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM measurements WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    let distinct: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT DISTINCT key, value FROM measurements WHERE run_id = ?1)",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    let batches: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM batches WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(batches, BATCHES as i64);
    assert_eq!(
        rows,
        (BATCHES as usize * PER_BATCH) as i64,
        "every accepted sample stored once"
    );
    assert_eq!(distinct, rows, "no sample duplicated");

    // SIGTERM: graceful shutdown, exit 0.
    let mut restarted = restarted;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(restarted.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_until(
        "coordinator exit after SIGTERM",
        Duration::from_secs(20),
        || {
            let status = restarted.child.try_wait().unwrap();
            async move { status }
        },
    )
    .await;
    assert!(status.success(), "{status:?}");
}

fn vetctl(base: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vetctl"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VET_")) {
        cmd.env_remove(k);
    }
    cmd.env("VET_COORDINATOR", base);
    if let Some(t) = token {
        cmd.env("VET_TOKEN", t);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn vetctl_drives_hosts_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = spawn_coordinator(dir.path(), free_port()).await;
    let (base, token) = (d.base.as_str(), Some(d.token.as_str()));
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, support::SPEC).unwrap();
    let spec = spec.to_str().unwrap();

    let (code, out, err) = vetctl(
        base,
        token,
        &[
            "host",
            "add",
            "node-1",
            "--mac",
            "52:54:00:00:00:01",
            "--spec",
            spec,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let host: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            host["name"].as_str(),
            host["mac"].as_str(),
            host["wol_broadcast_ip"].as_str()
        ),
        (Some("node-1"), Some("52:54:00:00:00:01"), Some(""))
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cpu: {model: x, cores: 4}\n").unwrap();
    let (code, out, err) = vetctl(
        base,
        token,
        &[
            "host",
            "add",
            "node-2",
            "--mac",
            "52:54:00:00:00:02",
            "--spec",
            bad.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("cores") && err.contains("400"), "{err}");

    let (code, _, err) = vetctl(
        base,
        token,
        &["host", "edit", "node-1", "--spec", bad.to_str().unwrap()],
    );
    assert_ne!(code, 0, "a bad spec changes nothing: {err}");
    // A claim secret: a bad one is refused before anything changes; a good
    // one is set and never printed.
    let secret_file = dir.path().join("node-3.secret");
    std::fs::write(&secret_file, "short\n").unwrap();
    let sf = secret_file.to_str().unwrap();
    let add3 = [
        "host",
        "add",
        "node-3",
        "--mac",
        "52:54:00:00:00:03",
        "--claim-secret-file",
        sf,
    ];
    let (code, _, err) = vetctl(base, token, &add3);
    assert_ne!(code, 0);
    assert!(err.contains("16 to 256"), "{err}");
    let (code, _, _) = vetctl(base, token, &["host", "show", "node-3"]);
    assert_ne!(code, 0, "the refused secret added no host");
    std::fs::write(&secret_file, "node-3-claim-secret-0123\n").unwrap();
    let (code, out, err) = vetctl(base, token, &add3);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("claim secret set"), "{out}");
    assert!(!out.contains("node-3-claim-secret-0123") && !err.contains("node-3-claim-secret-0123"));
    let (code, out, err) = vetctl(
        base,
        token,
        &["host", "edit", "node-3", "--no-claim-secret"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("claim secret none"), "{out}");
    // A host-mode token, written privately; an existing file is never overwritten.
    let token_file = dir.path().join("node-1.token");
    let tf = token_file.to_str().unwrap();
    let (code, out, err) = vetctl(base, token, &["host", "token", "node-1", "--out", tf]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "the token goes to the file only");
    assert!(err.contains("vet-agent host"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim().len(),
        64
    );
    let (code, _, err) = vetctl(base, token, &["host", "token", "node-1", "--out", tf]);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = vetctl(base, token, &["host", "token", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");

    let (code, out, _) = vetctl(base, token, &["host", "show", "node-1", "--json"]);
    assert_eq!(code, 0);
    assert!(
        serde_json::from_str::<Value>(&out).unwrap()["expected_spec_yaml"]
            .as_str()
            .unwrap()
            .contains("EPYC")
    );

    let (code, out, _) = vetctl(base, token, &["host", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "node-1 and node-3; the refused node-2 was never added"
    );

    let (code, _, err) = vetctl(
        base,
        token,
        &[
            "run",
            "start",
            "node-1",
            "--non-destructive",
            "--override",
            "wipe=true",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("contradicts --non-destructive"), "{err}");

    let (code, out, err) = vetctl(
        base,
        token,
        &[
            "run",
            "start",
            "node-1",
            "--profile",
            "quick",
            "--non-destructive",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let run: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["state"], "Queued");
    let id = run["id"].as_i64().unwrap().to_string();

    let (code, out, _) = vetctl(base, token, &["run", "list", "--json"]);
    assert_eq!(code, 0);
    let runs: Value = serde_json::from_str(&out).unwrap();
    let first = &runs.as_array().unwrap()[0];
    for field in [
        "id",
        "host_id",
        "state",
        "result",
        "failed_stage",
        "hold_ip",
        "profile",
        "non_destructive",
        "started_at",
        "completed_at",
    ] {
        assert!(
            first.get(field).is_some(),
            "run list --json lacks {field}: {first}"
        );
    }

    // After a claim, run show --json carries stages with sub_steps, and events.
    let claim = reqwest::Client::new()
        .post(format!("{base}/api/v1/claim"))
        .json(&json!({"macs": ["52:54:00:00:00:01"], "boot_id": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), StatusCode::OK);
    let claim: Value = claim.json().await.unwrap();
    // An agent's text may carry terminal escapes; vetctl prints none.
    let ev = reqwest::Client::new()
        .post(format!("{base}/api/v1/runs/{id}/events"))
        .bearer_auth(claim["token"].as_str().unwrap())
        .json(&json!({"kind": "kernel_error", "level": "warn", "message": "disk \u{1b}[2J\u{1b}]0;owned\u{7}gone\u{9b}31m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ev.status(), StatusCode::OK);
    let (code, out, _) = vetctl(base, token, &["run", "show", &id, "--json"]);
    assert_eq!(code, 0);
    let show: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(show["state"], "Running");
    assert_eq!(show["stages"].as_array().unwrap().len(), 12);
    assert!(show["stages"][3]["sub_steps"].is_array());
    assert!(show["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "claim"));
    let (code, out, _) = vetctl(base, token, &["run", "show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("stages:") && out.contains("SpecValidate") && out.contains("events:"),
        "{out}"
    );
    assert!(
        out.contains("disk ?[2J?]0;owned?gone?31m")
            && !out.chars().any(|c| c.is_control() && c != '\n'),
        "{out:?}"
    );

    let (code, _, err) = vetctl(base, token, &["run", "cancel", &id]);
    assert_ne!(code, 0);
    assert!(
        err.contains("already claimed: use `run abort`") && err.contains("409"),
        "{err}"
    );
    let (code, _, _) = vetctl(
        base,
        token,
        &["run", "ignore-diff", &id, "memory.total_gib"],
    );
    assert_eq!(code, 0);
    let (code, out, _) = vetctl(base, token, &["run", "abort", &id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "Aborted"
    );

    let (code, _, err) = vetctl(base, token, &["run", "show", "999"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "vetctl: run 999 not found (404)");
    let (code, _, err) = vetctl(base, None, &["run", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("VET_TOKEN"), "{err}");
    let (code, _, err) = vetctl(base, Some("wrong"), &["run", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = vetctl(
        &format!("http://127.0.0.1:{}", free_port()),
        token,
        &["host", "list"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach coordinator"), "{err}");
}
