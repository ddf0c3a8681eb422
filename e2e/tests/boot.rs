//! `vet-agent boot` end to end on this machine: the real coordinator on
//! 127.0.0.1 with its iperf3 pool, the agent's run loop with real stress-ng,
//! fio on a loop device the test makes, iperf3 over loopback, and the
//! sidecar reading a hwmon tree the test lays out per the kernel ABI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::run_state::RunState;
use coordinator::Config;
use vet_agent::host::{Roots, Selector};
use vet_agent::run::{boot, BootOptions, PowerMode};

struct Loop(String);

impl Loop {
    fn new(dir: &Path, mib: u64) -> Loop {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hwmon tree per the sysfs ABI: one CPU sensor at 45 °C.
fn sensors(dir: &Path) -> PathBuf {
    let root = dir.join("sys");
    let hw = root.join("class/hwmon/hwmon0");
    std::fs::create_dir_all(&hw).unwrap();
    std::fs::write(hw.join("name"), "coretemp\n").unwrap();
    std::fs::write(hw.join("temp1_input"), "45000\n").unwrap();
    std::fs::write(hw.join("temp1_label"), "Package id 0\n").unwrap();
    root
}

struct Coord {
    base: String,
    token: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<anyhow_free::Result>,
}

mod anyhow_free {
    pub type Result = std::result::Result<(), String>;
}

impl Coord {
    async fn start(dir: &Path) -> Coord {
        Self::start_on(dir, 0, vec![free_port()]).await
    }

    /// Starts on `port` (0: any), retrying the bind while an old socket lingers.
    async fn start_on(dir: &Path, port: u16, iperf3_ports: Vec<u16>) -> Coord {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::for_data_dir(dir);
        config.iperf3_ports = iperf3_ports;
        let task = tokio::spawn(async move {
            coordinator::serve(listener, config, std::future::pending())
                .await
                .map_err(|e| e.to_string())
        });
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("{base}/api/v1/health"))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(dir.join("operator.token"))
            .unwrap()
            .trim()
            .to_string();
        Coord {
            base,
            token,
            http,
            task,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }
}

fn options(coord: &Coord, dir: &Path, mac: &str, disk: &str) -> BootOptions {
    BootOptions {
        coordinator: coord.base.clone(),
        power: PowerMode::None,
        disks: Some(Selector::new(disk).unwrap()),
        nics: Some(Selector::new("lo").unwrap()),
        roots: Roots::default(),
        sensors_root: sensors(dir),
        work_dir: dir.join("agent"),
        claim_timeout: Duration::from_secs(30),
        macs: Some(vec![mac.parse().unwrap()]),
        boot_id: Some(format!("e2e-{mac}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quick_non_destructive_run_passes_with_the_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 256);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:01";
    coord
        .call(
            reqwest::Method::POST,
            "/hosts",
            Some(json!({"name": "e2e-pass", "mac": mac})),
        )
        .await;
    let run = coord
        .call(
            reqwest::Method::POST,
            "/runs",
            Some(json!({"host": "e2e-pass", "profile": "quick", "non_destructive": true})),
        )
        .await;
    let started = Instant::now();
    let end = boot(options(&coord, dir.path(), mac, &disk.0))
        .await
        .expect("boot");
    eprintln!("quick non-destructive run took {:?}", started.elapsed());
    assert_eq!(end.state, RunState::Passed);
    assert_eq!(end.run_id, run["id"].as_i64().unwrap());

    let d = coord
        .call(reqwest::Method::GET, &format!("/runs/{}", end.run_id), None)
        .await;
    assert_eq!(d["result"], "pass");
    let stage = |name: &str| {
        d["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(stage("DiskSurface")["state"], "skipped");
    assert_eq!(stage("GPU")["state"], "skipped", "no GPU here");
    let loop_name = disk.0.trim_start_matches("/dev/");
    let smart = stage("SMART");
    assert_eq!(smart["sub_steps"][0]["name"], format!("{loop_name} SMART"));
    assert_eq!(
        smart["sub_steps"][0]["state"], "skipped",
        "a loop device has no SMART"
    );
    assert_eq!(stage("DiskPerf")["sub_steps"][0]["state"], "passed");
    assert_eq!(stage("Network")["sub_steps"][0]["state"], "passed");
    assert!(
        !d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "sample_count_mismatch"),
        "{}",
        d["events"]
    );

    let ms = coord
        .call(
            reqwest::Method::GET,
            &format!("/runs/{}/measurements", end.run_id),
            None,
        )
        .await;
    let ms = ms.as_array().unwrap();
    let has = |kind: &str, key: &str| {
        ms.iter().any(|m| {
            m["kind"] == kind && m["key"] == key && m["value"].as_f64().is_some_and(|v| v > 0.0)
        })
    };
    assert!(has("stress", "cpu/bogo_ops_per_s"), "stress-ng metrics");
    assert!(
        has("stress", "vm/bogo_ops_per_s"),
        "memory stressor metrics"
    );
    assert!(
        has("fio", &format!("{loop_name}/read_bw_mbps")),
        "fio on the loop device"
    );
    assert!(has("iperf", "lo/bps"), "iperf3 over loopback");
    assert!(has("temp", "coretemp/Package id 0"), "sidecar temperatures");
    assert_eq!(
        ms.len() as u64,
        end.samples_produced,
        "every produced sample stored once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_breach_halts_at_cpu_stress_and_holds() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:02";
    // No machine does 10^15 bogo-ops per second.
    let spec = "thresholds:\n  - {stage: CPUStress, kind: stress, key: 'cpu/bogo_ops_per_s', op: gt, threshold: 1.0e15, unit: ops/s, severity: critical}\n";
    coord
        .call(
            reqwest::Method::POST,
            "/hosts",
            Some(json!({"name": "e2e-hot", "mac": mac, "expected_spec_yaml": spec})),
        )
        .await;
    let run = coord
        .call(
            reqwest::Method::POST,
            "/runs",
            Some(json!({"host": "e2e-hot", "non_destructive": true})),
        )
        .await;
    let run_id = run["id"].as_i64().unwrap();
    let agent = tokio::spawn(boot(options(&coord, dir.path(), mac, &disk.0)));
    let deadline = Instant::now() + Duration::from_secs(300);
    let d = loop {
        let d = coord
            .call(reqwest::Method::GET, &format!("/runs/{run_id}"), None)
            .await;
        if d["state"] == "FailedHolding" && !d["hold_ip"].is_null() {
            break d;
        }
        assert!(Instant::now() < deadline, "run never held: {}", d["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d["failed_stage"], "CPUStress");
    let later: Vec<&str> = d["stages"].as_array().unwrap()[5..]
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(
        later.iter().all(|s| *s == "pending" || *s == "skipped"),
        "later stages not run: {later:?}"
    );
    coord
        .call(
            reqwest::Method::POST,
            &format!("/runs/{run_id}/release"),
            Some(json!({"power": "poweroff"})),
        )
        .await;
    let end = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("agent ends after release")
        .unwrap()
        .unwrap();
    assert_eq!(end.state, RunState::Failed);
    assert_eq!(
        end.power,
        common::wire::Power::Poweroff,
        "released with poweroff; --power none only logs it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_crash_during_a_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let port = free_port();
    let iperf = vec![free_port()];
    let coord = Coord::start_on(dir.path(), port, iperf.clone()).await;
    let mac = "52:54:00:e2:e1:03";
    coord
        .call(
            reqwest::Method::POST,
            "/hosts",
            Some(json!({"name": "e2e-crash", "mac": mac})),
        )
        .await;
    let run = coord
        .call(
            reqwest::Method::POST,
            "/runs",
            Some(json!({"host": "e2e-crash", "non_destructive": true})),
        )
        .await;
    let run_id = run["id"].as_i64().unwrap();
    let agent = tokio::spawn(boot(options(&coord, dir.path(), mac, &disk.0)));
    // Crash the coordinator while CPUStress runs and the sidecar streams.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = coord
            .call(reqwest::Method::GET, &format!("/runs/{run_id}"), None)
            .await;
        if d["stages"][4]["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "CPUStress never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coord.task.abort();
    let _ = coord.task.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let coord = Coord::start_on(dir.path(), port, iperf).await;
    let end = tokio::time::timeout(Duration::from_secs(400), agent)
        .await
        .expect("run ends")
        .unwrap()
        .expect("boot");
    assert_eq!(end.state, RunState::Passed);
    let d = coord
        .call(reqwest::Method::GET, &format!("/runs/{run_id}"), None)
        .await;
    assert_eq!(
        d["measurements"].as_u64(),
        Some(end.samples_produced),
        "stored = produced"
    );
    assert!(!d["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "sample_count_mismatch"));
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("vetting.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let dups: i64 = db
        .query_row("SELECT COUNT(*) FROM (SELECT 1 FROM measurements GROUP BY kind, key, ts, value HAVING COUNT(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dups, 0, "no sample stored twice");
    let temps: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM measurements WHERE kind = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        temps > 60,
        "the sidecar streamed through the outage: {temps} temperature samples"
    );
}
