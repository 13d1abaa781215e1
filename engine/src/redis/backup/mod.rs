//! Backup and restore of one namespace (`drover admin backup` / `drover admin restore`).
//!
//! **The snapshot** (`snapshot.rs`) is one read-only script (`EVAL`, `flags=no-writes`): it
//! lists the namespace's keys (`KEYS {ns}:*`) and reads each one's type, remaining time to live
//! (`PTTL`) and `DUMP` payload, all in the one call. Redis runs nothing else while a script
//! runs, so every key is read at the same instant: no request is ever half in the backup. The
//! keys are carried as Redis holds them, whatever they are, so a key kind this engine does not
//! know (one a newer engine added) is backed up and restored all the same; the reports name
//! such keys. The price is that the server answers no other client for the script's duration
//! (about 1 s per 100,000 keys: README.md, "Backup and restore"), so a namespace of more than
//! `DEFAULT_MAX_KEYS` keys (counted first, with SCAN, which does not block) is refused unless
//! the caller raises the bound; against a replica (the script writes nothing, so a replica
//! runs it) only the replica pauses.
//!
//! **The restore** (`restore.rs`) refuses a file whose checksum does not match, whose data
//! layout this engine does not read, or a target namespace that holds any key; then one script
//! checks again that none of the keys exists (atomically, against a process that started
//! meanwhile), `RESTORE`s them all and gives the namespace a new `meta.epoch` (the function
//! library caches classes and profiles per namespace and epoch, and a server that served this
//! namespace before must not use its old cache for the restored data). A key the target
//! refuses undoes the keys restored before it: the namespace is left empty. Keys with a time to
//! live keep their absolute expiry (the snapshot's server time plus their `PTTL`, restored with
//! `ABSTTL`), as the namespace's own times (lease deadlines, heartbeat expiries, retry times)
//! are absolute store times: one that expired since the backup is not restored, as it would
//! not exist had the server run on.
//!
//! **The file** (`file.rs`), format 1, is three text lines then the keys:
//!
//! ```text
//! drover-backup 1\n                 magic and format version
//! sha256 <64 hex digits>\n          SHA-256 of every byte after this line
//! {"namespace":...}\n               the header, one line of JSON (`Header`)
//! <key records>                     `keys` records, `body_bytes` bytes in all
//! ```
//!
//! The header: `namespace`, `layout` (the namespace's `meta.layout`; null when the namespace
//! held no `meta` yet), `engine` (the drover-engine that wrote the file), `redis_version` (the
//! server the payloads came from: `RESTORE` needs the same or a newer Redis), `taken_at` (µs,
//! the server's `TIME` at the snapshot), `store_clock` (µs, the namespace's store clock then;
//! null without `meta`), `keys` and `body_bytes`.
//!
//! A key record, integers big-endian: the key without its `{ns}:` prefix (u32 length, bytes;
//! restoring into another namespace puts the new prefix in front), its Redis type (u8
//! length, ASCII: `hash`, `zset`, `list`, `stream`, `string`, `set`, read from the payload's
//! RDB type byte; for people, RESTORE does not need it), its `PTTL` (i64 ms, -1:
//! no expiry), its `DUMP` payload (u32 length, bytes; the payload carries its own RDB version
//! and CRC64, which `RESTORE` checks). Records are sorted by key, each key once.

mod file;
mod restore;
mod snapshot;

pub use file::{Backup, Header, KeyRecord, FORMAT};
pub use restore::RestoreReport;
pub use snapshot::{SnapshotReport, DEFAULT_MAX_KEYS};

use crate::runtime::StoreError;

/// Why a backup or a restore did not happen. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a Drover backup: it begins {found:?}, not \"drover-backup <format>\"")]
    NotABackup { found: String },
    #[error(
        "backup format {found} is not one this engine reads (format {FORMAT}): restore it with \
         the drover version that wrote it, or a newer one"
    )]
    UnsupportedFormat { found: String },
    #[error(
        "the backup is corrupt: its header records sha256 {recorded} but its content hashes to \
         {actual} (a damaged or truncated copy): nothing was restored; use another copy"
    )]
    ChecksumMismatch { recorded: String, actual: String },
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    #[error(
        "namespace {namespace:?} holds no keys on this server: nothing to back up (is \
         --namespace right?)"
    )]
    NothingToBackUp { namespace: String },
    #[error(
        "namespace {namespace:?} holds {keys} keys, more than --max-keys {max_keys}: its \
         snapshot would pause this Redis about 1 s per 100,000 keys, and past \
         busy-reply-threshold (5 s by default) other clients are answered BUSY. Take the \
         backup from a replica (--redis a replica's URL: the pause stops no one there) and \
         raise --max-keys"
    )]
    TooLarge {
        namespace: String,
        keys: usize,
        max_keys: usize,
    },
    #[error(
        "the backup holds data in layout {found} and this engine reads layout {ours}: restore \
         it with the engine that wrote it ({engine}), or another of layout {found}"
    )]
    LayoutUnreadable {
        found: String,
        ours: u32,
        engine: String,
    },
    #[error(
        "namespace {namespace:?} on the target is not empty: it holds {keys} key(s) ({examples}); \
         a restore only goes into an empty namespace: choose another --namespace, or delete \
         that namespace's keys first if they are meant to go"
    )]
    TargetNotEmpty {
        namespace: String,
        keys: usize,
        examples: String,
    },
    #[error("the target Redis refused key {key:?} of the backup: {reason}; nothing was restored")]
    RestoreRefused { key: String, reason: String },
}
