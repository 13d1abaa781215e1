//! `drover-sim`: run a scenario, sweep it over many seeds, or forecast the fleet it needs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover_sim::forecast::slo::Slo;
use drover_sim::forecast::vary::Axis;
use drover_sim::forecast::{search, Forecast, ForecastReport};
use drover_sim::html;
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
        /// Also writes one self-contained HTML page with charts into this folder.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
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
        /// Also writes one self-contained HTML page with charts into this folder.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Measures the simulator on a scenario against a bare binary-heap M/M/c loop over the
    /// same number of jobs.
    Speed {
        file: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Runs a scenario over a grid of values of its numeric fields, several seeds a point, and
    /// finds the cheapest point that meets every SLO.
    Forecast {
        file: PathBuf,
        /// A numeric field and its values: KEY=LO..HI[:STEP] or KEY=A,B,C, e.g.
        /// pool.gpu.machines=8..16 or engine.lease_ttl=10s..60s:10s. Repeat for a grid.
        #[arg(long, value_name = "KEY=LO..HI[:STEP]", required = true)]
        vary: Vec<String>,
        /// A bound on a figure, judged at the worse end of its 95% interval, e.g.
        /// wait_p99<=30s, jct_p50<=2m, dead_rate<=0.001, utilization>=0.6, cost_per_job<=0.02.
        #[arg(long, value_name = "EXPR")]
        slo: Vec<String>,
        /// Seeds a point: the scenario's seed and the ones after it.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Searches this varied field by bisection (it must make the SLOs easier to meet as it
        /// grows, as machines do) instead of running every value.
        #[arg(long, value_name = "KEY")]
        minimize: Option<String>,
        /// Worker threads (default: every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
        /// Also writes one self-contained HTML page with charts into this folder.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
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
            report: report_dir,
        } => {
            check_chaos(chaos)?;
            let scenario = load(&file)?;
            let seed = seed.unwrap_or(scenario.seed);
            let bar = progress_bar(FRACTION_TEMPLATE);
            let report = run(scenario, seed, chaos, |fraction| {
                if let Some(bar) = &bar {
                    bar.set_position((fraction * 1000.0) as u64);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(dir) = report_dir {
                let name = format!("{}-run-seed{seed}.html", html::file_stem(&report.scenario));
                write_report(&dir, &name, &html::run_page(&report))?;
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
            report: report_dir,
        } => {
            check_chaos(chaos)?;
            let (from, to) = parse_seeds(&seeds)?;
            let scenario = load(&file)?;
            let bar = progress_bar(RUNS_TEMPLATE).inspect(|b| b.set_length(to - from));
            let report = sweep(scenario.clone(), from, to, chaos, threads, |_| {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(dir) = report_dir {
                // The first seed again, in full, for the page's run charts.
                let first = run(scenario.clone(), from, chaos, |_| {});
                let name = format!("{}-sweep.html", html::file_stem(&report.scenario));
                write_report(&dir, &name, &html::sweep_page(&report, &first))?;
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
        Command::Speed { file, seed, json } => {
            let scenario = load(&file)?;
            let seed = seed.unwrap_or(scenario.seed);
            let report = drover_sim::baseline::speed_check(scenario, seed);
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Forecast {
            file,
            vary,
            slo,
            seeds,
            minimize,
            threads,
            json,
            report: report_dir,
        } => {
            let (spec, report) = forecast(&file, &vary, &slo, seeds, minimize.as_deref(), threads)?;
            if let Some(dir) = report_dir {
                let detail = forecast_detail(&spec, &report)?;
                let name = format!("{}-forecast.html", html::file_stem(&report.scenario));
                write_report(&dir, &name, &html::forecast_page(&report, detail.as_ref()))?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human());
            }
            let violations: u64 = report.points.iter().map(|p| p.violations).sum();
            Ok(if violations > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn forecast(
    file: &std::path::Path,
    vary: &[String],
    slo: &[String],
    seeds: u64,
    minimize: Option<&str>,
    threads: usize,
) -> anyhow::Result<(Forecast, ForecastReport)> {
    anyhow::ensure!(
        (1..=1000).contains(&seeds),
        "--seeds {seeds}: give 1 to 1000 seeds a point (2 or more for a confidence interval)"
    );
    let axes = vary
        .iter()
        .map(|v| Axis::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, axis) in axes.iter().enumerate() {
        if axes[..i].iter().any(|a| a.key() == axis.key()) {
            anyhow::bail!("--vary {}: the field is varied twice", axis.key());
        }
    }
    let slos = slo
        .iter()
        .map(|s| Slo::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the scenario", file.display()))?;
    let spec = Forecast {
        text,
        file: file.display().to_string(),
        axes,
        slos,
        seeds,
        threads,
    };
    let planned = match minimize {
        Some(key) => search::planned_points(&spec, key),
        None => spec.axes.iter().map(|a| a.values.len() as u64).product(),
    };
    let bar = progress_bar(RUNS_TEMPLATE).inspect(|b| b.set_length(planned * seeds));
    let tick = || {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    };
    let report = match minimize {
        Some(key) => spec.run_search(key, tick),
        None => spec.run_grid(tick),
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    Ok((spec, report))
}

/// One run of the recommended point (or the first) with the first seed, for the page's run
/// charts.
fn forecast_detail(
    spec: &Forecast,
    report: &ForecastReport,
) -> anyhow::Result<Option<drover_sim::run::RunReport>> {
    let point = report
        .points
        .iter()
        .find(|p| Some(&p.params) == report.recommended.as_ref())
        .or(report.points.first());
    let Some(point) = point else {
        return Ok(None);
    };
    let scenario = spec.scenario_at(&point.values)?;
    let seed = report.seeds.first().copied().unwrap_or(scenario.seed);
    Ok(Some(run(scenario, seed, None, |_| {})))
}

fn write_report(dir: &std::path::Path, name: &str, page: &str) -> anyhow::Result<()> {
    let path = html::write(dir, name, page)
        .with_context(|| format!("--report {}: cannot write the report", dir.display()))?;
    eprintln!("report: {}", path.display());
    Ok(())
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

/// How the bar reads for one run, and for many (with a count and an estimate of the time left).
const FRACTION_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {percent}%";
const RUNS_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} runs, ETA {eta}";

/// A progress bar on stderr, shown after a second, only when stderr is a terminal.
fn progress_bar(template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(1000);
    bar.set_style(ProgressStyle::with_template(template).ok()?);
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
