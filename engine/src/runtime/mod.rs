//! The tokio shell around the pure core: how production talks to a store, and the drivers
//! that run the agent and reaper state machines under real time.

pub mod agent_driver;
pub mod clock;
pub mod config_file;
pub mod metered;
pub mod model_cache;
pub mod reaper_driver;
pub mod store;

pub use agent_driver::{AgentDriver, AgentSnapshot, DriverExit, DriverOptions};
pub use clock::MonoClock;
pub use config_file::{ConfigFile, ConfigFileError};
pub use metered::Metered;
pub use model_cache::{Workspace, WorkspaceConfig};
pub use reaper_driver::{run_reaper, ReaperTotals, SharedReaperTotals};
pub use store::{LocalStore, SharedStore, StoreError};
