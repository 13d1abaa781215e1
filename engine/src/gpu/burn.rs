//! The `gpu` executor's workload: hold `mem_gb` on each GPU and stream it through the copy
//! engines until the time is up or the attempt is stopped, then read a sample back and check it.

use super::{GpuError, GIB};
use cudarc::driver::sys::cudaError_enum;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct BurnRequest {
    pub ordinals: Vec<usize>,
    /// GPU memory to hold on each GPU, in GB (a job's `gpu_mem_gb`, or its payload's).
    pub mem_gb: f64,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BurnReport {
    pub gpus: usize,
    pub bytes_copied: u64,
    pub seconds: f64,
    /// Device-to-device copy rate over all GPUs, in GB/s.
    pub gb_per_s: f64,
    /// Stopped before its time (the lease was revoked, or the machine drains).
    pub stopped: bool,
}

/// Bytes compared after the run: enough to catch a broken copy, cheap to read back.
const CHECK_BYTES: usize = 1 << 20;

struct Held {
    stream: Arc<CudaStream>,
    a: CudaSlice<u8>,
    b: CudaSlice<u8>,
}

/// Runs the workload; blocking (call it from a blocking thread). `stop` ends it early.
pub fn burn(request: &BurnRequest, stop: &AtomicBool) -> Result<BurnReport, GpuError> {
    if !super::driver_present() {
        return Err(GpuError::NoDriver);
    }
    let half = ((request.mem_gb * GIB) as usize / 2).max(CHECK_BYTES);
    let pattern: Vec<u8> = (0..CHECK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let mut held = Vec::with_capacity(request.ordinals.len());
    for &ordinal in &request.ordinals {
        held.push(hold(ordinal, half, &pattern, request.mem_gb)?);
    }
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut stopped = false;
    while started.elapsed() < request.duration {
        if stop.load(Ordering::Relaxed) {
            stopped = true;
            break;
        }
        for gpu in &mut held {
            gpu.stream.memcpy_dtod(&gpu.a, &mut gpu.b)?;
            gpu.stream.memcpy_dtod(&gpu.b, &mut gpu.a)?;
            bytes += 2 * half as u64;
        }
        for gpu in &held {
            gpu.stream.synchronize()?;
        }
    }
    for (gpu, &ordinal) in held.iter().zip(&request.ordinals) {
        let back = gpu.stream.clone_dtoh(&gpu.a.slice(0..CHECK_BYTES))?;
        if back != pattern {
            return Err(GpuError::Corrupted { ordinal });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BurnReport {
        gpus: held.len(),
        bytes_copied: bytes,
        seconds,
        gb_per_s: bytes as f64 / GIB / seconds.max(1e-9),
        stopped,
    })
}

/// Allocates two halves on `ordinal` and writes the check pattern at the start of the first.
fn hold(ordinal: usize, half: usize, pattern: &[u8], mem_gb: f64) -> Result<Held, GpuError> {
    let count = CudaContext::device_count()? as usize;
    if ordinal >= count {
        return Err(GpuError::NoSuchGpu { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal)?;
    let stream = ctx.default_stream();
    let oom = |e: DriverError| match e.0 {
        cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
            let free_gb = ctx
                .mem_get_info()
                .map_or(0, |(free, _)| (free as f64 / GIB) as u32);
            GpuError::OutOfMemory {
                ordinal,
                needed_gb: mem_gb.ceil() as u32,
                free_gb,
            }
        }
        _ => GpuError::from(e),
    };
    let mut a = stream.alloc_zeros::<u8>(half).map_err(oom)?;
    let b = stream.alloc_zeros::<u8>(half).map_err(oom)?;
    stream.memcpy_htod(pattern, &mut a.slice_mut(0..pattern.len()))?;
    Ok(Held { stream, a, b })
}
