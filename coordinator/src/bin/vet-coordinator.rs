//! `vet-coordinator serve`: the daemon. Configuration: TOML file < `VET_*`
//! environment < flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use coordinator::config::{Config, RawConfig};

#[derive(Parser)]
#[command(
    name = "vet-coordinator",
    version,
    about = "Vetting coordinator daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on (env VET_LISTEN; default 127.0.0.1:8420).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory: vetting.db, artifacts/, operator.token (env VET_DATA_DIR; default ./var).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Optional TOML config file (env VET_CONFIG).
        #[arg(long, env = "VET_CONFIG")]
        config: Option<PathBuf>,
        /// Serve HTTPS only (env VET_TLS). Without --tls-cert/--tls-key a
        /// self-signed certificate is made on first start in <data-dir>/tls/;
        /// its SHA-256 pin goes to <data-dir>/tls/cert.sha256 and the log.
        #[arg(long)]
        tls: bool,
        /// PEM certificate chain to serve (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Another name (DNS or IP) for the self-signed certificate; repeatable.
        #[arg(long = "tls-san")]
        tls_san: Vec<String>,
        /// Open connections at most (default 4096).
        #[arg(long)]
        max_connections: Option<usize>,
    },
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vet-coordinator: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        listen,
        data_dir,
        config,
        tls,
        tls_cert,
        tls_key,
        tls_san,
        max_connections,
    } = cli.command;
    let raw = match &config {
        Some(path) => RawConfig::from_toml_file(path)?,
        None => RawConfig::default(),
    };
    let mut raw = raw.overlay_env(|k| std::env::var(k).ok())?;
    if listen.is_some() {
        raw.listen = listen;
    }
    if data_dir.is_some() {
        raw.data_dir = data_dir;
    }
    if tls {
        raw.tls = Some(true);
    }
    if tls_cert.is_some() {
        raw.tls_cert = tls_cert;
        raw.tls_key = tls_key;
    }
    if !tls_san.is_empty() {
        raw.tls_san = Some(tls_san);
    }
    if max_connections.is_some() {
        raw.max_connections = max_connections;
    }
    let config = Config::resolve(raw)?;
    if let Some(limit) = coordinator::api::edge::raise_open_files() {
        tracing::debug!(limit, "open-file limit");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        coordinator::serve(listener, config, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
