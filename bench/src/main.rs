//! `vet-bench ingest`: how fast measurements get into the store.
//!
//! (a) bare SQLite: the rows the coordinator writes per sample (measurement
//!     and threshold evaluations, plus the batch ledger row) inserted in
//!     batches of 500 with the same schema and indices: the physical limit.
//! (b) the real `vet-coordinator` binary over HTTP on loopback, unpaced,
//!     N concurrent simulated agents, batches of 500, thresholds present.
//! (c) a fleet: 1000 simulated agents, each one batch of 200 samples per second.
//!
//! The load generator shares the machine's cores with the coordinator.
//! Never used by tests: figures go to docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use common::profile::Profile;
use common::stage::Stage;
use common::time::Timestamp;
use common::wire::{RunCreate, StageFinish, StageOutcome};
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::{NewHost, Store};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: RSS and CPU while streaming a 100-sensor tree at 1 Hz, and
    /// DiskPerf wall time on 8 loop devices against 1.
    Agent {
        /// Seconds to watch the agent stream.
        #[arg(long, default_value_t = 60)]
        watch_secs: u64,
    },
    /// report.json and report.html of a 24 h soak: 100 sensors, written
    /// through the real coordinator's ingest, rendered on demand and by the
    /// report writer when the run is held.
    Report {
        /// Measurements in the run.
        #[arg(long, default_value_t = 10_000_000)]
        samples: usize,
        /// Sensors (series) they are spread over.
        #[arg(long, default_value_t = 100)]
        sensors: usize,
        /// Hours the samples span.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Ingest throughput and latency: (a), (b), (c).
    Ingest {
        /// Samples per scenario in (a) and (b).
        #[arg(long, default_value_t = 300_000)]
        samples: usize,
        /// Seconds the fleet (c) runs.
        #[arg(long, default_value_t = 20)]
        fleet_secs: u64,
        /// Agents in the fleet (c).
        #[arg(long, default_value_t = 1000)]
        fleet_agents: usize,
    },
}

const SPEC: &str = "thresholds:\n  - {stage: CPUStress, kind: temp, key: \"coretemp/*\", op: lt, threshold: 90, unit: C, severity: critical}\n";

fn sample_json(i: usize, base_ms: i64) -> Value {
    let ts = Timestamp::from_unix_millis(base_ms + i as i64);
    json!({"ts": ts.to_string(), "kind": "temp", "key": format!("coretemp/Core {}", i % 32), "value": 40.0 + (i % 40) as f64, "unit": "C", "stage": 4})
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Agent { watch_secs } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(agent_bench(watch_secs))
        }
        Cmd::Report {
            samples,
            sensors,
            hours,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(report_bench(samples, sensors, hours))
        }
        Cmd::Ingest {
            samples,
            fleet_secs,
            fleet_agents,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let a = bare_sqlite(samples)?;
            println!(
                "(a) bare SQLite          {:>10.0} samples/s  ({samples} samples, batches of 500)",
                a
            );
            let mut b_rates = Vec::new();
            for agents in [10usize, 100] {
                let r = rt.block_on(http_unpaced(agents, samples))?;
                println!(
                    "(b) coordinator N={agents:<4}  {:>10.0} samples/s  ratio to (a) {:>5.1} %  batch latency p50 {:>7.1} ms  p99 {:>7.1} ms",
                    r.rate,
                    100.0 * r.rate / a,
                    r.p50_ms,
                    r.p99_ms
                );
                b_rates.push(r);
            }
            let c = rt.block_on(fleet(fleet_agents, fleet_secs))?;
            println!(
                "(c) fleet {fleet_agents} agents × 200 samples/s for {fleet_secs} s: offered {:.0} samples/s, acknowledged {:.0} samples/s ({:.1} %), batch latency p50 {:.1} ms p99 {:.1} ms, max {:.1} ms",
                c.offered,
                c.rate,
                100.0 * c.rate / c.offered,
                c.p50_ms,
                c.p99_ms,
                c.max_ms
            );
            Ok(())
        }
    }
}

/// A store with one host and one claimed run whose CPUStress stage runs.
fn prepared_store(path: &Path) -> anyhow::Result<(SqliteStore, i64)> {
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let store = SqliteStore::open(path, now)?;
    store.create_host(
        &NewHost {
            name: "bench".into(),
            mac: "52:54:00:be:00:01".parse()?,
            wol: None,
            expected_spec_yaml: SPEC.into(),
            notes: String::new(),
        },
        now,
    )?;
    let run = coordinator::lifecycle::create_run(
        &store,
        &RunCreate {
            host: "bench".into(),
            profile: Profile::Quick,
            non_destructive: true,
            overrides: Default::default(),
            require_all_disks: false,
        },
        now,
    )?;
    store.claim(&["52:54:00:be:00:01".parse()?], "b", "", now)?;
    for o in 0..4 {
        store.start_stage(run.id, o, now, now)?;
        let finish = StageFinish {
            outcome: StageOutcome::Passed,
            reason: None,
            at: None,
            summary: None,
            sub_steps: vec![],
        };
        store.finish_stage(run.id, o, &finish, None, now)?;
    }
    store.start_stage(run.id, Stage::CpuStress.ordinal(), now, now)?;
    Ok((store, run.id))
}

fn bare_sqlite(samples: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vetting.db");
    let (store, run_id) = prepared_store(&path)?;
    drop(store);
    let mut db = rusqlite::Connection::open(&path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    let stage_id: i64 = db.query_row(
        "SELECT id FROM stages WHERE run_id = ?1 AND ordinal = 4",
        [run_id],
        |r| r.get(0),
    )?;
    // The rules a temp sample of CPUStress matches (same as the coordinator's).
    let rule_ids: Vec<i64> = db
        .prepare("SELECT id FROM thresholds WHERE run_id = ?1 AND kind = 'temp' AND stage_name IN ('*', 'CPUStress')")?
        .query_map([run_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let base = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let mut seq = 0i64;
    for chunk in (0..samples).collect::<Vec<_>>().chunks(500) {
        seq += 1;
        let tx = db.transaction()?;
        {
            let mut m = tx.prepare_cached("INSERT INTO measurements (run_id, stage_id, ts, kind, key, value, unit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            let mut e = tx.prepare_cached(
                "INSERT INTO threshold_evaluations (run_id, threshold_id, stage_name, kind, key, ts, observed, passed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for &i in chunk {
                let ts = Timestamp::from_unix_millis(base + i as i64).to_string();
                let key = format!("coretemp/Core {}", i % 32);
                let value = 40.0 + (i % 40) as f64;
                m.execute((run_id, stage_id, &ts, "temp", &key, value, "C"))?;
                for id in &rule_ids {
                    e.execute((run_id, id, "CPUStress", "temp", &key, &ts, value, true))?;
                }
            }
            tx.execute("INSERT INTO batches (run_id, seq, sample_count, received_at) VALUES (?1, ?2, ?3, ?4)", (run_id, seq, chunk.len() as i64, base.to_string()))?;
        }
        tx.commit()?;
    }
    Ok(samples as f64 / start.elapsed().as_secs_f64())
}

struct Daemon {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coordinator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench binary has no directory")?
        .join("vet-coordinator");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p vetting-coordinator`",
            bin.display()
        );
    }
    Ok(bin)
}

async fn start_daemon(http: &reqwest::Client) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(coordinator_binary()?)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/api/v1/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("coordinator did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(dir.path().join("operator.token"))?
        .trim()
        .to_string();
    Ok(Daemon {
        child,
        base,
        token,
        _dir: dir,
    })
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

/// Registers `n` hosts, starts and claims their runs, and brings each to a
/// running CPUStress stage. Returns (run id, run token) per agent.
async fn agents(
    http: &reqwest::Client,
    d: &Daemon,
    n: usize,
) -> anyhow::Result<Vec<(i64, String)>> {
    let out = stream::iter(0..n)
        .map(|i| async move {
            let mac = format!(
                "52:54:{:02x}:{:02x}:{:02x}:01",
                i >> 16 & 0xff,
                i >> 8 & 0xff,
                i & 0xff
            );
            let name = format!("bench-{i}");
            let api = format!("{}/api/v1", d.base);
            post(
                http,
                format!("{api}/hosts"),
                &d.token,
                json!({"name": name, "mac": mac, "expected_spec_yaml": SPEC}),
            )
            .await?;
            post(
                http,
                format!("{api}/runs"),
                &d.token,
                json!({"host": name, "non_destructive": true}),
            )
            .await?;
            let claim = post(
                http,
                format!("{api}/claim"),
                "",
                json!({"macs": [mac], "boot_id": "b"}),
            )
            .await?;
            let run = claim["run_id"].as_i64().context("run_id")?;
            let token = claim["token"].as_str().context("token")?.to_string();
            for o in 0..4 {
                let stage = format!("{api}/runs/{run}/stages/{o}");
                post(http, format!("{stage}/start"), &token, json!({})).await?;
                if o == 0 {
                    // SpecValidate needs an inventory; this one has nothing to diff.
                    let url = format!("{api}/runs/{run}/artifacts?kind=inventory&stage=0");
                    let r = http.post(url).bearer_auth(&token).body("{}").send().await?;
                    anyhow::ensure!(r.status().is_success(), "inventory upload: {}", r.status());
                }
                let v = post(
                    http,
                    format!("{stage}/finish"),
                    &token,
                    json!({"outcome": "passed"}),
                )
                .await?;
                anyhow::ensure!(v["state"] == "passed", "stage {o} of run {run}: {v}");
            }
            post(
                http,
                format!("{api}/runs/{run}/stages/4/start"),
                &token,
                json!({}),
            )
            .await?;
            anyhow::Ok((run, token))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    out.into_iter().collect()
}

struct Rate {
    rate: f64,
    offered: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn percentiles(mut lat: Vec<Duration>) -> (f64, f64, f64) {
    lat.sort();
    let at = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), at(1.0))
}

fn client(conns: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn http_unpaced(n: usize, samples: usize) -> anyhow::Result<Rate> {
    let http = client(n)?;
    let d = start_daemon(&http).await?;
    let runs = agents(&http, &d, n).await?;
    let per_agent = samples / n / 500;
    let base = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(run, token)| {
            let http = http.clone();
            let url = format!("{}/api/v1/runs/{run}/batches", d.base);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_agent);
                for seq in 1..=per_agent {
                    let body = json!({"seq": seq, "samples": (0..500).map(|i| sample_json(seq * 500 + i, base)).collect::<Vec<_>>()});
                    let t = Instant::now();
                    post(&http, url.clone(), &token, body).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = (per_agent * 500 * n) as f64;
    let (p50, p99, max) = percentiles(lat);
    Ok(Rate {
        rate: sent / elapsed,
        offered: f64::NAN,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}

async fn fleet(n: usize, secs: u64) -> anyhow::Result<Rate> {
    let http = client(n)?;
    let d = Arc::new(start_daemon(&http).await?);
    let runs = agents(&http, &d, n).await?;
    let base = chrono::Utc::now().timestamp_millis();
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let tasks: Vec<_> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (run, token))| {
            let http = http.clone();
            let url = format!("{}/api/v1/runs/{run}/batches", d.base);
            tokio::spawn(async move {
                // Spread the agents over the second, as real ones are.
                let phase = Duration::from_micros((i as u64 * 1_000_000 / n as u64) % 1_000_000);
                let mut tick = tokio::time::interval_at(start + phase, Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut lat = Vec::new();
                let mut acked = 0usize;
                for seq in 1..=secs as usize {
                    tick.tick().await;
                    let body = json!({"seq": seq, "samples": (0..200).map(|j| sample_json(seq * 200 + j, base)).collect::<Vec<_>>()});
                    let t = Instant::now();
                    post(&http, url.clone(), &token, body).await?;
                    lat.push(t.elapsed());
                    acked += 200;
                }
                anyhow::Ok((lat, acked))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut acked = 0usize;
    for t in tasks {
        let (l, a) = t.await??;
        lat.extend(l);
        acked += a;
    }
    let elapsed = (tokio::time::Instant::now() - start).as_secs_f64();
    let (p50, p99, max) = percentiles(lat);
    Ok(Rate {
        rate: acked as f64 / elapsed,
        offered: (n * 200) as f64,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench binary has no directory")?
        .join(name);
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p vet-agent`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A MAC of this machine, as the agent will claim with.
fn this_mac() -> anyhow::Result<String> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names.into_iter().filter(|n| n != "lo") {
        let addr = std::fs::read_to_string(format!("/sys/class/net/{n}/address"))
            .unwrap_or_default()
            .trim()
            .to_string();
        if !addr.is_empty() && addr != "00:00:00:00:00:00" {
            return Ok(addr);
        }
    }
    bail!("no MAC on this machine")
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

struct LoopDev(String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn loop_dev(dir: &Path, i: usize) -> anyhow::Result<LoopDev> {
    let img = dir.join(format!("disk{i}.img"));
    std::fs::File::create(&img)?.set_len(256 << 20)?;
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(LoopDev(String::from_utf8(out.stdout)?.trim().to_string()))
}

async fn get(http: &reqwest::Client, d: &Daemon, path: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{}/api/v1{path}", d.base))
        .bearer_auth(&d.token)
        .send()
        .await?
        .json()
        .await?)
}

fn spawn_agent(d: &Daemon, work: &Path, extra: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(sibling_binary("vet-agent")?)
        .args([
            "boot",
            "--coordinator",
            &d.base,
            "--power",
            "none",
            "--claim-timeout",
            "60",
            "--nics",
            "lo",
        ])
        .arg("--work-dir")
        .arg(work)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn agent_bench(watch_secs: u64) -> anyhow::Result<()> {
    let http = client(8)?;
    let mac = this_mac()?;
    let stripped = {
        let bin = sibling_binary("vet-agent")?;
        let musl = bin
            .parent()
            .and_then(|p| p.parent())
            .map(|t| t.join("x86_64-unknown-linux-musl/release/vet-agent"));
        let target = musl.filter(|m| m.exists()).unwrap_or(bin);
        let out = std::env::temp_dir().join("vet-agent.stripped");
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&out)
            .arg(&target)
            .status()?
            .success();
        anyhow::ensure!(ok, "strip failed");
        (target, std::fs::metadata(&out)?.len())
    };
    println!(
        "agent binary {}: stripped {:.1} MB",
        stripped.0.display(),
        stripped.1 as f64 / 1e6
    );

    // 1. Streaming: a held run keeps the sidecar going at the quick profile's 1 Hz.
    {
        let d = start_daemon(&http).await?;
        let dir = tempfile::tempdir()?;
        for h in 0..10 {
            let hw = dir.path().join(format!("sys/class/hwmon/hwmon{h}"));
            std::fs::create_dir_all(&hw)?;
            std::fs::write(hw.join("name"), format!("chip{h}\n"))?;
            for t in 1..=10 {
                std::fs::write(
                    hw.join(format!("temp{t}_input")),
                    format!("{}\n", 40000 + t * 100),
                )?;
            }
        }
        // A spec no machine meets: SpecValidate fails and the host is held.
        post(&http, format!("{}/api/v1/hosts", d.base), &d.token, json!({"name": "bench-agent", "mac": mac, "expected_spec_yaml": "cpu: {logical_cores: 99999}"})).await?;
        let run = post(
            &http,
            format!("{}/api/v1/runs", d.base),
            &d.token,
            json!({"host": "bench-agent", "non_destructive": true}),
        )
        .await?["id"]
            .as_i64()
            .context("run id")?;
        let sensors = dir.path().join("sys");
        let mut agent = spawn_agent(
            &d,
            &dir.path().join("work"),
            &[
                "--sensors-root",
                sensors.to_str().context("path")?,
                "--disks",
                "/dev/none-such",
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = get(&http, &d, &format!("/runs/{run}")).await?;
            if r["state"] == "FailedHolding" && !r["hold_ip"].is_null() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "run not held: {}", r["state"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = agent.id();
        let before_ms = get(&http, &d, &format!("/runs/{run}")).await?["measurements"]
            .as_i64()
            .unwrap_or(0);
        let t0 = proc_cpu_ticks(pid).context("agent stat")?;
        let start = Instant::now();
        let mut rss_max = 0;
        let mut rss = Vec::new();
        while start.elapsed() < Duration::from_secs(watch_secs) {
            if let Some(r) = proc_rss_kib(pid) {
                rss_max = rss_max.max(r);
                rss.push(r);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let t1 = proc_cpu_ticks(pid).context("agent stat")?;
        let secs = start.elapsed().as_secs_f64();
        let after_ms = get(&http, &d, &format!("/runs/{run}")).await?["measurements"]
            .as_i64()
            .unwrap_or(0);
        rss.sort();
        let ticks = 100.0; // USER_HZ
        println!(
            "streaming 100 sensors at 1 Hz for {secs:.0} s: {} samples stored ({:.1}/s), agent CPU {:.2} % of a core, RSS median {:.1} MB, max {:.1} MB",
            after_ms - before_ms,
            (after_ms - before_ms) as f64 / secs,
            100.0 * (t1 - t0) as f64 / ticks / secs,
            rss.get(rss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
            rss_max as f64 / 1024.0
        );
        post(
            &http,
            format!("{}/api/v1/runs/{run}/release", d.base),
            &d.token,
            json!({}),
        )
        .await?;
        let _ = agent.wait();
    }

    // 2. DiskPerf wall time: 8 loop devices against 1 (disks run in parallel).
    let mut walls = Vec::new();
    for n in [1usize, 8] {
        let d = start_daemon(&http).await?;
        let dir = tempfile::tempdir()?;
        let loops: Vec<LoopDev> = (0..n)
            .map(|i| loop_dev(dir.path(), i))
            .collect::<anyhow::Result<_>>()?;
        let names: Vec<&str> = loops.iter().map(|l| l.0.as_str()).collect();
        let glob = if n == 1 {
            names[0].to_string()
        } else {
            format!("{{{}}}", names.join(","))
        };
        post(
            &http,
            format!("{}/api/v1/hosts", d.base),
            &d.token,
            json!({"name": "bench-disks", "mac": mac}),
        )
        .await?;
        let run = post(
            &http,
            format!("{}/api/v1/runs", d.base),
            &d.token,
            json!({"host": "bench-disks", "non_destructive": true}),
        )
        .await?["id"]
            .as_i64()
            .context("run id")?;
        let mut agent = spawn_agent(&d, &dir.path().join("work"), &["--disks", &glob])?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let stage = loop {
            let r = get(&http, &d, &format!("/runs/{run}")).await?;
            let s = r["stages"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == "DiskPerf"))
                .cloned()
                .unwrap_or(Value::Null);
            if s["completed_at"].is_string() {
                break s;
            }
            anyhow::ensure!(Instant::now() < deadline, "DiskPerf did not finish");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let _ = post(
            &http,
            format!("{}/api/v1/runs/{run}/abort", d.base),
            &d.token,
            json!({}),
        )
        .await;
        let _ = agent.kill();
        let _ = agent.wait();
        let t = |k: &str| {
            stage[k]
                .as_str()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map(|t| t.unix_millis())
        };
        let wall = (t("completed_at").context("completed")? - t("started_at").context("started")?)
            as f64
            / 1000.0;
        let subs = stage["sub_steps"].as_array().map(|a| a.len()).unwrap_or(0);
        println!(
            "DiskPerf on {n} loop device(s): {wall:.1} s wall ({subs} sub-steps, state {})",
            stage["state"]
        );
        walls.push(wall);
        drop(loops);
    }
    println!("wall(8 disks) / wall(1 disk) = {:.2}", walls[1] / walls[0]);
    Ok(())
}

/// Sensor `i` of `n` as a server reports it: temperatures, fans, power and
/// PSU voltages in the proportions of a 2-socket board.
fn sensor(i: usize, n: usize) -> (&'static str, String, &'static str, f64) {
    let temps = n * 48 / 100;
    let fans = n * 24 / 100;
    let powers = n * 8 / 100;
    if i < temps {
        ("temp", format!("coretemp/Core {i}"), "C", 55.0)
    } else if i < temps + fans {
        (
            "fan",
            format!("nct6775/fan{}", i - temps + 1),
            "rpm",
            9000.0,
        )
    } else if i < temps + fans + powers {
        (
            "power",
            format!("rapl/package-{}", i - temps - fans),
            "W",
            180.0,
        )
    } else {
        (
            "psu_volt",
            format!("nct6775/in{}", i - temps - fans - powers),
            "V",
            12.0,
        )
    }
}

/// A soak-like value: a slow daily swing, load steps, noise, and on the
/// first temperature a short excursion over the 90 °C threshold.
fn soak_value(sensor_i: usize, base: f64, step: usize, steps: usize) -> f64 {
    let phase = step as f64 / steps as f64 * std::f64::consts::TAU;
    let noise = ((step * 7919 + sensor_i * 104729) % 1000) as f64 / 1000.0 - 0.5;
    let load = if (step / (steps / 24).max(1)).is_multiple_of(3) {
        1.0
    } else {
        0.0
    };
    let v = base * (1.0 + 0.08 * phase.sin() + 0.05 * load + 0.01 * noise);
    if sensor_i == 0 && step.abs_diff(steps / 2) < 3 {
        95.0
    } else {
        v
    }
}

async fn report_bench(samples: usize, sensors: usize, hours: u64) -> anyhow::Result<()> {
    anyhow::ensure!(sensors >= 10, "--sensors must be at least 10");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let d = start_daemon(&http).await?;
    let (run, token) = agents(&http, &d, 1).await?.pop().context("no bench run")?;
    let api = format!("{}/api/v1", d.base);
    let steps = samples / sensors;
    let spacing_ms = (hours * 3_600_000) as f64 / steps as f64;
    let t0 = Timestamp::from_unix_millis(1_795_000_000_000);
    println!(
        "run {run}: {} samples = {sensors} sensors × {steps} over {hours} h (one per {:.0} ms per sensor)",
        steps * sensors,
        spacing_ms
    );
    let per_batch = 5000usize;
    let started = Instant::now();
    let mut seq = 1u64;
    let mut last_beat = Instant::now();
    let mut batch = Vec::with_capacity(per_batch);
    let total = steps * sensors;
    for n in 0..total {
        let (step, i) = (n / sensors, n % sensors);
        let (kind, key, unit, base) = sensor(i, sensors);
        let ts = t0.plus_millis((step as f64 * spacing_ms) as i64 + i as i64);
        batch.push(
            json!({"ts": ts.to_string(), "kind": kind, "key": key, "unit": unit,
                          "value": soak_value(i, base, step, steps), "stage": 4}),
        );
        if batch.len() == per_batch || n + 1 == total {
            let body = json!({"seq": seq, "samples": std::mem::take(&mut batch)});
            post(&http, format!("{api}/runs/{run}/batches"), &token, body).await?;
            seq += 1;
            // A real agent heartbeats beside its batches; without it the
            // silent-agent sweep aborts the run.
            if last_beat.elapsed() > Duration::from_secs(15) {
                post(
                    &http,
                    format!("{api}/runs/{run}/heartbeat"),
                    &token,
                    json!({}),
                )
                .await?;
                last_beat = Instant::now();
            }
            if seq.is_multiple_of(200) {
                let done = n + 1;
                eprintln!(
                    "  ingested {done} ({:.0}/s)",
                    done as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let ingest = started.elapsed();
    println!(
        "ingest: {total} samples in {:.1} s ({:.0} samples/s through POST /batches)",
        ingest.as_secs_f64(),
        total as f64 / ingest.as_secs_f64()
    );

    let timings = |what: &'static str| {
        let http = http.clone();
        let url = format!("{api}/runs/{run}/{what}");
        let token = d.token.clone();
        async move {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..3 {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(&token).send().await?;
                anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
                size = r.bytes().await?.len();
                times.push(t.elapsed());
            }
            times.sort();
            anyhow::Ok((times[1], times[0], times[2], size))
        }
    };
    // report.json, report.html, and `vetctl run watch`'s poll for the
    // latest sensor values (the series summaries).
    for what in ["report", "report.html", "series"] {
        let (med, lo, hi, size) = timings(what).await?;
        println!(
            "GET /runs/{run}/{what}: median {:.1} ms (min {:.1}, max {:.1}) over 3, {:.1} kB",
            med.as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3,
            size as f64 / 1000.0
        );
    }
    // The stage ends with the excursion as a critical breach: the run is
    // held, and the report writer renders and stores both files.
    let before = get(&http, &d, &format!("/runs/{run}")).await?;
    anyhow::ensure!(
        before["state"] == "Running",
        "the run should still be running: {}",
        before["state"]
    );
    let t = Instant::now();
    let v = post(
        &http,
        format!("{api}/runs/{run}/stages/4/finish"),
        &token,
        json!({"outcome": "passed"}),
    )
    .await?;
    anyhow::ensure!(
        v["state"] == "failed",
        "the breach should fail CPUStress: {v}"
    );
    let report_path = loop {
        let r = get(&http, &d, &format!("/runs/{run}")).await?;
        if let (Some(p), "FailedHolding") =
            (r["report_path"].as_str(), r["state"].as_str().unwrap_or(""))
        {
            break p.to_string();
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "no stored report after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let json_len = std::fs::metadata(&report_path)?.len();
    let db = d._dir.path().join("vetting.db");
    let html_len: Option<i64> = rusqlite::Connection::open(&db)?
        .query_row(
            "SELECT size_bytes FROM artifacts WHERE run_id = ?1 AND kind = 'report_html' ORDER BY id DESC LIMIT 1",
            [run],
            |r| r.get(0),
        )
        .ok();
    println!(
        "held → stored report.json ({:.1} kB){}: {:.2} s after the stage finished (the writer looks every 1 s)",
        json_len as f64 / 1000.0,
        html_len
            .map(|l| format!(" and report.html ({:.1} kB)", l as f64 / 1000.0))
            .unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
    // What a watcher paid before the series route: paging every stored
    // sample to learn the latest values. Done now the run is held, so the
    // silent-agent sweep cannot end it meanwhile.
    let t = Instant::now();
    let (mut after, mut pages, mut rows, mut bytes) = (0i64, 0usize, 0usize, 0usize);
    loop {
        let url = format!("{api}/runs/{run}/measurements?after={after}&limit=10000");
        let r = http.get(&url).bearer_auth(&d.token).send().await?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        let body = r.bytes().await?;
        bytes += body.len();
        let page: Vec<Value> = serde_json::from_slice(&body)?;
        pages += 1;
        rows += page.len();
        match page.last().and_then(|m| m["id"].as_i64()) {
            Some(id) if page.len() == 10_000 => after = id,
            _ => break,
        }
    }
    println!(
        "paging GET /runs/{run}/measurements through every sample (watch's first poll before the series route): {:.1} s, {pages} requests, {rows} rows, {:.1} MB",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );

    println!(
        "database: {:.2} GB",
        std::fs::metadata(&db)?.len() as f64 / 1e9
    );
    Ok(())
}
