//! `GET /metrics`: the store's counts (one `Stats` request per scrape), the wait and run
//! histograms and event counts from the journal, the in-process reaper's totals, store
//! requests by outcome, HTTP requests.
//! When the store does not answer, the local metrics are still served, `drover_store_up 0`.

use super::exposition::Exposition;
use super::observer::Observed;
use super::ApiState;
use crate::runtime::SharedStore;
use crate::store::{Reply, Request, StoreStats};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics<S: SharedStore>(State(state): State<ApiState<S>>) -> impl IntoResponse {
    let stats = match state.call(Request::Stats).await {
        Ok(Reply::Stats(stats)) => Some(stats),
        _ => None,
    };
    let mut e = Exposition::default();
    let up = if stats.is_some() { 1.0 } else { 0.0 };
    e.single(
        "drover_store_up",
        "gauge",
        "1 when the store answered this scrape.",
        up,
    );
    if let Some(stats) = &stats {
        store_metrics(&mut e, stats);
        fleet_gpus(&mut e, &state).await;
    }
    local_metrics(&mut e, &state);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], e.finish())
}

fn store_metrics(e: &mut Exposition, s: &StoreStats) {
    e.family("drover_queue_depth", "gauge", "Queued jobs per class.");
    for class in &s.classes {
        let id = class.class.to_string();
        e.sample("drover_queue_depth", &[("class", &id)], class.queued as f64);
    }
    e.family("drover_jobs", "gauge", "Jobs the store holds, by state.");
    let jobs = &s.jobs;
    for (state, n) in [
        ("queued", jobs.queued),
        ("delayed", jobs.delayed),
        ("leased", jobs.leased),
        ("finished_retained", jobs.finished_retained),
    ] {
        e.sample("drover_jobs", &[("state", state)], n as f64);
    }
    e.single(
        "drover_leases_active",
        "gauge",
        "Leases held by machines.",
        jobs.leased as f64,
    );
    e.family("drover_machines", "gauge", "Registered machines, by state.");
    for (state, n) in &s.machines {
        e.sample("drover_machines", &[("state", state)], *n as f64);
    }
    totals(e, s);
}

fn totals(e: &mut Exposition, s: &StoreStats) {
    let t = &s.totals;
    let c = "counter";
    e.single(
        "drover_jobs_submitted_total",
        c,
        "Jobs accepted.",
        t.submitted as f64,
    );
    e.family(
        "drover_jobs_finished_total",
        c,
        "Jobs that reached a final state.",
    );
    for (state, n) in [
        ("succeeded", t.succeeded),
        ("dead", t.dead),
        ("cancelled", t.cancelled),
        ("timed_out", t.timed_out),
        ("unworkable", t.unworkable),
    ] {
        e.sample("drover_jobs_finished_total", &[("state", state)], n as f64);
    }
    let dead = "Dead letters: jobs out of attempts or failed for good.";
    e.single("drover_dead_letters_total", c, dead, t.dead as f64);
    let retries = "Attempts that failed and were retried.";
    e.single("drover_job_retries_total", c, retries, t.retries as f64);
    let revoked = "Leases revoked (expired, machine lost, over time).";
    e.single("drover_leases_revoked_total", c, revoked, t.revoked as f64);
    e.single(
        "drover_spend_dollars",
        "gauge",
        "Machine time bought so far.",
        s.spend,
    );
    let per_job = if t.succeeded > 0 {
        s.spend / t.succeeded as f64
    } else {
        0.0
    };
    let help = "Spend per succeeded job (0 before the first).";
    e.single("drover_cost_per_job_dollars", "gauge", help, per_job);
}

fn local_metrics<S: SharedStore>(e: &mut Exposition, state: &ApiState<S>) {
    if let Ok(observed) = state.observed.lock() {
        journal_metrics(e, &observed);
    }
    reaper_metrics(e, state);
    store_requests(e, state);
    e.family(
        "drover_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    if let Ok(http) = state.http.lock() {
        for ((route, code), n) in http.iter() {
            let code = code.to_string();
            let labels = [("route", route.as_str()), ("code", code.as_str())];
            e.sample("drover_http_requests_total", &labels, *n as f64);
        }
    }
}

/// What the journal says (`observer`): exact, the same on every replica (aggregate by `max`).
fn journal_metrics(e: &mut Exposition, observed: &Observed) {
    let wait = "Submission to the start of the first attempt, by class (from the journal).";
    e.family("drover_job_wait_seconds", "histogram", wait);
    for (class, histogram) in &observed.wait {
        let class = class.to_string();
        e.histogram(
            "drover_job_wait_seconds",
            wait,
            &[("class", &class)],
            histogram,
        );
    }
    let run = "Start to end of the attempt that ended the job, by class (from the journal).";
    e.family("drover_job_run_seconds", "histogram", run);
    for (class, histogram) in &observed.run {
        let class = class.to_string();
        e.histogram(
            "drover_job_run_seconds",
            run,
            &[("class", &class)],
            histogram,
        );
    }
    let help = "Journal events read by this API process, by event (submitted, leased, lost, ...).";
    e.family("drover_journal_events_total", "counter", help);
    for (event, n) in &observed.events {
        e.sample(
            "drover_journal_events_total",
            &[("event", event)],
            *n as f64,
        );
    }
}

fn reaper_metrics<S: SharedStore>(e: &mut Exposition, state: &ApiState<S>) {
    let totals = state.reaper.lock().map(|t| *t).unwrap_or_default();
    let r = &totals.report;
    let c = "counter";
    for (name, help, value) in [
        (
            "drover_reaper_passes_total",
            "Reap passes answered.",
            totals.passes,
        ),
        (
            "drover_reaper_failed_passes_total",
            "Reap passes without a reply.",
            totals.failed_passes,
        ),
        (
            "drover_reaper_machines_lost_total",
            "Machines declared lost.",
            r.machines_lost as u64,
        ),
        (
            "drover_reaper_requeued_total",
            "Revoked leases whose jobs run again.",
            r.requeued as u64,
        ),
        (
            "drover_reaper_dead_total",
            "Jobs the reaper sent to dead.",
            r.dead as u64,
        ),
        (
            "drover_reaper_timed_out_total",
            "Jobs the reaper timed out.",
            r.timed_out as u64,
        ),
        (
            "drover_reaper_unworkable_total",
            "Jobs judged unworkable.",
            r.unworkable as u64,
        ),
        (
            "drover_reaper_promoted_total",
            "Delayed retries released.",
            r.promoted as u64,
        ),
        (
            "drover_reaper_purged_total",
            "Finished jobs purged.",
            r.purged as u64,
        ),
    ] {
        e.single(name, c, help, value as f64);
    }
}

fn store_requests<S: SharedStore>(e: &mut Exposition, state: &ApiState<S>) {
    let counts = state.store.counts();
    let help = "Store requests from this process, by kind and outcome (ok, refused, error).";
    e.family("drover_store_requests_total", "counter", help);
    let mut errors = 0;
    for ((kind, outcome), n) in &counts {
        let labels = [("request", *kind), ("outcome", *outcome)];
        e.sample("drover_store_requests_total", &labels, *n as f64);
        if *outcome == "error" {
            errors += n;
        }
    }
    let help = "Store requests from this process that got no answer (Redis errors).";
    e.single("drover_store_errors_total", "counter", help, errors as f64);
}

/// GPUs of registered machines by machine state, from one `ListMachines` per scrape (at most
/// `limits.max_list` machines): the fleet's capacity, beside the agents' own busy GPUs.
async fn fleet_gpus<S: SharedStore>(e: &mut Exposition, state: &ApiState<S>) {
    let limit = state.config.limits.max_list;
    let machines = match state.call(Request::ListMachines { limit }).await {
        Ok(Reply::Machines(machines)) => machines,
        Ok(other) => {
            tracing::warn!(reply = ?other, "ListMachines answered with another reply");
            return;
        }
        // Counted in drover_store_requests_total{outcome="error"}; the family is left out.
        Err(e) => {
            tracing::debug!(error = %e.message, "no machine list for drover_gpus");
            return;
        }
    };
    let mut by_state: std::collections::BTreeMap<&str, u64> =
        ["ready", "lost", "gone"].map(|s| (s, 0)).into();
    for machine in &machines {
        *by_state.entry(machine.state).or_default() += u64::from(machine.gpus);
    }
    let help = "GPUs of registered machines, by machine state (up to limits.max_list machines).";
    e.family("drover_gpus", "gauge", help);
    for (machine_state, gpus) in by_state {
        e.sample("drover_gpus", &[("state", machine_state)], gpus as f64);
    }
}
