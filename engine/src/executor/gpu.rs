//! `gpu`: runs the GPU workload of `crate::gpu::burn` on as many of this machine's GPUs as the
//! job asks for, holding `mem_gb` on each (default: the job's `gpu_mem_gb`, at least 1) for
//! `seconds`. Payload: `{"seconds": 2.0, "mem_gb": 16}`. Running out of GPU memory fails the
//! attempt as `GpuOom`, so the store sends the retry where it fits.

use super::payload::GpuPayload;
use super::{fatal, retryable, Attempt, Executor, JobContext};
use crate::core::{Failure, Outcome};
use crate::gpu::{burn, BurnRequest, GpuError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The GPU executor of one machine: hands each attempt the GPUs no other attempt holds.
#[derive(Clone)]
pub struct GpuExecutor {
    free: Arc<Mutex<Vec<usize>>>,
}

impl GpuExecutor {
    pub fn new(ordinals: Vec<usize>) -> GpuExecutor {
        GpuExecutor {
            free: Arc::new(Mutex::new(ordinals)),
        }
    }

    fn take(&self, count: usize) -> Option<GpuLease> {
        let mut free = self.free.lock().ok()?;
        if free.len() < count {
            return None;
        }
        let keep = free.len() - count;
        let ordinals = free.split_off(keep);
        Some(GpuLease {
            ordinals,
            pool: self.free.clone(),
        })
    }
}

/// GPUs held by one attempt, returned when it ends or is dropped (stopped).
struct GpuLease {
    ordinals: Vec<usize>,
    pool: Arc<Mutex<Vec<usize>>>,
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.lock() {
            free.append(&mut self.ordinals);
            free.sort_unstable();
        }
    }
}

/// Tells the blocking workload to stop when the attempt's future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Executor for GpuExecutor {
    fn run(&self, ctx: JobContext) -> Attempt {
        let executor = self.clone();
        Box::pin(async move { run(executor, ctx).await })
    }
}

async fn run(executor: GpuExecutor, ctx: JobContext) -> Outcome {
    let payload = match GpuPayload::parse(&ctx.spec.payload) {
        Ok(payload) => payload,
        Err(e) => return fatal(e.to_string()),
    };
    let gpus = ctx.spec.requirements.gpus.max(1) as usize;
    let Some(lease) = executor.take(gpus) else {
        // The agent only starts what fits its free GPUs; this is a bookkeeping bug or a race
        // with a stopped attempt still releasing. Another attempt will find them free.
        return retryable(format!("no {gpus} free GPU(s) on this machine"));
    };
    let mem_gb = payload
        .mem_gb
        .unwrap_or(ctx.spec.requirements.gpu_mem_gb.max(1) as f64);
    let request = BurnRequest {
        ordinals: lease.ordinals.clone(),
        mem_gb,
        duration: Duration::from_secs_f64(payload.seconds),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    ctx.progress
        .report(0, format!("running on GPU(s) {:?}", request.ordinals));
    let result = tokio::task::spawn_blocking(move || {
        let result = burn(&request, &stop);
        drop(lease);
        result
    })
    .await;
    match result {
        Ok(Ok(report)) => {
            ctx.progress
                .report(100, format!("{:.0} GB/s", report.gb_per_s));
            let result = serde_json::json!({
                "gpus": report.gpus,
                "bytes_copied": report.bytes_copied,
                "seconds": report.seconds,
                "gb_per_s": report.gb_per_s,
            });
            ctx.result.set(result.to_string());
            Outcome::Succeeded
        }
        Ok(Err(GpuError::OutOfMemory { needed_gb, .. })) => {
            Outcome::Failed(Failure::GpuOom { needed_gb })
        }
        Ok(Err(GpuError::NoDriver)) => fatal("no CUDA driver on this machine"),
        Ok(Err(error)) => retryable(error.to_string()),
        Err(join) => retryable(format!("gpu workload panicked: {join}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_handed_out_once_and_come_back() {
        let executor = GpuExecutor::new(vec![0, 1, 2]);
        let two = executor.take(2).expect("two free");
        assert!(executor.take(2).is_none(), "only one left");
        let one = executor.take(1).expect("one free");
        assert!(two.ordinals.iter().all(|o| !one.ordinals.contains(o)));
        drop(two);
        drop(one);
        assert_eq!(*executor.free.lock().unwrap(), vec![0, 1, 2]);
    }
}
