//! `sleep`: waits `{"seconds": 0.5}` (default 1), reporting progress in tenths, and returns
//! `{"slept_s": 0.5}`. For demos and tests.

use super::payload::SleepPayload;
use super::{fatal, Attempt, Executor, JobContext};
use crate::core::Outcome;
use std::time::Duration;

pub struct SleepExecutor;

impl Executor for SleepExecutor {
    fn run(&self, ctx: JobContext) -> Attempt {
        Box::pin(sleep(ctx))
    }
}

async fn sleep(ctx: JobContext) -> Outcome {
    let payload = match SleepPayload::parse(&ctx.spec.payload) {
        Ok(payload) => payload,
        Err(e) => return fatal(e.to_string()),
    };
    let tenth = Duration::from_secs_f64(payload.seconds / 10.0);
    for step in 1..=10u8 {
        tokio::time::sleep(tenth).await;
        if step < 10 {
            ctx.progress.report(step * 10, format!("slept {}0%", step));
        }
    }
    ctx.result
        .set(serde_json::json!({"slept_s": payload.seconds}).to_string());
    Outcome::Succeeded
}
