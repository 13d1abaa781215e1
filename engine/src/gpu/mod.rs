//! GPUs, found and driven through the CUDA driver API (cudarc, loaded at run time so that
//! Drover builds and runs on machines without CUDA: there, discovery finds no GPU).
//!
//! - `discovery`: which GPUs this machine has, their model and memory, memory free now;
//! - `burn`: a GPU workload for the `gpu` executor: holds the job's GPU memory and keeps the
//!   copy engines busy for the job's duration, verifying the data at the end. Running out of
//!   memory is reported as such, so the store can send the retry where it fits.

pub mod burn;
pub mod discovery;

pub use burn::{burn, BurnReport, BurnRequest};
pub use discovery::{discover, driver_present, free_mem_gb, GpuInfo};

/// What can go wrong with a GPU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver on this machine")]
    NoDriver,
    #[error("GPU {ordinal} does not exist (this machine has {count})")]
    NoSuchGpu { ordinal: usize, count: usize },
    /// The allocation did not fit: `needed_gb` per GPU was asked for.
    #[error("GPU {ordinal} out of memory: {needed_gb} GB asked, {free_gb} GB free")]
    OutOfMemory {
        ordinal: usize,
        needed_gb: u32,
        free_gb: u32,
    },
    #[error("GPU {ordinal}: the data read back differs from what was written")]
    Corrupted { ordinal: usize },
    #[error("CUDA driver: {0}")]
    Driver(String),
}

impl From<cudarc::driver::DriverError> for GpuError {
    fn from(error: cudarc::driver::DriverError) -> GpuError {
        GpuError::Driver(format!("{error:?}"))
    }
}

const GIB: f64 = (1u64 << 30) as f64;
