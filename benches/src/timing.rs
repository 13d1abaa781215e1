//! A store wrapper that times claims: the round trip of every request that carries a claim.

use drover_engine::core::MachineId;
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::journal::{EntryId, JournalEntry};
use drover_engine::store::{Refusal, Reply, Request};
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    claims: Arc<Mutex<Histogram<u64>>>,
}

impl<S: SharedStore> Timed<S> {
    pub fn new(inner: S) -> Timed<S> {
        let histogram = Histogram::new_with_max(60_000_000, 3).expect("valid bounds");
        Timed {
            inner,
            claims: Arc::new(Mutex::new(histogram)),
        }
    }

    /// Claim round trips in microseconds.
    pub fn claims(&self) -> Histogram<u64> {
        self.claims.lock().expect("no panics while held").clone()
    }
}

fn carries_claim(request: &Request) -> bool {
    match request {
        Request::Claim { .. } => true,
        Request::Batch(requests) => requests.iter().any(|r| matches!(r, Request::Claim { .. })),
        _ => false,
    }
}

impl<S: SharedStore> SharedStore for Timed<S> {
    async fn apply(&self, request: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        let claim = carries_claim(&request);
        let started = Instant::now();
        let result = self.inner.apply(request).await;
        if claim {
            let micros = started.elapsed().as_micros() as u64;
            self.claims
                .lock()
                .expect("no panics while held")
                .saturating_record(micros);
        }
        result
    }

    async fn wait_wake(&self, machine: MachineId, timeout: Duration) -> Result<bool, StoreError> {
        self.inner.wait_wake(machine, timeout).await
    }

    async fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.follow_journal(after, limit, timeout).await
    }
}
