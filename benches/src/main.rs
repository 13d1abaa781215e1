//! `drover-bench e2e`: submit, claim and complete no-op jobs through a real Redis with several
//! in-process agents (the production agent driver and store code), and report throughput and
//! claim latency; with `--peer bullmq`, run BullMQ's equivalent on the same Redis in the same
//! run and report the ratio. `drover-bench fleet`: Redis's cost as the fleet grows
//! (`--machines N --jobs-per-sec R`). `drover-bench cost`: Redis's time per job by request.
//!
//! `cargo run --release -p drover-bench -- e2e --redis URL --jobs N --agents A --json`
//! (without `--redis`, a private redis-server is started on a free port).

mod cost;
mod e2e;
mod fleet;
mod peer;
mod timing;
mod usage;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "drover-bench", about = "Drover end-to-end benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit, claim and complete no-op jobs on one Redis.
    E2e(e2e::Args),
    /// Redis CPU per job for submit, claim and complete, from Redis's command statistics.
    Cost(cost::Args),
    /// Redis's cost as the fleet grows: thousands of agents registering, heartbeating, waiting
    /// idle and claiming, with or without a stream of jobs.
    Fleet(fleet::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::E2e(args) => runtime.block_on(e2e::run(args)),
        Command::Cost(args) => runtime.block_on(cost::run(args)),
        Command::Fleet(args) => runtime.block_on(fleet::run(args)),
    }
}
