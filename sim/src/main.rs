//! `drover-sim`: run a scenario, or sweep it over many seeds.

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover_sim::run::run;
use drover_sim::scenario::Scenario;
use drover_sim::sweep::sweep;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "drover-sim",
    version,
    about = "Deterministic simulator for the Drover GPU job scheduler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario once.
    Run {
        /// The scenario file (see scenarios/README.md).
        file: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Adds random faults of every kind, this many per simulated hour.
        #[arg(long, value_name = "RATE")]
        chaos: Option<f64>,
        /// One JSON object instead of the readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Run one scenario under many seeds, on every core; report the failing seeds.
    Sweep {
        file: PathBuf,
        /// Seeds as A..B (B excluded), e.g. 0..200.
        #[arg(long, value_name = "A..B")]
        seeds: String,
        #[arg(long, value_name = "RATE")]
        chaos: Option<f64>,
        /// Worker threads (default: every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn load(file: &std::path::Path) -> anyhow::Result<Arc<Scenario>> {
    Ok(Arc::new(Scenario::load(file)?))
}

fn check_chaos(chaos: Option<f64>) -> anyhow::Result<()> {
    match chaos {
        Some(rate) if !(rate.is_finite() && (0.0..=10_000.0).contains(&rate)) => {
            anyhow::bail!("--chaos {rate}: the rate must be between 0 and 10000 faults per hour")
        }
        _ => Ok(()),
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            file,
            seed,
            chaos,
            json,
        } => {
            check_chaos(chaos)?;
            let scenario = load(&file)?;
            let seed = seed.unwrap_or(scenario.seed);
            let bar = progress_bar();
            let report = run(scenario, seed, chaos, |fraction| {
                if let Some(bar) = &bar {
                    bar.set_position((fraction * 1000.0) as u64);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human());
            }
            Ok(if report.violation_count > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Sweep {
            file,
            seeds,
            chaos,
            threads,
            json,
        } => {
            check_chaos(chaos)?;
            let (from, to) = parse_seeds(&seeds)?;
            let scenario = load(&file)?;
            let bar = progress_bar().inspect(|b| b.set_length(to - from));
            let report = sweep(scenario, from, to, chaos, threads, |_| {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human(&file));
            }
            Ok(if report.failing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn parse_seeds(text: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = text
        .split_once("..")
        .with_context(|| format!("--seeds {text:?}: expected A..B, e.g. 0..200"))?;
    let from: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: {a:?} is not a number"))?;
    let to: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("--seeds {text:?}: {b:?} is not a number"))?;
    anyhow::ensure!(from < to, "--seeds {text:?}: the range is empty");
    Ok((from, to))
}

/// A progress bar on stderr, shown after a second, only when stderr is a terminal.
fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent}%").ok()?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let shown = bar.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        if !shown.is_finished() {
            shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    });
    Some(bar)
}

// The simulator allocates and frees many small objects per event; mimalloc keeps that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
