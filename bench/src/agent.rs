//! `vet-bench agent`: the real agent's RSS and CPU while streaming, and
//! DiskPerf wall time on loop devices.
//!
//! Never: write to anything but the loop devices it made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use common::time::Timestamp;

use crate::daemon::{client, get, post, sibling_binary, start_daemon, Daemon};

/// A MAC of this machine, as the agent will claim with.
pub(crate) fn this_mac() -> anyhow::Result<String> {
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

pub(crate) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn proc_rss_kib(pid: u32) -> Option<u64> {
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

pub(crate) struct LoopDev(pub(crate) String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

pub(crate) fn loop_dev(dir: &Path, i: usize) -> anyhow::Result<LoopDev> {
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

pub(crate) fn spawn_agent(d: &Daemon, work: &Path, extra: &[&str]) -> anyhow::Result<Child> {
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

pub(crate) async fn agent_bench(watch_secs: u64) -> anyhow::Result<()> {
    let http = client(8)?;
    let mac = this_mac()?;
    let (binary, stripped) = stripped_size()?;
    println!(
        "agent binary {}: stripped {:.1} MB",
        binary.display(),
        stripped as f64 / 1e6
    );
    streaming(&http, &mac, watch_secs).await?;
    let mut walls = Vec::new();
    for n in [1usize, 8] {
        walls.push(disk_perf_wall(&http, &mac, n).await?);
    }
    println!("wall(8 disks) / wall(1 disk) = {:.2}", walls[1] / walls[0]);
    Ok(())
}

/// The agent binary the bench measures (the static one when built) and its
/// size once stripped.
fn stripped_size() -> anyhow::Result<(PathBuf, u64)> {
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
    Ok((target, std::fs::metadata(&out)?.len()))
}

/// Streaming: a held run keeps the sidecar going at the quick profile's
/// 1 Hz; the agent's CPU and RSS are sampled meanwhile.
async fn streaming(http: &reqwest::Client, mac: &str, watch_secs: u64) -> anyhow::Result<()> {
    let d = start_daemon(http).await?;
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
    post(http, format!("{}/api/v1/hosts", d.base), &d.token, json!({"name": "bench-agent", "mac": mac, "expected_spec_yaml": "cpu: {logical_cores: 99999}"})).await?;
    let run = post(
        http,
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
        let r = get(http, &d, &format!("/runs/{run}")).await?;
        if r["state"] == "FailedHolding" && !r["hold_ip"].is_null() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "run not held: {}", r["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = agent.id();
    let before_ms = get(http, &d, &format!("/runs/{run}")).await?["measurements"]
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
    let after_ms = get(http, &d, &format!("/runs/{run}")).await?["measurements"]
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
        http,
        format!("{}/api/v1/runs/{run}/release", d.base),
        &d.token,
        json!({}),
    )
    .await?;
    let _ = agent.wait();
    Ok(())
}

/// DiskPerf's wall time on `n` loop devices (disks run in parallel).
async fn disk_perf_wall(http: &reqwest::Client, mac: &str, n: usize) -> anyhow::Result<f64> {
    let d = start_daemon(http).await?;
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
        http,
        format!("{}/api/v1/hosts", d.base),
        &d.token,
        json!({"name": "bench-disks", "mac": mac}),
    )
    .await?;
    let run = post(
        http,
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
        let r = get(http, &d, &format!("/runs/{run}")).await?;
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
        http,
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
    drop(loops);
    Ok(wall)
}
