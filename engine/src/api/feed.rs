//! The API process's one reader of the journal. It follows the journal with blocking reads
//! (no polling), from its oldest entry, hands every entry to the histograms (`observer`) and
//! fans it out to the event streams (`events`) over a broadcast channel, so that a thousand
//! watchers cost one reader.

use super::attempts::SharedAttempts;
use super::observer::SharedObserved;
use crate::runtime::SharedStore;
use crate::store::journal::JournalEntry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Entries read at once.
const PAGE: usize = 1000;
/// How long one blocking read waits for new entries.
const WAIT: Duration = Duration::from_secs(5);
/// Entries a slow event stream may fall behind before it catches up from the store.
const CHANNEL: usize = 4096;
/// Pause after a failed read (the store unreachable).
const RETRY: Duration = Duration::from_secs(1);

/// The sending side that event streams subscribe to.
#[derive(Clone)]
pub struct JournalFeed {
    tx: broadcast::Sender<Arc<JournalEntry>>,
}

impl Default for JournalFeed {
    fn default() -> Self {
        JournalFeed {
            tx: broadcast::channel(CHANNEL).0,
        }
    }
}

impl JournalFeed {
    /// Entries read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JournalEntry>> {
        self.tx.subscribe()
    }
}

/// Follows the journal forever.
pub async fn run_feed<S: SharedStore>(
    store: S,
    observed: SharedObserved,
    attempts: SharedAttempts,
    feed: JournalFeed,
) {
    let mut after = None;
    let mut failing = false;
    loop {
        match store.follow_journal(after, PAGE, WAIT).await {
            Ok(entries) => {
                if failing {
                    tracing::info!("journal readable again");
                    failing = false;
                }
                for entry in entries {
                    after = Some(entry.id);
                    if let Ok(mut o) = observed.lock() {
                        o.observe(&entry);
                    }
                    if let Ok(mut a) = attempts.lock() {
                        a.observe(&entry);
                    }
                    // An error only means that no stream is subscribed now.
                    let _ = feed.tx.send(Arc::new(entry));
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the journal; retrying every second");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
