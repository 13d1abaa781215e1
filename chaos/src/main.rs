//! `drover-chaos run FILE`: see the crate's documentation and README.md ("Chaos harness").

use anyhow::Result;
use clap::{Parser, Subcommand};
use drover_chaos::procs::Children;
use drover_chaos::run::{run, RunOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "drover-chaos",
    version,
    about = "Real drover processes, a real Redis, real faults, judged by the simulator's checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario for real: exit 0 if every invariant held, 1 if not, 2 on an error.
    Run {
        /// A simulator scenario file (scenarios/*.toml).
        file: PathBuf,
        /// The seed of the arrivals, service times and faults (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Random faults per scenario hour on top of the scenario's, drawn from the seed.
        #[arg(long)]
        chaos: Option<f64>,
        /// Scenario seconds per real second (service, boot and fault times alike).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Print one JSON object instead of the text summary.
        #[arg(long)]
        json: bool,
        /// Keep the run's logs, Redis files and summary.json in this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The `drover` binary (default: $DROVER_BIN, else next to drover-chaos, else PATH).
        #[arg(long)]
        drover: Option<PathBuf>,
        /// TESTS ONLY: plant a bug (successes skip their fencing check) in a namespace marked
        /// as a test namespace, to show the checker catches it.
        #[arg(long, hide = true)]
        test_skip_fencing: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let children = Children::default();
    let guard = children.guard();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: starting the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = command(cli.command, &children) => code,
            signal = interrupted() => {
                eprintln!("drover-chaos: {signal}: stopping every process it started");
                ExitCode::from(130)
            }
        }
    });
    // Kill the children before the runtime (and the proxies in it) goes.
    drop(guard);
    runtime.shutdown_background();
    code
}

async fn command(command: Command, children: &Children) -> ExitCode {
    let Command::Run {
        file,
        seed,
        chaos,
        time_scale,
        json,
        report,
        drover,
        test_skip_fencing,
    } = command;
    let options = RunOptions {
        file,
        seed,
        chaos,
        time_scale,
        drover: drover_chaos::fleet::drover_binary(drover),
        report,
        progress: !json && std::io::stderr().is_terminal(),
        skip_fencing: test_skip_fencing,
    };
    match run(options, children)
        .await
        .and_then(|r| print(&r, json).map(|_| r))
    {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print(report: &drover_chaos::summary::Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "interrupted",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted"
        }
    }
}
