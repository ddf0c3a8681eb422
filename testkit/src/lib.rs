//! The tests' harness, one dev-only crate for the coordinator's and the
//! end-to-end tests: the real coordinator (`coordinator::serve`) on
//! 127.0.0.1:0 with SQLite in a temporary directory, an operator client
//! (hosts and runs are registered and queued here and nowhere else), a
//! scripted agent that speaks the real protocol with the `common::wire`
//! types, report checks and a headless-browser driver.
//!
//! Never a dependency of a shipped crate; it links no agent code, so the
//! end-to-end tests stay the only place agent and coordinator meet.

pub mod browser;
pub mod report;
pub mod store_suite;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use common::inventory::{CpuInfo, DiskInfo, Inventory, MemoryInfo, NicInfo};
use common::measurement::{Finite, Kind, Sample};
use common::stage::StageState;
use common::time::Timestamp;
use common::wire::{ClaimResponse, MeasurementBatch, StageFinish, StageOutcome, SubStepReport};
use coordinator::Config;

pub struct TestCoordinator {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestCoordinator {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    /// Starts on an existing data directory (a restart).
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::for_data_dir(dir.path());
        tweak(&mut config);
        let tls = config.tls.is_some();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(coordinator::serve(listener, config, async {
            stopped.await.ok();
        }));
        let (base, http) = if tls {
            // The pin is written last: the certificate is in place then.
            let pin = dir.path().join("tls/cert.sha256");
            wait_until("the TLS certificate", Duration::from_secs(20), || {
                let pin = pin.clone();
                async move { pin.exists().then_some(()) }
            })
            .await;
            let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
            let http = reqwest::Client::builder()
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
                .build()
                .unwrap();
            (format!("https://{addr}"), http)
        } else {
            (format!("http://{addr}"), reqwest::Client::new())
        };
        let token_path = dir.path().join("operator.token");
        let token = wait_until(
            "operator token and /health",
            Duration::from_secs(20),
            || {
                let http = http.clone();
                let url = format!("{base}/api/v1/health");
                let token_path = token_path.clone();
                async move {
                    let ok = http.get(&url).send().await.ok()?.status() == StatusCode::OK;
                    ok.then(|| std::fs::read_to_string(&token_path).ok())
                        .flatten()
                        .map(|t| t.trim().to_string())
                }
            },
        )
        .await;
        Self {
            dir,
            base,
            token,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful stop; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("vetting.db")
    }

    pub fn db(&self) -> rusqlite::Connection {
        open_db(&self.db_path())
    }

    pub fn row_counts(&self) -> Vec<(String, i64)> {
        row_counts(&self.db_path())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn op(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.operator().call(method, path, body).await
    }

    pub async fn op_get(&self, path: &str) -> (StatusCode, Value) {
        self.op(reqwest::Method::GET, path, None).await
    }

    pub async fn op_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.op(reqwest::Method::POST, path, Some(body)).await
    }

    /// The operator's client for this coordinator.
    pub fn operator(&self) -> Operator<'_> {
        Operator {
            http: &self.http,
            base: &self.base,
            token: &self.token,
        }
    }

    pub async fn add_host(&self, name: &str, mac: &str, spec: Option<&str>) -> Value {
        self.operator().add_host(name, mac, spec).await
    }

    pub async fn start_run(&self, host: &str, extra: Value) -> i64 {
        self.operator().start_run(host, extra).await
    }

    pub async fn run_detail(&self, run: i64) -> Value {
        let (status, body) = self.op_get(&format!("/runs/{run}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn claim(&self, macs: &[&str], boot_id: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url("/claim"))
            .json(&json!({"macs": macs, "boot_id": boot_id}))
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    /// Makes run `run`'s agent look silent for `secs` (see [`silence`]).
    pub fn silence(&self, run: i64, secs: i64) {
        silence(&self.db_path(), run, secs);
    }

    /// Claims and returns an agent for the claimed run.
    pub async fn agent(&self, mac: &str, boot_id: &str) -> TestAgent {
        let (status, body) = self.claim(&[mac], boot_id).await;
        assert_eq!(status, StatusCode::OK, "claim: {body}");
        TestAgent::from_claim(self, serde_json::from_value(body).unwrap())
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator's side of a coordinator over HTTP: where every test
/// registers its hosts and queues its runs.
#[derive(Clone, Copy)]
pub struct Operator<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub token: &'a str,
}

impl Operator<'_> {
    /// `method` on `/api/v1{path}` with the operator token: status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Registers a host (with its expected spec, if any).
    pub async fn add_host(&self, name: &str, mac: &str, spec: Option<&str>) -> Value {
        let (status, body) = self
            .post(
                "/hosts",
                json!({"name": name, "mac": mac, "expected_spec_yaml": spec}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Queues a run for `host`: quick and non-destructive unless `extra`
    /// says otherwise. Returns the run's id.
    pub async fn start_run(&self, host: &str, extra: Value) -> i64 {
        let mut req = json!({"host": host, "profile": "quick", "non_destructive": true});
        if let (Some(obj), Some(more)) = (req.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                obj.insert(k.clone(), v.clone());
            }
        }
        let (status, body) = self.post("/runs", req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_i64().unwrap()
    }
}

/// Makes run `run`'s agent in the database at `db` look silent for `secs`
/// (its last heartbeat moved back), as if that much time had passed
/// without one: what lets a new claim take the run over.
pub fn silence(db: &Path, run: i64, secs: i64) {
    let then = Timestamp::from_datetime(chrono::Utc::now() - chrono::Duration::seconds(secs));
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2",
        (then.to_string(), run),
    )
    .unwrap();
}

pub fn open_db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

pub fn row_counts(path: &Path) -> Vec<(String, i64)> {
    let db = open_db(path);
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let n: i64 = db
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect()
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// The scripted agent: a test helper that speaks the protocol.
pub struct TestAgent {
    pub base: String,
    pub http: reqwest::Client,
    pub run_id: i64,
    pub token: String,
    pub seq: u64,
    pub produced: u64,
    pub claim: ClaimResponse,
}

impl TestAgent {
    /// The agent a claim answered.
    pub fn from_claim(coord: &TestCoordinator, claim: ClaimResponse) -> TestAgent {
        TestAgent {
            base: coord.base.clone(),
            http: coord.http.clone(),
            run_id: claim.run_id,
            token: claim.token.clone(),
            seq: claim.next_batch_seq,
            produced: 0,
            claim,
        }
    }
}

pub fn sample(kind: Kind, key: &str, value: f64, stage: Option<u32>) -> Sample {
    Sample {
        ts: Timestamp::from_datetime(chrono::Utc::now()),
        kind,
        key: key.into(),
        value: Finite::new(value).unwrap(),
        unit: String::new(),
        stage,
    }
}

impl TestAgent {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/runs/{}{path}", self.base, self.run_id)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    pub async fn start_stage(&self, ordinal: u32) -> (StatusCode, Value) {
        self.post(&format!("/stages/{ordinal}/start"), json!({}))
            .await
    }

    pub async fn finish_stage(
        &self,
        ordinal: u32,
        outcome: StageOutcome,
        reason: Option<&str>,
    ) -> (StatusCode, Value) {
        let body = StageFinish {
            outcome,
            absent: false,
            reason: reason.map(Into::into),
            at: None,
            summary: None,
            sub_steps: vec![],
        };
        self.post(
            &format!("/stages/{ordinal}/finish"),
            serde_json::to_value(body).unwrap(),
        )
        .await
    }

    pub async fn finish_with(&self, ordinal: u32, body: StageFinish) -> (StatusCode, Value) {
        self.post(
            &format!("/stages/{ordinal}/finish"),
            serde_json::to_value(body).unwrap(),
        )
        .await
    }

    /// Sends the next batch; on success advances the sequence.
    pub async fn send(&mut self, samples: Vec<Sample>) -> (StatusCode, Value) {
        let n = samples.len() as u64;
        let batch = MeasurementBatch {
            seq: self.seq,
            samples,
        };
        let out = self
            .post("/batches", serde_json::to_value(batch).unwrap())
            .await;
        if out.0 == StatusCode::OK {
            self.seq += 1;
            self.produced += n;
        }
        out
    }

    pub async fn upload(
        &self,
        kind: &str,
        stage: Option<u32>,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut url = format!("{}?kind={kind}", self.url("/artifacts"));
        if let Some(s) = stage {
            url.push_str(&format!("&stage={s}"));
        }
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        read(resp).await
    }
}

/// An inventory that matches `SPEC` below.
pub fn inventory() -> Inventory {
    Inventory {
        cpu: CpuInfo {
            model: "AMD EPYC 7443P 24-Core Processor".into(),
            logical_cores: 48,
            sockets: 1,
            microcode: Some("0xa0011d1".into()),
        },
        memory: MemoryInfo {
            total_bytes: 256 << 30,
        },
        disks: vec![DiskInfo {
            name: "nvme0n1".into(),
            model: "SAMSUNG MZQL23T8HCLS-00A07".into(),
            size_bytes: 3_840_755_982_336,
            ..Default::default()
        }],
        nics: vec![NicInfo {
            name: "eth0".into(),
            mac: "52:54:00:00:00:01".parse().unwrap(),
            driver: "mlx5_core".into(),
            speed_mbps: Some(25000),
            firmware: None,
        }],
        ..Default::default()
    }
}

pub const SPEC: &str = r#"
cpu: {model: "AMD EPYC 7443P*", logical_cores: 48}
memory: {total_gib: 256}
disks:
  - {model: "SAMSUNG MZQL23T8HCLS*", count: 1}
firmware: {bios: "2.10.2"}
thresholds:
  - {stage: CPUStress, kind: temp, key: "coretemp/*", op: lt, threshold: 90, unit: C, severity: critical}
"#;

/// Polls `probe` until it yields a value; on timeout the panic names what we waited for.
pub async fn wait_until<T, F>(what: &str, limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts and passes stage `ordinal` (uploading the inventory at 0).
pub async fn pass_stage(agent: &TestAgent, ordinal: u32) {
    agent.start_stage(ordinal).await;
    if ordinal == 0 {
        agent
            .upload(
                "inventory",
                Some(0),
                serde_json::to_vec(&inventory()).unwrap(),
            )
            .await;
    }
    let (st, v) = agent
        .finish_stage(ordinal, StageOutcome::Passed, None)
        .await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("passed")),
        "{ordinal}: {v}"
    );
}

/// A DiskPerf finish whose write pass the interlock refused.
pub fn refused_write() -> StageFinish {
    let sub =
        |ordinal: u32, name: &str, state: StageState, summary: serde_json::Value| SubStepReport {
            ordinal,
            name: name.into(),
            state,
            device: None,
            started_at: None,
            completed_at: None,
            summary: Some(summary),
        };
    StageFinish {
        outcome: StageOutcome::Passed,
        absent: false,
        reason: None,
        at: None,
        summary: None,
        sub_steps: vec![
            sub(0, "loop3 fio read", StageState::Passed, json!({})),
            sub(
                1,
                "loop3 fio write",
                StageState::Skipped,
                json!({"interlock": true, "reason": "interlock refused loop3: mounted at /mnt"}),
            ),
        ],
    }
}
