//! `drover inspect` and `drover journal`: what a namespace holds and what happened to it.

use crate::stores::{connect_reader, RedisArgs};
use crate::{parse_id, print_report};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use drover_engine::core::{JobId, MachineId, Span, Time};
use drover_engine::store::journal::JournalEntry;

#[derive(Subcommand)]
pub(crate) enum InspectWhat {
    /// A job: state, attempt, lease token and expiry, machine, class, and its history so far.
    Job {
        id: String,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// A machine: its spec, leases and last heartbeat.
    Machine {
        id: String,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// Queue depth per class, with the head and the oldest job's wait.
    Queues {
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// The namespace's data layout, counters and keys, and the function libraries loaded.
    Namespace {
        /// Also decode every key and report whatever does not add up (reads the whole
        /// namespace).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// Everything the namespace holds, decoded (the form the conformance suite compares).
    Dump {
        #[command(flatten)]
        opts: InspectOpts,
    },
}

#[derive(Args)]
pub(crate) struct InspectOpts {
    /// redis://HOST:PORT (rediss:// for TLS, redis+cluster://... for a cluster).
    #[arg(long)]
    pub(crate) redis: String,
    #[arg(long, default_value = "drover")]
    pub(crate) namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn inspect(what: InspectWhat) -> Result<()> {
    match what {
        InspectWhat::Job { id, opts } => {
            let id = JobId(parse_id("job", &id)?);
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let Some(report) = store.inspect_job(id).await? else {
                bail!("job {} not found in namespace {:?}", id.0, opts.namespace);
            };
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Machine { id, opts } => {
            let id = MachineId(parse_id("machine", &id)?);
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let Some(report) = store.inspect_machine(id).await? else {
                bail!(
                    "machine {} not found in namespace {:?}",
                    id.0,
                    opts.namespace
                );
            };
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Queues { opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let report = store.inspect_queues().await?;
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Namespace { check, opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let report = store.inspect_namespace(check).await?;
            print_report(&report, opts.json, |r| r.render())?;
            if report.anomalies.as_ref().is_some_and(|a| !a.is_empty()) {
                bail!("the namespace's keys do not add up (see the anomalies above)");
            }
            Ok(())
        }
        InspectWhat::Dump { opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let dump = store.dump().await?;
            // The dump is for machines and diffs: JSON either way.
            println!("{}", serde_json::to_string_pretty(&dump)?);
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum JournalCommand {
    /// Write the journal as JSON lines, one event a line (schema in README, "The journal").
    Export {
        #[command(flatten)]
        redis: RedisArgs,
        /// Only entries at or after this store time: µs since the Unix epoch, or an age
        /// ("2h": two hours before the newest entry).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this store time (µs, or an age as for --since).
        #[arg(long)]
        until: Option<String>,
        /// Only the events of this job.
        #[arg(long)]
        job: Option<u64>,
    },
}

/// A store time given as µs since the epoch, or as an age before `newest`.
pub(crate) fn store_time(arg: &str, flag: &str, newest: Time) -> Result<Time> {
    if let Ok(us) = arg.parse::<u64>() {
        return Ok(Time(us));
    }
    let age = Span::parse(arg).map_err(|e| {
        anyhow::anyhow!("{flag} {arg:?}: neither µs since the epoch nor an age like 2h ({e})")
    })?;
    Ok(Time(newest.0.saturating_sub(age.as_micros())))
}

/// `drover journal export`: the journal's entries, oldest first, as JSON lines on stdout.
pub(crate) async fn journal_export(
    redis: RedisArgs,
    since: Option<String>,
    until: Option<String>,
    job: Option<JobId>,
) -> Result<()> {
    use std::io::Write;
    let store = connect_reader(&redis.redis, &redis.namespace).await?;
    // Read in pages; the journal is bounded (`[engine.journal] max_len`).
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map(|e: &JournalEntry| e.id);
        let page = store.read_journal(after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let newest = entries.last().map_or(Time::ZERO, |e| e.at);
    let since = since
        .map(|s| store_time(&s, "--since", newest))
        .transpose()?;
    let until = until
        .map(|u| store_time(&u, "--until", newest))
        .transpose()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for entry in entries {
        if since.is_some_and(|s| entry.at < s) || until.is_some_and(|u| entry.at >= u) {
            continue;
        }
        let entry = match job {
            Some(job) => JournalEntry {
                events: entry
                    .events
                    .into_iter()
                    .filter(|e| e.job() == Some(job))
                    .collect(),
                ..entry
            },
            None => entry,
        };
        for line in entry.export_lines() {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
