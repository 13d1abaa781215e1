//! `drover admin backup` and `drover admin restore`: one namespace to a file and back
//! (`drover_engine::redis::backup` has the snapshot, the file format and the restore).

use crate::print_report;
use crate::stores::{connect_bulk, RedisArgs};
use anyhow::{Context, Result};
use clap::Args;
use drover_engine::core::Time;
use drover_engine::redis::backup::{Backup, RestoreReport, SnapshotReport, DEFAULT_MAX_KEYS};
use drover_engine::redis::inspect::{utc, when};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The backup file to write (replaced whole, never left half written).
    #[arg(long)]
    out: PathBuf,
    /// Refuse a namespace of more keys than this: the snapshot pauses Redis about 1 s per
    /// 100,000 keys. Raise it for a backup taken from a replica.
    #[arg(long, default_value_t = DEFAULT_MAX_KEYS)]
    max_keys: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// A file `drover admin backup` wrote.
    #[arg(long = "in")]
    input: PathBuf,
    /// redis://HOST:PORT (rediss:// for TLS, redis+cluster:// for a cluster).
    #[arg(long)]
    redis: String,
    /// The namespace to restore into (it must be empty). Default: the backup's own.
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    json: bool,
}

/// What `backup --json` prints.
#[derive(serde::Serialize)]
struct Written {
    file: PathBuf,
    bytes: u64,
    layout: Option<u32>,
    taken_at: Time,
    store_clock: Option<Time>,
    #[serde(flatten)]
    snapshot: SnapshotReport,
}

pub(crate) async fn backup(args: BackupArgs) -> Result<()> {
    let store = connect_bulk(&args.redis.redis, &args.redis.namespace).await?;
    let (backup, snapshot) = store.snapshot_namespace(args.max_keys).await?;
    let bytes = backup
        .write_to(&args.out)
        .with_context(|| format!("writing the backup to {}", args.out.display()))?;
    let written = Written {
        file: args.out,
        bytes,
        layout: backup.header.layout,
        taken_at: backup.header.taken_at,
        store_clock: backup.header.store_clock,
        snapshot,
    };
    print_report(&written, args.json, backup_text)
}

fn backup_text(w: &Written) -> String {
    let s = &w.snapshot;
    let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut out = format!(
        "backed up namespace {:?} to {}\n\
         keys         {} ({} with a time to live): {}\n\
         size         {} bytes\n\
         layout       {}\n\
         taken at     {} (server time)\n\
         redis paused {:.1} ms (the snapshot script: no other client is served meanwhile)\n",
        s.namespace,
        w.file.display(),
        s.keys,
        s.with_ttl,
        kinds.join(", "),
        w.bytes,
        w.layout.map_or("none (no meta)".into(), |l| l.to_string()),
        utc(w.taken_at),
        s.blocked.as_secs_f64() * 1e3,
    );
    if !s.unknown.is_empty() {
        out.push_str(&format!(
            "unknown      keys this engine does not know, carried as they are: {}\n",
            s.unknown.join(", ")
        ));
    }
    out
}

pub(crate) async fn restore(args: RestoreArgs) -> Result<()> {
    let backup = Backup::read_from(&args.input)
        .with_context(|| format!("reading the backup {}", args.input.display()))?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| backup.header.namespace.clone());
    let store = connect_bulk(&args.redis, &namespace).await?;
    let report = store.restore_namespace(&backup).await.with_context(|| {
        format!(
            "restoring {} into namespace {namespace:?}",
            args.input.display()
        )
    })?;
    if let Some(behind) = report.clock_behind {
        tracing::warn!(
            behind_s = behind.as_secs_f64(),
            "this server's clock is behind the backup's store clock: the namespace's time stands \
             still until it catches up (no lease expires, no retry is released meanwhile); fix \
             the clock (NTP) if that is not expected"
        );
    }
    print_report(&report, args.json, restore_text)
}

fn restore_text(r: &RestoreReport) -> String {
    let mut out = format!(
        "restored namespace {:?} (a backup of {:?} taken {})\n\
         keys       {} restored, {} expired since the backup (not restored)\n",
        r.namespace,
        r.from_namespace,
        when(r.taken_at, r.restored_at),
        r.restored,
        r.expired,
    );
    if let Some(clock) = r.store_clock {
        out.push_str(&format!(
            "clock      the store clock resumes from {}\n",
            when(clock, r.restored_at)
        ));
    }
    if !r.unknown.is_empty() {
        out.push_str(&format!(
            "unknown    keys this engine does not know, restored as they were: {}\n",
            r.unknown.join(", ")
        ));
    }
    out.push_str(
        "next       start the API (or a reaper) and the agents with the namespace's configuration \
         (`drover admin config show`); the first to connect loads the function library. Jobs \
         leased at the backup are requeued once their leases expire; check the namespace with \
         `drover inspect namespace --check`.\n",
    );
    out
}
