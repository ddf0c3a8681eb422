//! vet-agent: the static agent run on the node under test.
//!
//! `boot` claims and runs this machine's queued run; `host` heartbeats from a
//! production host; `parse` checks a tool's recorded output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use std::time::Duration;

use common::run_state::RunState;
use common::stage::Stage;
use vet_agent::host::{Roots, Selector};
use vet_agent::host_mode::{self, HostModeOptions};
use vet_agent::run::{boot, BootOptions};
use vet_agent::tools::{self, judge};
use vet_agent::uplink::trust::Trust;

/// `vet.<name>=VALUE` from /proc/cmdline, if the kernel was given it.
fn kernel_cmdline_value(name: &str) -> anyhow::Result<Option<String>> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let prefix = format!("vet.{name}=");
    Ok(cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(str::to_string))
}

/// The host's claim secret: `--claim-secret-file`, else `vet.claim=` on the
/// kernel command line, else none.
fn claim_secret(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let secret = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the claim secret {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => kernel_cmdline_value("claim").unwrap_or(None),
    };
    if secret.as_deref() == Some("") {
        anyhow::bail!("the claim secret is empty");
    }
    Ok(secret)
}

/// Whom to trust over HTTPS: `--ca-sha256`, else `--ca-file`, else
/// `vet.ca_sha256=` on the kernel command line, else the system's roots.
fn trust(tls: &TlsArgs) -> anyhow::Result<Trust> {
    if let Some(pin) = &tls.ca_sha256 {
        return Trust::pin(pin).map_err(|e| anyhow::anyhow!("--ca-sha256: {e}"));
    }
    if let Some(f) = &tls.ca_file {
        let pem = std::fs::read(f).with_context(|| format!("reading --ca-file {}", f.display()))?;
        return Ok(Trust::CaFile(pem));
    }
    match kernel_cmdline_value("ca_sha256").unwrap_or(None) {
        Some(pin) => Trust::pin(&pin).map_err(|e| anyhow::anyhow!("vet.ca_sha256=: {e}")),
        None => Ok(Trust::System),
    }
}

/// How the agent checks an HTTPS coordinator.
#[derive(clap::Args)]
struct TlsArgs {
    /// Trust only the coordinator certificate with this SHA-256 (its
    /// `tls/cert.sha256`); default: `vet.ca_sha256=` on the kernel command line.
    #[arg(long, env = "VET_CA_SHA256", conflicts_with = "ca_file")]
    ca_sha256: Option<String>,
    /// Trust only certificates from this PEM CA file.
    #[arg(long, env = "VET_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// `vet.coordinator=URL` from /proc/cmdline (what the live image passes).
fn kernel_cmdline_coordinator() -> anyhow::Result<String> {
    kernel_cmdline_value("coordinator")?
        .context("no --coordinator given and no vet.coordinator=URL on the kernel command line")
}

#[derive(Parser)]
#[command(name = "vet-agent", version, about = "Vetting agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Claim the run queued for this machine's MACs, run it, then do what
    /// the coordinator says (hold, release, done).
    Boot(BootArgs),
    /// On a host in use: heartbeat with the host's token (from `vetctl host
    /// token`) so the coordinator knows it is up, and run queued
    /// non-destructive runs in place. Runs until SIGTERM/SIGINT.
    Host(HostArgs),
    /// Parse a tool's recorded output and print the normalized result as
    /// JSON, judged by the quick profile's defaults. Exit 0 when FILE is
    /// valid output of TOOL (whatever its verdict), 2 when it is not.
    Parse {
        tool: Tool,
        file: PathBuf,
        /// Disk or NIC name to use in measurement keys.
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(clap::Args)]
struct BootArgs {
    /// Coordinator URL; default: `vet.coordinator=URL` from the kernel command line.
    #[arg(long, env = "VET_COORDINATOR")]
    coordinator: Option<String>,
    /// `exec` powers off/reboots for real (the live image); `none` only logs.
    #[arg(long, value_enum, default_value = "none")]
    power: PowerArg,
    /// Disks to test, replacing the default selection (e.g. '/dev/loop*').
    #[arg(long)]
    disks: Option<String>,
    /// NICs to test, replacing the default selection (e.g. 'veth*').
    #[arg(long)]
    nics: Option<String>,
    /// sysfs root the thermal sidecar reads.
    #[arg(long, default_value = "/sys")]
    sensors_root: PathBuf,
    /// Spool and scratch directory.
    #[arg(long, default_value = "/var/lib/vet-agent")]
    work_dir: PathBuf,
    /// Seconds to keep asking for a queued run.
    #[arg(long, default_value_t = 3600)]
    claim_timeout: u64,
    /// Where a hold installs the run's SSH key.
    #[arg(long, default_value = "/root/.ssh/authorized_keys")]
    authorized_keys: PathBuf,
    /// The port a held host's SSH server listens on (started if none does).
    #[arg(long, default_value_t = 22)]
    ssh_port: u16,
    /// File holding the host's claim secret (`vetctl host add|edit
    /// --claim-secret-file`); default: `vet.claim=` on the kernel command line.
    #[arg(long, env = "VET_CLAIM_SECRET_FILE")]
    claim_secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(clap::Args)]
struct HostArgs {
    #[arg(long, env = "VET_COORDINATOR")]
    coordinator: String,
    /// File holding the host-mode token (`vetctl host token NAME --out FILE`).
    #[arg(long, env = "VET_HOST_TOKEN_FILE")]
    token_file: PathBuf,
    /// File holding the host's claim secret, when it has one: the runs it
    /// takes in place are claimed with it.
    #[arg(long, env = "VET_CLAIM_SECRET_FILE")]
    claim_secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum PowerArg {
    Exec,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum Tool {
    Smartctl,
    Fio,
    Iperf3,
    #[value(name = "stress-ng")]
    StressNg,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vet-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Host(a) => {
            let token = std::fs::read_to_string(&a.token_file).with_context(|| {
                format!("reading the host token from {}", a.token_file.display())
            })?;
            let token = token.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                anyhow::bail!("{} does not hold one token", a.token_file.display());
            }
            let work_dir = PathBuf::from("/var/lib/vet-agent");
            let runs = BootOptions {
                coordinator: a.coordinator.clone(),
                power: vet_agent::power::log_only(),
                disks: None,
                nics: None,
                roots: Roots::default(),
                sensors_root: "/sys".into(),
                work_dir: work_dir.clone(),
                claim_timeout: Duration::from_secs(60),
                macs: None,
                boot_id: None,
                claim_secret: match &a.claim_secret_file {
                    Some(f) => claim_secret(Some(f))?,
                    None => None,
                },
                trust: trust(&a.tls)?,
                host_mode_run: None,
                kmsg: Some("/dev/kmsg".into()),
                hold: vet_agent::hold::HoldOptions::root_default(work_dir.join("ssh")),
            };
            let opts = HostModeOptions {
                runs,
                coordinator: a.coordinator,
                token: token.to_string(),
                roots: Roots::default(),
                macs: None,
                boot_id: None,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let end = rt.block_on(host_mode::run(opts, shutdown_signal()))?;
            println!(
                "host mode stopped: {} heartbeats as host {}, {} run(s) in place",
                end.heartbeats,
                end.host.as_deref().unwrap_or("(never acknowledged)"),
                end.runs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Boot(a) => {
            let coordinator = match a.coordinator {
                Some(c) => c,
                None => kernel_cmdline_coordinator()?,
            };
            let selector = |g: Option<String>| {
                g.map(|g| Selector::new(&g).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let opts = BootOptions {
                coordinator,
                power: match a.power {
                    PowerArg::Exec => vet_agent::power::exec(),
                    PowerArg::None => vet_agent::power::log_only(),
                },
                disks: selector(a.disks)?,
                nics: selector(a.nics)?,
                roots: Roots::default(),
                sensors_root: a.sensors_root,
                work_dir: a.work_dir.clone(),
                claim_timeout: Duration::from_secs(a.claim_timeout),
                macs: None,
                boot_id: None,
                claim_secret: claim_secret(a.claim_secret_file.as_deref())?,
                trust: trust(&a.tls)?,
                host_mode_run: None,
                kmsg: Some("/dev/kmsg".into()),
                hold: vet_agent::hold::HoldOptions {
                    authorized_keys: a.authorized_keys,
                    ssh_port: a.ssh_port,
                    dir: a.work_dir.join("ssh"),
                    grace: Duration::from_secs(60),
                },
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let end = rt.block_on(boot(opts))?;
            println!(
                "run {}: {} (power action: {}, {} samples sent)",
                end.run_id,
                end.state,
                end.power.as_str(),
                end.samples_produced
            );
            Ok(match end.state {
                RunState::Passed => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
        Command::Parse { tool, file, device } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let dev = device.as_deref();
            let (stage, result) = match tool {
                Tool::Smartctl => (Stage::Smart, tools::smartctl::parse(&bytes, dev)),
                Tool::Fio => (Stage::DiskPerf, tools::fio::parse(&bytes, dev)),
                Tool::Iperf3 => (Stage::Network, tools::iperf3::parse(&bytes, dev)),
                Tool::StressNg => (Stage::CpuStress, tools::stress_ng::parse(&bytes)),
            };
            let result = result.with_context(|| file.display().to_string())?;
            let judged = judge(stage, result);
            println!("{}", serde_json::to_string_pretty(&judged)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
