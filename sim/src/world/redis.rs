//! The simulated Redis: a MemStore on the simulated clock, which can be down (restarting),
//! and which on restart keeps what its persistence setting would keep.

use crate::scenario::Persistence;
use drover_engine::core::{EngineConfig, Time};
use drover_engine::store::MemStore;

pub struct SimRedis {
    pub store: MemStore,
    pub persistence: Persistence,
    /// While down, every request is dropped (the client sees a failed connection).
    pub down_until: Option<Time>,
    pub restarts: u64,
    /// Acknowledged jobs a restart dropped (before producers resubmitted them).
    pub jobs_dropped: u64,
}

impl SimRedis {
    pub fn new(config: EngineConfig, persistence: Persistence) -> SimRedis {
        let mut store = MemStore::new(config);
        store.record_history();
        SimRedis {
            store,
            persistence,
            down_until: None,
            restarts: 0,
            jobs_dropped: 0,
        }
    }

    pub fn is_up(&self, now: Time) -> bool {
        self.down_until.is_none_or(|until| now >= until)
    }

    /// Whether a restart under this persistence setting loses acknowledged writes.
    pub fn restart_loses_writes(&self) -> bool {
        self.persistence != Persistence::AofAlways
    }

    /// The store a restart comes back with: unchanged (aof-always), the state of the last
    /// fsync (aof-everysec, from `synced`), or empty (none).
    pub fn crash(&mut self, now: Time, until: Time, synced: Option<MemStore>) {
        self.restarts += 1;
        self.down_until = Some(until);
        let before = self.store.counts();
        let live_before = before.queued + before.delayed + before.leased;
        let mut recovered = match self.persistence {
            Persistence::AofAlways => return,
            Persistence::AofEverysec => {
                synced.unwrap_or_else(|| MemStore::new(self.store.config().clone()))
            }
            Persistence::None => MemStore::new(self.store.config().clone()),
        };
        recovered.record_history();
        let after = recovered.counts();
        self.jobs_dropped +=
            live_before.saturating_sub(after.queued + after.delayed + after.leased);
        debug_assert!(now >= Time::ZERO);
        self.store = recovered;
    }
}
