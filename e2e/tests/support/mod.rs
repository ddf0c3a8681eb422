//! Shared parts of the end-to-end tests: loop devices, a hwmon tree, and
//! the coordinator either in-process or as the real `vet-coordinator`
//! binary (which a test can SIGKILL).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use coordinator::Config;
use vet_agent::host::{Roots, Selector};
use vet_agent::run::BootOptions;

/// Runs a shell command the test needs to succeed.
pub fn sh(cmd: &str) -> std::process::Output {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a shell command when dropped (unmount, swapoff), even after a failed assertion.
pub struct Undo(pub String);

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg(&self.0).status();
    }
}

/// Makes the kernel log a real block-layer error: a loop device whose file
/// sits on a full 1 MiB tmpfs fails writes inside the loop driver. Returns
/// the loop device's name; everything is torn down again.
pub fn provoke_block_error(dir: &Path) -> String {
    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs {}",
        full.display()
    ));
    let _umount = Undo(format!("umount {}", full.display()));
    let img = full.join("d.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let dev = String::from_utf8(sh(&format!("losetup --find --show {}", img.display())).stdout)
        .unwrap()
        .trim()
        .to_string();
    let _detach = Undo(format!("losetup -d {dev}"));
    // Fails with ENOSPC, which is the point.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if=/dev/zero of={dev} bs=1M count=2 oflag=direct status=none"
        ))
        .status();
    dev.trim_start_matches("/dev/").to_string()
}

/// A loop device over a sparse file in the test's directory.
pub struct Loop(pub String);

impl Loop {
    pub fn new(dir: &Path, mib: u64) -> Loop {
        let img = tempfile::Builder::new()
            .prefix("disk")
            .suffix(".img")
            .tempfile_in(dir)
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
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

    /// `loop7` for `/dev/loop7`.
    pub fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

pub use testkit::free_port;

/// A hwmon tree per the sysfs ABI: one CPU sensor at 45 °C.
pub fn sensors(dir: &Path) -> PathBuf {
    let root = dir.join("sys");
    let hw = root.join("class/hwmon/hwmon0");
    std::fs::create_dir_all(&hw).unwrap();
    std::fs::write(hw.join("name"), "coretemp\n").unwrap();
    std::fs::write(hw.join("temp1_input"), "45000\n").unwrap();
    std::fs::write(hw.join("temp1_label"), "Package id 0\n").unwrap();
    root
}

enum Backend {
    InProcess(tokio::task::JoinHandle<Result<(), String>>),
    Binary(std::process::Child),
}

/// A running coordinator and an operator client for it.
pub struct Coord {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    /// The certificate to trust when it serves HTTPS.
    pub ca_cert: Option<PathBuf>,
    backend: Backend,
}

/// A workspace binary next to this test's executable, built if the
/// workspace build has not made it yet.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .unwrap_or_else(|e| panic!("cargo build {bin}: {e}"));
        assert!(ok.success(), "building {bin} failed");
    }
    path
}

fn coordinator_binary() -> PathBuf {
    workspace_binary("vetting-coordinator", "vet-coordinator")
}

async fn wait_healthy(http: &reqwest::Client, base: &str, dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = http
            .get(format!("{base}/api/v1/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            if let Ok(t) = std::fs::read_to_string(dir.join("operator.token")) {
                return t.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "coordinator at {base} never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Coord {
    pub async fn start(dir: &Path) -> Coord {
        Self::start_on(dir, 0, vec![free_port()]).await
    }

    /// Starts in-process on `port` (0: any), retrying the bind while an old
    /// socket lingers.
    pub async fn start_on(dir: &Path, port: u16, iperf3_ports: Vec<u16>) -> Coord {
        Self::start_with(dir, port, |c| c.iperf3_ports = iperf3_ports).await
    }

    /// Starts in-process with `tweak` applied to the config.
    pub async fn start_with(dir: &Path, port: u16, tweak: impl FnOnce(&mut Config)) -> Coord {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::for_data_dir(dir);
        tweak(&mut config);
        let task = tokio::spawn(async move {
            coordinator::serve(listener, config, std::future::pending())
                .await
                .map_err(|e| e.to_string())
        });
        let http = reqwest::Client::new();
        let token = wait_healthy(&http, &base, dir).await;
        Coord {
            base,
            token,
            http,
            ca_cert: None,
            backend: Backend::InProcess(task),
        }
    }

    /// Starts the real `vet-coordinator serve` binary on `port`.
    pub async fn spawn_binary(dir: &Path, port: u16, iperf3_ports: &[u16]) -> Coord {
        Self::spawn_binary_with(dir, port, iperf3_ports, false).await
    }

    /// Starts the real `vet-coordinator serve --tls` on `port`; returns it
    /// with the pin it wrote (`tls/cert.sha256`).
    pub async fn spawn_binary_tls(dir: &Path, port: u16, iperf3_ports: &[u16]) -> (Coord, String) {
        let coord = Self::spawn_binary_with(dir, port, iperf3_ports, true).await;
        let pin = std::fs::read_to_string(dir.join("tls/cert.sha256")).unwrap();
        (coord, pin.trim().to_string())
    }

    async fn spawn_binary_with(dir: &Path, port: u16, iperf3_ports: &[u16], tls: bool) -> Coord {
        let mut cmd = Command::new(coordinator_binary());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VET_")) {
            cmd.env_remove(k);
        }
        let ports: Vec<String> = iperf3_ports.iter().map(u16::to_string).collect();
        let child = cmd
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(tls.then_some("--tls"))
            .env("VET_IPERF3_PORTS", ports.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (base, http) = if tls {
            // The pin is written last: the certificate is in place then.
            let pin = dir.join("tls/cert.sha256");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !pin.exists() {
                assert!(Instant::now() < deadline, "no {} appeared", pin.display());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pem = std::fs::read(dir.join("tls/cert.pem")).unwrap();
            let http = reqwest::Client::builder()
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
                .build()
                .unwrap();
            (format!("https://127.0.0.1:{port}"), http)
        } else {
            (format!("http://127.0.0.1:{port}"), reqwest::Client::new())
        };
        let token = wait_healthy(&http, &base, dir).await;
        Coord {
            base,
            token,
            http,
            ca_cert: tls.then(|| dir.join("tls/cert.pem")),
            backend: Backend::Binary(child),
        }
    }

    /// Kills the coordinator without warning: SIGKILL for the binary, an
    /// aborted task in-process.
    pub async fn crash(mut self) {
        match &mut self.backend {
            Backend::Binary(child) => {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            Backend::InProcess(task) => {
                task.abort();
                let _ = task.await;
            }
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.operator().call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status}");
        answer
    }

    /// The operator's client (hosts and runs are registered through it).
    pub fn operator(&self) -> testkit::Operator<'_> {
        testkit::Operator {
            http: &self.http,
            base: &self.base,
            token: &self.token,
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Binary(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Backend::InProcess(task) => task.abort(),
        }
    }
}

/// Runs the real `vetctl` against `coord` with its operator token.
pub fn vetctl(coord: &Coord, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(workspace_binary("vetting-coordinator", "vetctl"));
    cmd.args(args)
        .env("VET_COORDINATOR", &coord.base)
        .env("VET_TOKEN", &coord.token);
    if let Some(ca) = &coord.ca_cert {
        cmd.env("VET_CA_CERT", ca);
    }
    cmd.output().unwrap()
}

/// A host spec no machine passes: 10^15 bogo-ops per second at CPUStress
/// (critical), so the run fails there and the host is held.
pub const HELD_AT_CPU_STRESS: &str = "thresholds:\n  - {stage: CPUStress, kind: stress, key: 'cpu/bogo_ops_per_s', op: gt, threshold: 1.0e15, unit: ops/s, severity: critical}\n";

/// A power control that records what it was asked to do.
#[derive(Default)]
pub struct RecordedPower(pub std::sync::Mutex<Vec<common::wire::Power>>);

impl vet_agent::power::PowerControl for RecordedPower {
    fn act(&self, power: common::wire::Power) -> vet_agent::power::PowerFuture<'_> {
        self.0.lock().unwrap().push(power);
        Box::pin(async {})
    }
}

/// Boot options for an agent that tests `disk` and `lo` with a test MAC.
pub fn options(coord: &Coord, dir: &Path, mac: &str, disk: &str) -> BootOptions {
    BootOptions {
        coordinator: coord.base.clone(),
        power: vet_agent::power::log_only(),
        disks: Some(Selector::new(disk).unwrap()),
        nics: Some(Selector::new("lo").unwrap()),
        roots: Roots::default(),
        sensors_root: sensors(dir),
        work_dir: dir.join("agent"),
        claim_timeout: Duration::from_secs(30),
        macs: Some(vec![mac.parse().unwrap()]),
        boot_id: Some(format!("e2e-{mac}")),
        claim_secret: None,
        trust: Default::default(),
        host_mode_run: None,
        kmsg: Some("/dev/kmsg".into()),
        // Never root's own file: a hold in a test uses the test's directory.
        hold: vet_agent::hold::HoldOptions {
            authorized_keys: dir.join("ssh/authorized_keys"),
            ssh_port: free_port(),
            dir: dir.join("agent/ssh"),
            grace: std::time::Duration::from_secs(60),
        },
    }
}

/// Polls run `id` until `pred` holds, failing after `limit`.
pub async fn wait_run(
    coord: &Coord,
    id: i64,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let d = coord.get(&format!("/runs/{id}")).await;
        if pred(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: run is {}", d["state"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP proxy in front of the real coordinator at `target`: requests
/// whose path `refuse` picks get a 400 with the API's error body, as the
/// coordinator answers a request it will not take; everything else is
/// forwarded unchanged. It makes a run in flight meet a refusal it cannot
/// otherwise be made to meet. Returns the proxy's base URL and the paths
/// it refused; the proxy stops when the returned guard is dropped.
pub async fn refusing_proxy(
    target: &str,
    refuse: fn(&str) -> bool,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>, Abort) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (target, seen) = (target.to_string(), refused.clone());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (target, seen, http) = (target.clone(), seen.clone(), http.clone());
        async move {
            let path = uri.path().to_string();
            if refuse(&path) {
                seen.lock().unwrap().push(path);
                let body = r#"{"error":{"code":"refused_by_test","message":"refused by the test's proxy"}}"#;
                return (StatusCode::BAD_REQUEST, body.to_string());
            }
            let url = format!(
                "{target}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            let mut req = http.request(method, url).body(body);
            for name in ["authorization", "content-type"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v.as_bytes());
                }
            }
            match req.send().await {
                Ok(r) => (
                    StatusCode::from_u16(r.status().as_u16()).unwrap(),
                    r.text().await.unwrap_or_default(),
                ),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(forward);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, refused, Abort(task))
}

/// Aborts a task when dropped.
pub struct Abort(pub tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
