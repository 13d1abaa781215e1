//! Follows the namespace's journal in Redis as the run goes, keeping every entry: the history
//! of leases, outcomes and requeues the checker judges. A Redis restart that lost writes lost
//! the journal's tail with them: `roll_back` drops what the server no longer holds, as the
//! simulator's checker rolls back to its last fsync.

use drover_engine::redis::RedisStore;
use drover_engine::store::journal::{EntryId, JournalEntry};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BATCH: usize = 2000;

#[derive(Clone, Default)]
pub struct Journal {
    entries: Arc<Mutex<Vec<JournalEntry>>>,
}

impl Journal {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last(&self) -> Option<EntryId> {
        self.lock().last().map(|e| e.id)
    }

    /// Reads new entries until `stop` turns true, then once more to the end.
    pub async fn follow(self, store: RedisStore, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = *stop.borrow();
            let read = store.read_journal(self.last(), BATCH).await;
            match read {
                // More may be waiting: read again at once.
                Ok(entries) if !entries.is_empty() => {
                    self.lock().extend(entries);
                    continue;
                }
                _ if stopping => return,
                // Nothing new, or Redis down (a restart): try again shortly.
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// After a restart: drops the entries after `kept` (the newest the server still holds;
    /// `None`: it holds none). Returns how many went.
    pub fn roll_back(&self, kept: Option<EntryId>) -> usize {
        let mut entries = self.lock();
        let keep = entries
            .iter()
            .position(|e| kept.is_none_or(|k| e.id > k))
            .unwrap_or(entries.len());
        let dropped = entries.len() - keep;
        entries.truncate(keep);
        dropped
    }
}

/// The newest journal entry id the server at `url` holds for `namespace`.
pub async fn newest_entry(url: &str, namespace: &str) -> redis::RedisResult<Option<EntryId>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let value: redis::Value = redis::cmd("XREVRANGE")
        .arg(format!("{{{namespace}}}:journal"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let id = match value {
        redis::Value::Array(entries) => entries.into_iter().next().and_then(|entry| match entry {
            redis::Value::Array(parts) => match parts.into_iter().next() {
                Some(redis::Value::BulkString(id)) => String::from_utf8(id).ok(),
                Some(redis::Value::SimpleString(id)) => Some(id),
                _ => None,
            },
            _ => None,
        }),
        _ => None,
    };
    Ok(id.and_then(|id| id.parse().ok()))
}
