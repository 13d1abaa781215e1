//! Job histories and the invariant checker, shared by the simulator and the chaos harness.

pub mod history;
