//! The store as production reaches it: asynchronously, over a connection that can fail.
//!
//! `SharedStore` is implemented by `RedisStore` (engine/src/redis) and by `LocalStore`, a
//! MemStore behind a lock on the wall clock (its journal on), for single-process use and for
//! tests of the API and drivers that do not concern Redis.

use crate::core::{EngineConfig, MachineId, Time};
use crate::store::journal::{EntryId, JournalEntry};
use crate::store::{MemStore, Refusal, Reply, Request};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// A failure to reach the store. The request may or may not have been applied: every request
/// is idempotent, so the caller retries it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store connection: {0}")]
    Connection(String),
    #[error("store request timed out")]
    Timeout,
    #[error("store script failed: {0}")]
    Script(String),
    #[error("store reply could not be decoded: {0}")]
    Decode(String),
}

impl StoreError {
    /// Whether the request may simply not have arrived (a connection lost, a reply timed out):
    /// then it is sent again. Any other error will repeat, and is not.
    pub fn is_transport(&self) -> bool {
        matches!(self, StoreError::Connection(_) | StoreError::Timeout)
    }
}

pub trait SharedStore: Clone + Send + Sync + 'static {
    /// Applies one request atomically. `Ok(Err(refusal))` is the store's answer; `Err` means
    /// the store could not be reached.
    fn apply(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Result<Reply, Refusal>, StoreError>> + Send;

    /// Waits until the store wakes `machine` (work it fits was enqueued) or `timeout` passes.
    /// Returns whether it was woken.
    fn wait_wake(
        &self,
        machine: MachineId,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The journal's entries after `after` (from its oldest with `None`), at most `limit`, in
    /// order; when there are none yet, waits up to `timeout` for some (a blocking read, not a
    /// poll). Empty when none came in time.
    fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<JournalEntry>, StoreError>> + Send;
}

/// Microseconds since the Unix epoch: the store clock of a `LocalStore`.
pub fn wall_clock() -> Time {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time(since.as_micros() as u64)
}

/// A MemStore in this process, on the wall clock.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    store: MemStore,
    last: Time,
    wakes: HashMap<MachineId, Arc<Notify>>,
    /// Woken whenever a call added a journal entry.
    journal: Arc<Notify>,
}

impl LocalStore {
    pub fn new(config: EngineConfig) -> LocalStore {
        let mut store = MemStore::new(config);
        store.record_journal();
        let inner = Inner {
            store,
            last: Time::ZERO,
            wakes: HashMap::new(),
            journal: Arc::default(),
        };
        LocalStore {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn notify_for(inner: &mut Inner, machine: MachineId) -> Arc<Notify> {
        inner.wakes.entry(machine).or_default().clone()
    }

    fn newest_entry(inner: &Inner) -> Option<EntryId> {
        inner
            .store
            .journal()
            .and_then(|j| j.entries().next_back().map(|e| e.id))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Connection("store lock poisoned".into()))
    }

    fn read_journal(inner: &Inner, after: Option<EntryId>, limit: usize) -> Vec<JournalEntry> {
        inner
            .store
            .journal()
            .map(|j| j.read(after, limit.max(1)))
            .unwrap_or_default()
    }
}

impl SharedStore for LocalStore {
    async fn apply(&self, request: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Connection("store lock poisoned".into()))?;
        // The wall clock can step back; the store's clock never does.
        let now = wall_clock().max(inner.last);
        inner.last = now;
        let newest = LocalStore::newest_entry(&inner);
        let result = inner.store.apply(now, request);
        if LocalStore::newest_entry(&inner) != newest {
            inner.journal.notify_waiters();
        }
        let woken: Vec<MachineId> = inner.store.drain_wakes().collect();
        for machine in woken {
            LocalStore::notify_for(&mut inner, machine).notify_one();
        }
        Ok(result)
    }

    async fn wait_wake(&self, machine: MachineId, timeout: Duration) -> Result<bool, StoreError> {
        let notify = {
            let mut inner = self
                .inner
                .lock()
                .map_err(|_| StoreError::Connection("store lock poisoned".into()))?;
            LocalStore::notify_for(&mut inner, machine)
        };
        Ok(tokio::time::timeout(timeout, notify.notified())
            .await
            .is_ok())
    }

    async fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let notify = {
            let inner = self.lock()?;
            let entries = LocalStore::read_journal(&inner, after, limit);
            if !entries.is_empty() {
                return Ok(entries);
            }
            inner.journal.clone()
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the second look, so an entry added in between still wakes it.
        notified.as_mut().enable();
        if LocalStore::read_journal(&*self.lock()?, after, limit).is_empty() {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
        Ok(LocalStore::read_journal(&*self.lock()?, after, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{JobSpec, MachineSpec, Offer, Requirements};

    #[tokio::test]
    async fn a_submission_wakes_the_idle_machine() {
        let store = LocalStore::new(EngineConfig::default());
        let spec = MachineSpec {
            name: "m".into(),
            pool: "p".into(),
            gpus: 1,
            gpu_model: "A".into(),
            gpu_mem_gb: 24,
            disk_gb: 10,
            labels: Default::default(),
            cost_per_hour: 0.0,
            kinds: Vec::new(),
        };
        let Ok(Ok(Reply::Registered { machine })) =
            store.apply(Request::Register(Box::new(spec))).await
        else {
            panic!("register")
        };
        let offer = Offer {
            free_gpus: 1,
            gpu_mem_gb: 24,
            free_disk_gb: 10,
            cached: Default::default(),
        };
        let claimed = store
            .apply(Request::Claim {
                machine,
                seq: 1,
                offer,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            claimed,
            Reply::Claimed {
                grants: vec![],
                idle: true
            }
        );
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.wait_wake(machine, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let job = JobSpec::new(
            "sleep",
            Arc::new(Requirements {
                gpus: 1,
                ..Default::default()
            }),
        );
        store
            .apply(Request::Submit(Box::new(job)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(true));
        assert_eq!(
            store.wait_wake(machine, Duration::from_millis(10)).await,
            Ok(false)
        );
    }
}
