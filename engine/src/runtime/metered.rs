//! A `SharedStore` that counts its requests by kind and outcome, for `/metrics`: how often the
//! store refused, and how often it could not be reached (the "Redis errors" of the alerts).

use super::store::{SharedStore, StoreError};
use crate::core::MachineId;
use crate::store::journal::{EntryId, JournalEntry};
use crate::store::{Refusal, Reply, Request};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests by (request kind, outcome), outcome being "ok", "refused" or "error".
pub type RequestCounts = BTreeMap<(&'static str, &'static str), u64>;

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    counts: Arc<Mutex<RequestCounts>>,
}

impl<S: SharedStore> Metered<S> {
    pub fn new(inner: S) -> Metered<S> {
        Metered {
            inner,
            counts: Arc::default(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn counts(&self) -> RequestCounts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((kind, outcome)).or_default() += 1;
        }
    }
}

impl<S: SharedStore> SharedStore for Metered<S> {
    async fn apply(&self, request: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        let kind = request.kind();
        let result = self.inner.apply(request).await;
        let outcome = match &result {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "refused",
            Err(_) => "error",
        };
        self.count(kind, outcome);
        result
    }

    async fn wait_wake(&self, machine: MachineId, timeout: Duration) -> Result<bool, StoreError> {
        let result = self.inner.wait_wake(machine, timeout).await;
        if result.is_err() {
            self.count("wait_wake", "error");
        }
        result
    }

    async fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let result = self.inner.follow_journal(after, limit, timeout).await;
        if result.is_err() {
            self.count("follow_journal", "error");
        }
        result
    }
}
