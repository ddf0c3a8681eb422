//! vet-agent: the static agent run on the node under test.
//!
//! Not yet built: the stages, tool runners and uplink arrive with the agent
//! issue. Until then this binary says so plainly and exits non-zero, so
//! nobody mistakes it for a working agent.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "vet-agent",
    version,
    about = "Vetting agent (not yet implemented)"
)]
struct Cli {
    /// Mode: boot or host.
    mode: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "vet-agent: mode {:?} is not implemented in this build; the coordinator and vetctl are",
        cli.mode.unwrap_or_default()
    );
    ExitCode::from(2)
}
