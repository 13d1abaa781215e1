//! `sleep`: waits `{"seconds": 0.5}` (default 1), reporting progress in tenths, and returns
//! `{"slept_s": 0.5}`. For demos and tests.

use super::{fatal, Attempt, Executor, JobContext};
use crate::core::Outcome;
use serde::Deserialize;
use std::time::Duration;

/// The longest sleep accepted; beyond it the job's own timeout is the better tool.
const MAX_SECONDS: f64 = 7.0 * 86_400.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    #[serde(default = "one_second")]
    seconds: f64,
}

fn one_second() -> f64 {
    1.0
}

pub struct SleepExecutor;

impl Executor for SleepExecutor {
    fn run(&self, ctx: JobContext) -> Attempt {
        Box::pin(sleep(ctx))
    }
}

async fn sleep(ctx: JobContext) -> Outcome {
    // An empty payload sleeps the default second.
    let text = match ctx.spec.payload.trim() {
        "" | "null" => "{}",
        text => text,
    };
    let payload: SleepPayload = match serde_json::from_str(text) {
        Ok(payload) => payload,
        Err(e) => return fatal(format!("sleep payload: {e}")),
    };
    if !(0.0..=MAX_SECONDS).contains(&payload.seconds) {
        return fatal(format!("sleep payload: seconds must be 0 to {MAX_SECONDS}"));
    }
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
