//! `drover admin`: the namespace's engine configuration, old function libraries, backup and
//! restore (`backup.rs`).

use crate::backup::{self, BackupArgs, RestoreArgs};
use crate::print_report;
use crate::stores::{connect_admin, connect_reader, RedisArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use drover_engine::core::{EngineConfig, Span};
use drover_engine::redis::config_differences;
use drover_engine::runtime::ConfigFile;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub(crate) struct AdminArgs {
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// The namespace's engine configuration: show it, or change it for every process.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Delete Drover function libraries that no process has announced using within
    /// --older-than (the one this drover loads is always kept).
    Gc {
        #[arg(long)]
        redis: String,
        /// "24h", "30m", ...: keep a library announced more recently than this.
        #[arg(long, default_value = "24h")]
        older_than: String,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent snapshot of one namespace (every key at one instant) to a file.
    Backup(BackupArgs),
    /// Restore a backup file into an empty namespace.
    Restore(RestoreArgs),
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the namespace's engine configuration as an [engine] table (TOML).
    Show(RedisArgs),
    /// Record FILE's [engine] table as the namespace's. Processes running now keep theirs
    /// until restarted; processes started later must bring this one.
    Set {
        /// A config file (its [engine] table is what counts).
        file: PathBuf,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

pub(crate) async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Config(ConfigCommand::Show(redis)) => config_show(redis).await,
        AdminCommand::Config(ConfigCommand::Set { file, redis }) => config_set(&file, redis).await,
        AdminCommand::Gc {
            redis,
            older_than,
            dry_run,
            json,
        } => gc(&redis, &older_than, dry_run, json).await,
        AdminCommand::Backup(args) => backup::backup(args).await,
        AdminCommand::Restore(args) => backup::restore(args).await,
    }
}

/// The [engine] table of a config file, as TOML.
fn engine_toml(config: &EngineConfig) -> Result<String> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        engine: &'a EngineConfig,
    }
    toml::to_string(&File { engine: config }).context("writing the config as TOML")
}

async fn config_show(redis: RedisArgs) -> Result<()> {
    let store = connect_admin(&redis).await?;
    let Some(recorded) = store.namespace_config().await? else {
        bail!(
            "namespace {:?} holds no engine configuration yet: the first process to connect \
             records its own (or record one with `drover admin config set FILE`)",
            redis.namespace
        );
    };
    println!(
        "# The engine configuration of namespace {:?}",
        redis.namespace
    );
    println!("# sha1 {}", recorded.sha1);
    if let Some(by) = &recorded.written_by {
        let at = recorded
            .written_at
            .map_or(String::new(), |t| format!(" at {t} (Unix seconds)"));
        println!("# written by {by}{at}");
    }
    print!("{}", engine_toml(&recorded.config)?);
    Ok(())
}

async fn config_set(file: &Path, redis: RedisArgs) -> Result<()> {
    let config = ConfigFile::load(file)?.engine;
    let store = connect_admin(&redis).await?;
    let previous = store.set_namespace_config(&config).await?;
    let Some(previous) = previous else {
        println!(
            "namespace {:?}: engine configuration recorded (there was none)",
            redis.namespace
        );
        return Ok(());
    };
    let differences = config_differences(&previous.config, &config);
    if differences.is_empty() {
        println!(
            "namespace {:?}: engine configuration unchanged",
            redis.namespace
        );
        return Ok(());
    }
    println!(
        "namespace {:?}: engine configuration changed:",
        redis.namespace
    );
    for d in &differences {
        println!("  {}: {} -> {}", d.field, d.namespace, d.ours);
    }
    println!(
        "Processes running now keep their configuration until restarted (they log a warning \
         within a minute); restart them with this file. Processes started with the old one are \
         refused."
    );
    Ok(())
}

async fn gc(url: &str, older_than: &str, dry_run: bool, json: bool) -> Result<()> {
    let bound = Span::parse(older_than).context("--older-than")?;
    let store = connect_reader(url, "drover").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verdicts = store
        .gc_libraries(Duration::from_micros(bound.as_micros()), now, dry_run)
        .await?;
    print_report(&verdicts, json, |verdicts| {
        let mut out = String::new();
        if verdicts.is_empty() {
            out.push_str("no Drover function libraries on the server\n");
        }
        for v in verdicts {
            let announced = match v.library.announced {
                Some(t) => format!("announced {}s ago", now.saturating_sub(t)),
                None => "never announced".into(),
            };
            out.push_str(&format!(
                "{:<14} {}  ({announced})\n",
                v.action, v.library.name
            ));
        }
        out
    })
}
