//! An agent's own `/metrics` (`drover agent --metrics-listen`): its breaker, running attempts,
//! outbox, store errors and model cache. The breaker lives in each agent, so this is where it is watched.

use super::exposition::Exposition;
use super::metrics::CONTENT_TYPE;
use crate::runtime::model_cache::ModelCacheStats;
use crate::runtime::AgentSnapshot;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

pub fn router(snapshot: watch::Receiver<AgentSnapshot>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&snapshot.borrow());
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text) }
        }),
    )
}

pub fn render(s: &AgentSnapshot) -> String {
    let mut e = Exposition::default();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let (g, c) = ("gauge", "counter");
    e.single(
        "drover_agent_breaker_open",
        g,
        "1 while the store circuit breaker is open or half-open.",
        flag(s.breaker_open),
    );
    e.single(
        "drover_agent_breaker_opened_total",
        c,
        "Times the breaker opened.",
        s.breaker_opened as f64,
    );
    e.single(
        "drover_agent_registered",
        g,
        "1 while the agent holds a machine id.",
        flag(s.machine.is_some()),
    );
    e.single(
        "drover_agent_draining",
        g,
        "1 while the agent drains.",
        flag(s.draining),
    );
    e.single(
        "drover_agent_running_jobs",
        g,
        "Attempts running now.",
        s.running as f64,
    );
    e.single(
        "drover_agent_outbox",
        g,
        "Outcomes waiting to reach the store.",
        s.outbox as f64,
    );
    e.single(
        "drover_agent_store_errors_total",
        c,
        "Store requests that got no answer.",
        s.store_errors as f64,
    );
    e.family(
        "drover_agent_store_faults_total",
        c,
        "Store requests that failed in a way that would repeat (dropped, not resent), by request.",
    );
    for (request, n) in &s.store_faults {
        e.sample(
            "drover_agent_store_faults_total",
            &[("request", request)],
            *n as f64,
        );
    }
    e.single(
        "drover_agent_request_timeouts_total",
        c,
        "Store requests timed out by the agent's link.",
        s.link_failures as f64,
    );
    e.single(
        "drover_agent_attempts_started_total",
        c,
        "Attempts started.",
        s.started as f64,
    );
    e.single(
        "drover_agent_attempts_revoked_total",
        c,
        "Attempts stopped because their lease was revoked.",
        s.revoked as f64,
    );
    e.family(
        "drover_agent_attempts_finished_total",
        c,
        "Attempts finished, by outcome.",
    );
    for (outcome, n) in &s.finished {
        e.sample(
            "drover_agent_attempts_finished_total",
            &[("outcome", outcome)],
            *n as f64,
        );
    }
    gpu_metrics(&mut e, s);
    render_models(&mut e, &s.models);
    e.finish()
}

/// GPU utilisation is `sum(drover_agent_gpus_busy) / sum(drover_agent_gpus)` over agents:
/// each agent knows exactly what its attempts hold, which the store's listings do not say.
fn gpu_metrics(e: &mut Exposition, s: &AgentSnapshot) {
    e.single(
        "drover_agent_gpus",
        "gauge",
        "GPUs this machine offers.",
        s.gpus as f64,
    );
    e.single(
        "drover_agent_gpus_busy",
        "gauge",
        "GPUs held by the attempts running now.",
        s.gpus_busy as f64,
    );
}

/// The model cache (`runtime::model_cache`).
fn render_models(e: &mut Exposition, m: &ModelCacheStats) {
    let (g, c) = ("gauge", "counter");
    let counters = [
        (
            "drover_agent_model_cache_hits_total",
            "Models an attempt needed that were on disk.",
            m.hits,
        ),
        (
            "drover_agent_model_cache_misses_total",
            "Models an attempt needed that were fetched or being fetched.",
            m.misses,
        ),
        (
            "drover_agent_model_fetches_total",
            "Model fetches started (one per model however many attempts wait).",
            m.fetches,
        ),
        (
            "drover_agent_model_bytes_downloaded_total",
            "Bytes of models received over HTTP.",
            m.bytes_downloaded,
        ),
        (
            "drover_agent_model_evictions_total",
            "Models removed from the cache to make room.",
            m.evictions,
        ),
    ];
    for (name, help, value) in counters {
        e.single(name, c, help, value as f64);
    }
    e.single(
        "drover_agent_model_cached",
        g,
        "Models in the cache now.",
        m.cached_models as f64,
    );
    e.single(
        "drover_agent_model_cache_bytes",
        g,
        "Disk the cached models take.",
        m.cached_bytes as f64,
    );
    let failures = "drover_agent_model_fetch_failures_total";
    e.family(
        failures,
        c,
        "Model fetches that failed, by reason (budget: the disk budget could not hold the job's models).",
    );
    for (reason, n) in &m.failures {
        e.sample(failures, &[("reason", reason)], *n as f64);
    }
}
