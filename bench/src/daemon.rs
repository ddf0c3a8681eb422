//! The real `vet-coordinator` daemon the benches talk to over HTTP, and
//! the small HTTP helpers they share.
//!
//! Never: leave a daemon running: it is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub(crate) struct Daemon {
    child: Child,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `vet-coordinator` beside this binary, or `VET_BENCH_COORDINATOR`
/// (another build, e.g. an older commit's, to compare against).
pub(crate) fn coordinator_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("VET_BENCH_COORDINATOR") {
        return Ok(bin.into());
    }
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

pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
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

pub(crate) async fn start_daemon(http: &reqwest::Client) -> anyhow::Result<Daemon> {
    start_daemon_with(http, &[]).await
}

/// [`start_daemon`] with extra `VET_*` settings in its environment.
pub(crate) async fn start_daemon_with(
    http: &reqwest::Client,
    env: &[(&str, &str)],
) -> anyhow::Result<Daemon> {
    start_daemon_bin(http, &coordinator_binary()?, env).await
}

/// [`start_daemon_with`] of the coordinator binary `bin`.
pub(crate) async fn start_daemon_bin(
    http: &reqwest::Client,
    bin: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
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

pub(crate) fn client(conns: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .timeout(Duration::from_secs(60))
        .build()?)
}

pub(crate) async fn post(
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

pub(crate) async fn get(http: &reqwest::Client, d: &Daemon, path: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{}/api/v1{path}", d.base))
        .bearer_auth(&d.token)
        .send()
        .await?
        .json()
        .await?)
}
