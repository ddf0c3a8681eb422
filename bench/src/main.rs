//! `vet-bench`: the figures in docs/BENCHMARKS.md, measured against the
//! real binaries.
//!
//! - `ingest` (ingest.rs): how fast measurements get into the store: (a)
//!   bare SQLite, (b) the coordinator over HTTP unpaced, (c) a paced fleet.
//! - `claims` (claims.rs): batch latency under a flood of claims.
//! - `report` (report.rs): reports of a 24 h many-sensor soak.
//! - `agent` (agent.rs): the agent's footprint while streaming, DiskPerf
//!   wall time on loop devices.
//!
//! The load generator shares the machine's cores with the coordinator.
//! Never used by tests: figures go to docs/BENCHMARKS.md.

use clap::{Parser, Subcommand};

mod agent;
mod claims;
mod daemon;
mod ingest;
mod ingest_cmd;
mod report;

use agent::agent_bench;
use report::report_bench;

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
    /// Batch latency of paced agents before and during a flood of claims
    /// for unknown MACs (claim limit lifted, then the default limit).
    Claims {
        /// Agents sending a 20-sample batch every 100 ms.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Claims in the flood.
        #[arg(long, default_value_t = 2000)]
        claims: usize,
        /// Claims in flight at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Seconds of batches before the flood.
        #[arg(long, default_value_t = 5)]
        quiet_secs: u64,
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
        /// The store behind the coordinator: sqlite (postgres: not yet).
        #[arg(long, default_value = "sqlite")]
        store: String,
        /// Evaluation rows: breaches (the default) or all.
        #[arg(long, default_value = "breaches")]
        evaluations: String,
        /// Also print one JSON object, as the last line.
        #[arg(long)]
        json: bool,
        /// Another vet-coordinator build to run (b) and (c) against too.
        #[arg(long)]
        before: Option<std::path::PathBuf>,
    },
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
        Cmd::Claims {
            agents,
            claims,
            concurrency,
            quiet_secs,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            for (lifted, what) in [(true, "limit lifted"), (false, "default limit")] {
                let r = rt.block_on(claims::flood(
                    agents,
                    claims,
                    concurrency,
                    std::time::Duration::from_secs(quiet_secs),
                    lifted,
                ))?;
                println!(
                    "{agents} agents × 10 batches/s; {claims} claims of unknown MACs at concurrency {concurrency}, {what}: \
                     quiet p50 {:.1} ms p99 {:.1} ms ({} batches); flood ({:.1} s) p50 {:.1} ms p99 {:.1} ms ({} batches); p99 ratio {:.2}; answers {:?}",
                    r.quiet.p50_ms,
                    r.quiet.p99_ms,
                    r.quiet.batches,
                    r.flood_secs,
                    r.flood.p50_ms,
                    r.flood.p99_ms,
                    r.flood.batches,
                    r.flood.p99_ms / r.quiet.p99_ms,
                    r.answers
                );
            }
            Ok(())
        }
        Cmd::Ingest {
            samples,
            fleet_secs,
            fleet_agents,
            store,
            evaluations,
            json,
            before,
        } => ingest_cmd::run(ingest_cmd::Opts {
            samples,
            fleet_secs,
            fleet_agents,
            store,
            evaluations: evaluations
                .parse()
                .map_err(|e| anyhow::anyhow!("--evaluations {e}"))?,
            json,
            before,
        }),
    }
}
