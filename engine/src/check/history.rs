//! Job histories: what happened to each job, as events. The store emits the lifecycle events
//! (the simulator turns its MemStore's on; the chaos harness rebuilds them from replies), the
//! world emits the GPU events, and the checker judges them.

use crate::core::{JobId, MachineId, StateName, Time, Token};

/// How a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseEnd {
    pub token: Token,
    /// True when the lease holder reported the outcome; false when the store revoked the lease
    /// (expiry, machine lost, cancel, timeout).
    pub reported: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEvent {
    Submitted {
        job: JobId,
        at: Time,
    },
    Leased {
        job: JobId,
        token: Token,
        machine: MachineId,
        at: Time,
    },
    /// Back to its queue, now or after a backoff. `ended` is the lease that ended, if any.
    Requeued {
        job: JobId,
        at: Time,
        ended: Option<LeaseEnd>,
    },
    /// A terminal state. `ended` is the lease that ended, if any.
    Finished {
        job: JobId,
        state: StateName,
        at: Time,
        ended: Option<LeaseEnd>,
    },
    /// A machine started running an attempt on `gpus` of its `capacity` GPUs.
    Started {
        machine: MachineId,
        job: JobId,
        gpus: u32,
        capacity: u32,
        at: Time,
    },
    /// A machine stopped running an attempt (finished, killed, or the machine died).
    Stopped {
        machine: MachineId,
        job: JobId,
        gpus: u32,
        at: Time,
    },
}

impl HistoryEvent {
    pub fn at(&self) -> Time {
        match self {
            HistoryEvent::Submitted { at, .. }
            | HistoryEvent::Leased { at, .. }
            | HistoryEvent::Requeued { at, .. }
            | HistoryEvent::Finished { at, .. }
            | HistoryEvent::Started { at, .. }
            | HistoryEvent::Stopped { at, .. } => *at,
        }
    }
}
