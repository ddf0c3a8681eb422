//! vet-agent: the static agent run on the node under test.
//!
//! `parse` works today; `boot` and `host` arrive with the rest of the agent
//! issue and until then say so plainly and exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use common::stage::Stage;
use vet_agent::tools::{self, judge};

#[derive(Parser)]
#[command(name = "vet-agent", version, about = "Vetting agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Claim and run the queued run for this machine (not in this build yet).
    Boot,
    /// Heartbeat and run non-destructive runs on a host in use (not in this build yet).
    Host,
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

#[derive(Clone, Copy, ValueEnum)]
enum Tool {
    Smartctl,
    Fio,
    Iperf3,
    #[value(name = "stress-ng")]
    StressNg,
}

fn main() -> ExitCode {
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
        Command::Boot | Command::Host => {
            anyhow::bail!("this mode is not implemented in this build; only `vet-agent parse` is")
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
