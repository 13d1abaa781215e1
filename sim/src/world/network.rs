//! The network between each machine and Redis: a base one-way latency, latency spikes, and
//! partitions. Partitioned machines' requests and replies are dropped; their clients time out.

use super::World;
use drover_engine::core::Span;

impl World {
    pub(super) fn latency(&self, machine: u32) -> Span {
        self.scenario
            .redis
            .latency
            .plus(self.machines[machine as usize].extra_latency)
    }

    pub(super) fn cut_off(&self, machine: u32) -> bool {
        self.machines[machine as usize].partitions > 0
    }
}
