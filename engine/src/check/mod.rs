//! Job histories and the invariant checker, shared by the simulator and the chaos harness.

pub mod checker;
pub mod from_journal;
pub mod history;

pub use checker::{Checker, Invariant, Violation};
pub use from_journal::JournalHistory;
pub use history::{HistoryEvent, LeaseEnd};
