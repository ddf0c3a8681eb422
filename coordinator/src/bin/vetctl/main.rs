//! `vetctl`: drive Vetting runs from a terminal. Reads `VET_COORDINATOR` and
//! `VET_TOKEN`; `--json` prints the API's objects as they are.

mod client;
mod output;
mod secret;
mod ssh;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use common::mac::Mac;
use common::profile::Profile;
use common::wire::{
    HostCreate, HostUpdate, IgnoreDiffRequest, Overrides, Power, ReleaseRequest, RunCreate,
    WebhookDelivery,
};

use client::Client;

#[derive(Parser)]
#[command(name = "vetctl", version, about = "Drive Vetting runs")]
struct Cli {
    /// Coordinator base URL.
    #[arg(
        long,
        env = "VET_COORDINATOR",
        global = true,
        default_value = "http://127.0.0.1:8420"
    )]
    coordinator: String,
    /// Operator token (the content of <data-dir>/operator.token).
    #[arg(long, env = "VET_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate to trust for an https:// coordinator (its
    /// <data-dir>/tls/cert.pem) instead of the system's roots.
    #[arg(long, env = "VET_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register and inspect hosts.
    #[command(subcommand)]
    Host(HostCmd),
    /// Start, inspect, cancel, abort and release runs.
    #[command(subcommand)]
    Run(RunCmd),
    /// Webhook notifications: dead letters and retries.
    #[command(subcommand)]
    Webhook(WebhookCmd),
}

#[derive(Subcommand)]
enum WebhookCmd {
    /// List deliveries; dead letters unless --state or --all says otherwise.
    List {
        #[arg(long, value_parser = ["pending", "delivered", "dead"], conflicts_with = "all")]
        state: Option<String>,
        /// Every delivery, whatever its state.
        #[arg(long)]
        all: bool,
    },
    /// Send dead letters again (fresh attempts, due now).
    Retry {
        /// Delivery ids.
        #[arg(required_unless_present = "all_dead")]
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Register a host by the MAC its agent will claim with.
    Add {
        name: String,
        #[arg(long)]
        mac: Mac,
        /// Wake-on-LAN target IP[:PORT]; without it no packet is ever sent.
        #[arg(long)]
        wol_broadcast: Option<String>,
        /// Expected hardware spec (YAML).
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(long)]
        notes: Option<String>,
        /// File holding a claim secret: the host's runs are then claimed
        /// only by an agent given it (`--claim-secret-file`, `vet.claim=`).
        #[arg(long)]
        claim_secret_file: Option<PathBuf>,
    },
    /// Replace a host's spec, or set its claim secret.
    Edit {
        name: String,
        #[arg(long, required_unless_present_any = ["claim_secret_file", "no_claim_secret"])]
        spec: Option<PathBuf>,
        /// File holding the host's new claim secret.
        #[arg(long, conflicts_with = "no_claim_secret")]
        claim_secret_file: Option<PathBuf>,
        /// Remove the host's claim secret.
        #[arg(long)]
        no_claim_secret: bool,
    },
    /// List hosts.
    List,
    /// Show one host.
    Show { name: String },
    /// Issue a host-mode token for `vet-agent host` (replaces any earlier
    /// one). Printed once, or written to --out with mode 0600.
    Token {
        name: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RunCmd {
    /// Queue a run for a host (and wake it).
    Start(StartArgs),
    /// List runs.
    List,
    /// Show a run: stages, sub-steps, spec diffs, thresholds, events.
    Show { run: i64 },
    /// Cancel a run that no agent has claimed yet.
    Cancel { run: i64 },
    /// Abort a running run.
    Abort { run: i64 },
    /// End the hold of a failed host.
    Release {
        run: i64,
        /// Power the host off after the hold.
        #[arg(long, conflicts_with = "reboot")]
        poweroff: bool,
        /// Reboot the host after the hold.
        #[arg(long)]
        reboot: bool,
    },
    /// Mark a spec diff field (e.g. memory.total_gib) as ignored for the run.
    IgnoreDiff { run: i64, field: String },
    /// Follow a run live: stage and sub-steps, latest sensors, breaches.
    /// Exits 0 on Passed, 1 on FailedHolding/Failed/Aborted, 2 on Cancelled.
    Watch {
        run: i64,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// The run's report as of now: verdict and failure, or report.json
    /// itself: `--json` prints it, `--json F` writes it to F.
    #[command(override_usage = "vetctl run report RUN [--html F] [--json [F]]")]
    Report {
        run: i64,
        /// The F of `--json F`: report.json is written there (never over an
        /// existing file). `--json` is the global flag, so F stands after it.
        #[arg(value_name = "F", hide = true)]
        json_target: Option<PathBuf>,
        /// Write report.json here: the same as `--json F`.
        #[arg(long, value_name = "F", hide = true, conflicts_with = "json_target")]
        json_file: Option<PathBuf>,
        /// Write the self-contained report.html here (never over a file).
        #[arg(long, value_name = "F")]
        html: Option<PathBuf>,
    },
    /// Log into a held host: saves the run's key (0600) and prints the ssh
    /// command; exits 1 while the host is not reachable yet.
    Ssh {
        run: i64,
        /// Run ssh now instead of printing the command (extra args after
        /// `--` are the remote command).
        #[arg(long)]
        exec: bool,
        /// Connect here instead of the hold_ip the agent reported.
        #[arg(long)]
        host: Option<String>,
        /// Connect to this port instead of the one the agent reported.
        #[arg(long)]
        port: Option<u16>,
        /// Where to save the key (default ~/.cache/vetting/keys).
        #[arg(long)]
        key_dir: Option<PathBuf>,
        #[arg(last = true)]
        remote: Vec<String>,
    },
}

#[derive(Args)]
struct StartArgs {
    host: String,
    #[arg(long, default_value = "quick", value_parser = parse_profile)]
    profile: Profile,
    /// Never write to disks: skips DiskSurface and WipeProbe.
    #[arg(long)]
    non_destructive: bool,
    /// Overrides, e.g. `wipe=true` (may repeat).
    #[arg(long = "override", value_name = "NAME=BOOL")]
    overrides: Vec<String>,
    /// Fail the run when any disk was refused by the safety interlock.
    #[arg(long)]
    require_all_disks: bool,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse()
}

fn parse_overrides(list: &[String]) -> anyhow::Result<Overrides> {
    let mut o = Overrides::default();
    for item in list {
        let (name, value) = item
            .split_once('=')
            .with_context(|| format!("--override {item:?}: want NAME=true|false"))?;
        let value: bool = value
            .parse()
            .map_err(|_| anyhow::anyhow!("--override {item:?}: value must be true or false"))?;
        match name {
            "wipe" => o.wipe = value,
            _ => anyhow::bail!("--override {item:?}: unknown override {name:?} (known: wipe)"),
        }
    }
    Ok(o)
}

fn read_spec(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading spec {}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("vetctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.coordinator, cli.token.clone(), cli.ca_cert.as_deref())?;
    let json = cli.json;
    match cli.command {
        Command::Host(cmd) => host(&client, cmd, json),
        Command::Run(cmd) => run_cmd(&client, cmd, json),
        Command::Webhook(cmd) => webhook(&client, cmd, json),
    }
}

/// A claim secret from its file: one line, no spaces, never echoed.
fn read_claim_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the claim secret {}", path.display()))?;
    let secret = text.trim().to_string();
    common::wire::ClaimSecret::check(&secret)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(secret)
}

fn set_claim_secret(
    client: &Client,
    name: &str,
    claim_secret: String,
) -> anyhow::Result<common::wire::Host> {
    client.post(
        &format!("/hosts/{name}/claim-secret"),
        &common::wire::ClaimSecret { claim_secret },
    )
}

/// `vetctl host …`.
fn host(client: &Client, cmd: HostCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        HostCmd::Add {
            name,
            mac,
            wol_broadcast,
            spec,
            notes,
            claim_secret_file,
        } => {
            let spec = spec.as_ref().map(read_spec).transpose()?;
            // Read before anything changes: a bad file adds no host.
            let secret = claim_secret_file
                .as_deref()
                .map(read_claim_secret)
                .transpose()?;
            let mut host: common::wire::Host = client.post(
                "/hosts",
                &HostCreate {
                    name,
                    mac,
                    wol_broadcast,
                    expected_spec_yaml: spec,
                    notes,
                },
            )?;
            if let Some(secret) = secret {
                host = set_claim_secret(client, &host.name, secret)?;
            }
            output::host(&host, json)
        }
        HostCmd::Edit {
            name,
            spec,
            claim_secret_file,
            no_claim_secret,
        } => {
            let spec = spec.as_ref().map(read_spec).transpose()?;
            let secret = match (claim_secret_file, no_claim_secret) {
                (Some(f), _) => Some(read_claim_secret(&f)?),
                (None, true) => Some(String::new()),
                (None, false) => None,
            };
            let mut host: Option<common::wire::Host> = None;
            if let Some(spec) = spec {
                host = Some(client.patch(
                    &format!("/hosts/{name}"),
                    &HostUpdate {
                        expected_spec_yaml: spec,
                    },
                )?);
            }
            if let Some(secret) = secret {
                host = Some(set_claim_secret(client, &name, secret)?);
            }
            match host {
                Some(h) => output::host(&h, json),
                None => anyhow::bail!("nothing to change: give --spec or a claim secret option"),
            }
        }
        HostCmd::List => output::hosts(&client.get::<Vec<common::wire::Host>>("/hosts")?, json),
        HostCmd::Show { name } => output::host(&client.get(&format!("/hosts/{name}"))?, json),
        HostCmd::Token { name, out } => {
            let t: common::wire::HostToken =
                client.post(&format!("/hosts/{name}/token"), &serde_json::json!({}))?;
            match out {
                None if json => output::print_json(&t),
                None => {
                    println!("{}", t.token);
                    Ok(())
                }
                Some(path) => {
                    secret::write_private(
                        &path,
                        &format!("{}\n", t.token),
                        secret::Existing::Refuse,
                    )?;
                    eprintln!(
                        "host-mode token for {} written to {} (0600); run: vet-agent host --coordinator URL --token-file {}",
                        t.host,
                        path.display(),
                        path.display()
                    );
                    Ok(())
                }
            }
        }
    }
}

/// `vetctl run …`.
fn run_cmd(client: &Client, cmd: RunCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        RunCmd::Start(a) => {
            let overrides = parse_overrides(&a.overrides)?;
            let run: common::wire::Run = client.post(
                "/runs",
                &RunCreate {
                    host: a.host,
                    profile: a.profile,
                    non_destructive: a.non_destructive,
                    overrides,
                    require_all_disks: a.require_all_disks,
                },
            )?;
            output::run(&run, json)
        }
        RunCmd::List => output::runs(&client.get::<Vec<common::wire::Run>>("/runs")?, json),
        RunCmd::Show { run } => output::run_detail(&client.get(&format!("/runs/{run}"))?, json),
        RunCmd::Cancel { run } => output::run(
            &client.post(&format!("/runs/{run}/cancel"), &serde_json::json!({}))?,
            json,
        ),
        RunCmd::Abort { run } => output::run(
            &client.post(&format!("/runs/{run}/abort"), &serde_json::json!({}))?,
            json,
        ),
        RunCmd::Watch { run, interval } => {
            if !(0.1..=60.0).contains(&interval) {
                anyhow::bail!("--interval must be 0.1 to 60 seconds, got {interval}");
            }
            let code = watch::watch(client, run, std::time::Duration::from_secs_f64(interval))?;
            use std::io::Write;
            std::io::stdout().flush()?;
            std::process::exit(code.into());
        }
        RunCmd::Report {
            run,
            json_target,
            json_file,
            html,
        } => report(client, run, json, json_target, json_file, html),
        RunCmd::Ssh {
            run,
            exec,
            host,
            port,
            key_dir,
            remote,
        } => {
            let key: common::wire::HoldKey = client.get(&format!("/runs/{run}/hold-key"))?;
            ssh::run(run, key, exec, host, port, key_dir, remote)
        }
        RunCmd::Release {
            run,
            poweroff,
            reboot,
        } => {
            let power = if poweroff {
                Power::Poweroff
            } else if reboot {
                Power::Reboot
            } else {
                Power::None
            };
            output::run(
                &client.post(&format!("/runs/{run}/release"), &ReleaseRequest { power })?,
                json,
            )
        }
        RunCmd::IgnoreDiff { run, field } => {
            let ack: common::wire::IgnoreDiffAck = client.post(
                &format!("/runs/{run}/ignore-diff"),
                &IgnoreDiffRequest { field },
            )?;
            output::ignored(&ack, json)
        }
    }
}

/// `vetctl run report RUN [--json [F]] [--json-file F] [--html F]`.
fn report(
    client: &Client,
    run: i64,
    json: bool,
    json_target: Option<std::path::PathBuf>,
    json_file: Option<std::path::PathBuf>,
    html: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if let Some(f) = &json_target {
        if !json {
            anyhow::bail!(
                "unexpected argument {}: to write report.json there, say --json {0}",
                f.display()
            );
        }
    }
    // `--json F` writes the file; `--json` alone prints it.
    let print_json = json && json_target.is_none();
    let json_file = json_target.or(json_file);
    // report.json only when something shows or saves it.
    let wants_json = print_json || json_file.is_some() || html.is_none();
    let bytes = if wants_json {
        client.get_bytes(&format!("/runs/{run}/report"))?
    } else {
        Vec::new()
    };
    if let Some(path) = &html {
        let page = client.get_bytes(&format!("/runs/{run}/report.html"))?;
        write_new(path, &page)?;
        println!("run {run}: report.html written to {}", path.display());
    }
    if let Some(path) = &json_file {
        write_new(path, &bytes)?;
        println!("run {run}: report.json written to {}", path.display());
    }
    if print_json {
        use std::io::Write;
        std::io::stdout().write_all(&bytes)?;
    } else if html.is_none() && json_file.is_none() {
        output::report_summary(&bytes)?;
    }
    Ok(())
}

/// `vetctl webhook …`.
fn webhook(client: &Client, cmd: WebhookCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        WebhookCmd::List { state, all } => {
            let path = match (all, state.as_deref()) {
                (true, _) => "/webhooks".to_string(),
                (false, s) => format!("/webhooks?state={}", s.unwrap_or("dead")),
            };
            output::webhooks(&client.get::<Vec<WebhookDelivery>>(&path)?, json)
        }
        WebhookCmd::Retry { ids, all_dead } => {
            let ids = if all_dead {
                client
                    .get::<Vec<WebhookDelivery>>("/webhooks?state=dead")?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            let mut retried = Vec::new();
            for id in ids {
                retried.push(
                    client
                        .post::<_, WebhookDelivery>(
                            &format!("/webhooks/{id}/retry"),
                            &serde_json::json!({}),
                        )
                        .with_context(|| format!("retrying delivery {id}"))?,
                );
            }
            output::webhooks(&retried, json)
        }
    }
}

/// Writes `bytes` to a new file at `path`; an existing file is an error.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, bytes).with_context(|| format!("writing {}", path.display()))
}
