//! `drover`: the API server, the machine agent, the reaper, and a small client.
//!
//! One module per family of commands: `serve` (api, agent, reaper), `client` (submit,
//! status), `inspect` (inspect, journal), `admin` (config, gc; backup and restore in `backup`);
//! `stores` connects to the store every command names.

mod admin;
mod backup;
mod client;
mod inspect;
mod serve;
mod stores;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use drover_engine::core::JobId;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Drover: a GPU job scheduler on Redis"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (and a reaper, unless --no-reaper).
    Api(serve::ApiArgs),
    /// Run the machine agent: claim jobs that fit this machine and run them.
    Agent(serve::AgentArgs),
    /// Run only the reaper.
    Reaper(stores::StoreArgs),
    /// Submit a job through the API.
    Submit(client::SubmitArgs),
    /// Show a job, or the scheduler's stats.
    Status(client::StatusArgs),
    /// Cancel a job.
    Cancel(client::CancelArgs),
    /// List jobs, newest page by page, optionally in one state.
    Jobs(client::JobsArgs),
    /// List the registered machines.
    Machines(client::ListArgs),
    /// The scheduler's stats: queue depth per class, jobs by state, spend, cost per job.
    Stats(client::ListArgs),
    /// Follow a job's events until it ends; exit 0 only if it succeeded.
    Watch(client::WatchArgs),
    /// List this machine's GPUs (through the CUDA driver), as JSON.
    Gpus,
    /// Read what a namespace holds in Redis: a job, a machine, the queues, the namespace.
    Inspect {
        #[command(subcommand)]
        what: inspect::InspectWhat,
    },
    /// Administer Redis: a namespace's engine configuration, old function libraries, backups.
    Admin(admin::AdminArgs),
    /// The namespace's journal: what every store call did, in order.
    #[command(subcommand)]
    Journal(inspect::JournalCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, without a backtrace (RUST_BACKTRACE would
            // add one to anyhow's own report).
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Api(args) => serve::api(args).await,
        Command::Agent(args) => serve::agent(args).await,
        Command::Reaper(args) => serve::reaper(args).await,
        Command::Admin(args) => admin::run(args.command).await,
        Command::Submit(args) => client::submit(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Jobs(args) => client::jobs(args).await,
        Command::Machines(args) => client::machines(args).await,
        Command::Stats(args) => client::stats(args).await,
        Command::Watch(args) => client::watch(args).await,
        Command::Inspect { what } => inspect::inspect(what).await,
        Command::Journal(inspect::JournalCommand::Export {
            redis,
            since,
            until,
            job,
        }) => inspect::journal_export(redis, since, until, job.map(JobId)).await,
        Command::Gpus => {
            println!(
                "{}",
                serde_json::to_string_pretty(&drover_engine::gpu::discover()?)?
            );
            Ok(())
        }
    }
}

pub(crate) fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

pub(crate) fn parse_id(what: &str, id: &str) -> Result<u64> {
    id.trim()
        .parse()
        .with_context(|| format!("{what} id {id:?} is not a number"))
}
