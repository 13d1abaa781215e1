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
    /// Run a scenario in the simulator and for real, seed by seed, and print them side by side.
    Compare {
        file: PathBuf,
        /// Seeds A..B (B excluded), e.g. 1..4.
        #[arg(long, default_value = "1..4", value_parser = parse_seeds)]
        seeds: std::ops::Range<u64>,
        #[arg(long)]
        chaos: Option<f64>,
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        #[arg(long)]
        json: bool,
        /// Keep each real run's directory under DIR/seed-N.
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long)]
        drover: Option<PathBuf>,
    },
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--seeds {text:?}: expected A..B with A < B, e.g. 1..4");
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a >= b {
        return Err(bad());
    }
    Ok(a..b)
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
    match command {
        Command::Run {
            file,
            seed,
            chaos,
            time_scale,
            json,
            report,
            drover,
            test_skip_fencing,
        } => {
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
                Err(e) => error(e),
            }
        }
        Command::Compare {
            file,
            seeds,
            chaos,
            time_scale,
            json,
            report,
            drover,
        } => {
            let template = RunOptions {
                file,
                seed: None,
                chaos,
                time_scale,
                drover: drover_chaos::fleet::drover_binary(drover),
                report,
                progress: !json && std::io::stderr().is_terminal(),
                skip_fencing: false,
            };
            let compared = drover_chaos::compare::compare(template, seeds, children).await;
            let printed = compared.and_then(|c| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&c)?);
                } else {
                    print!("{}", c.human());
                }
                Ok(c)
            });
            match printed {
                Ok(c) if c.real_violations == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => error(e),
            }
        }
    }
}

fn error(e: anyhow::Error) -> ExitCode {
    eprintln!("Error: {e:#}");
    ExitCode::from(2)
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
