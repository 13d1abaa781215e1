//! The namespace's journal in Redis: followed as the run goes (progress, and which jobs are
//! finished when a lossy restart makes the producer resubmit), and read again whole after such
//! a restart and at the end. The server's journal is the history that survived: a restart that
//! lost writes lost the journal's tail with them, in the same atomic steps, so reading it again
//! drops exactly what the server forgot, as the simulator's checker rolls back to its last
//! fsync.

use drover_engine::redis::RedisStore;
use drover_engine::store::journal::JournalEntry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BATCH: usize = 2000;

#[derive(Clone)]
pub struct Journal {
    store: RedisStore,
    entries: Arc<Mutex<Vec<JournalEntry>>>,
}

impl Journal {
    pub fn new(store: RedisStore) -> Journal {
        Journal {
            store,
            entries: Arc::default(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends what was read, skipping what a resync already holds.
    fn extend(&self, read: Vec<JournalEntry>) {
        let mut entries = self.lock();
        let last = entries.last().map(|e| e.id);
        entries.extend(read.into_iter().filter(|e| last.is_none_or(|l| e.id > l)));
    }

    /// Reads new entries until `stop` turns true, then once more to the end.
    pub async fn follow(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = *stop.borrow();
            let after = self.lock().last().map(|e| e.id);
            match self.store.read_journal(after, BATCH).await {
                // More may be waiting: read again at once.
                Ok(entries) if !entries.is_empty() => {
                    self.extend(entries);
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

    /// Reads the server's whole journal again and keeps that; returns how many entries the
    /// server no longer holds (a restart lost them).
    pub async fn resync(&self) -> Result<usize, drover_engine::runtime::StoreError> {
        let mut all: Vec<JournalEntry> = Vec::new();
        loop {
            let after = all.last().map(|e| e.id);
            let read = self.store.read_journal(after, BATCH).await?;
            if read.is_empty() {
                break;
            }
            all.extend(read);
        }
        let mut entries = self.lock();
        let kept: std::collections::HashSet<_> = all.iter().map(|e| e.id).collect();
        let lost = entries.iter().filter(|e| !kept.contains(&e.id)).count();
        // Entries the follower appended meanwhile are newer than what was read: keep them.
        let newest = all.last().map(|e| e.id);
        let newer: Vec<JournalEntry> = entries
            .iter()
            .filter(|e| newest.is_some_and(|n| e.id > n))
            .cloned()
            .collect();
        all.extend(newer);
        *entries = all;
        Ok(lost)
    }
}
