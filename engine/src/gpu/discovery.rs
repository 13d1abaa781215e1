//! Which GPUs this machine has.

use super::{GpuError, GIB};
use cudarc::driver::CudaContext;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_mem_gb: f64,
    pub free_mem_gb: f64,
    pub compute_capability: (i32, i32),
}

/// Whether the CUDA driver library can be loaded here.
pub fn driver_present() -> bool {
    // Safety: only probes whether the shared library loads; calls nothing in it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The GPUs of this machine; none where there is no CUDA driver.
pub fn discover() -> Result<Vec<GpuInfo>, GpuError> {
    if !driver_present() {
        return Ok(Vec::new());
    }
    let count = CudaContext::device_count()? as usize;
    (0..count).map(describe).collect()
}

fn describe(ordinal: usize) -> Result<GpuInfo, GpuError> {
    let ctx = CudaContext::new(ordinal)?;
    let (free, total) = ctx.mem_get_info()?;
    Ok(GpuInfo {
        ordinal,
        name: ctx.name()?,
        total_mem_gb: total as f64 / GIB,
        free_mem_gb: free as f64 / GIB,
        compute_capability: ctx.compute_capability()?,
    })
}

/// GPU memory free now on `ordinal`, in whole GB (what an agent's claim offers).
pub fn free_mem_gb(ordinal: usize) -> Result<u32, GpuError> {
    if !driver_present() {
        return Err(GpuError::NoDriver);
    }
    let count = CudaContext::device_count()? as usize;
    if ordinal >= count {
        return Err(GpuError::NoSuchGpu { ordinal, count });
    }
    let (free, _) = CudaContext::new(ordinal)?.mem_get_info()?;
    Ok((free as f64 / GIB).floor() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_never_panics_and_agrees_with_the_driver() {
        let gpus = discover().expect("discovery works with or without a driver");
        if !driver_present() {
            assert!(gpus.is_empty());
            assert_eq!(free_mem_gb(0), Err(GpuError::NoDriver));
        }
        for gpu in &gpus {
            assert!(
                gpu.total_mem_gb > 0.0 && gpu.free_mem_gb <= gpu.total_mem_gb,
                "{gpu:?}"
            );
        }
    }
}
