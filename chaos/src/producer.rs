//! The producer: submits each job through the API at its time, with an idempotency key, and
//! retries until the API acknowledges it (Redis down, the API unreachable). After a Redis
//! restart that may have lost writes it resubmits, by key, every job it has not seen finish,
//! as the simulator's producers do. Every acknowledgement is kept: the history's submissions
//! come from the client's side, so a job acknowledged and then lost is caught.

use crate::plan::Submission;
use drover_engine::api::client::ApiClient;
use drover_engine::core::{JobId, Time};
use drover_engine::runtime::store::wall_clock;
use drover_sim::scenario::{Scenario, Span};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RETRY_EVERY: Duration = Duration::from_millis(200);

/// What the API answered for one logical job.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// The job id of the latest acknowledgement (a resubmission after a lossy restart may get
    /// a new one).
    pub job: JobId,
    /// Wall clock (µs) when the first acknowledgement came back.
    pub first_at: Time,
    /// Wall clock (µs) when the request that was acknowledged first was sent.
    pub sent_at: Time,
}

/// Every logical job's acknowledgement, and what was refused for good.
#[derive(Default)]
pub struct Book {
    pub acks: Vec<Option<Ack>>,
    /// Ids a lossy restart forgot, replaced by a resubmission's new id.
    pub replaced: Vec<JobId>,
    /// Submissions the API refused as invalid (never retried), with its message.
    pub refused: Vec<(u64, String)>,
}

#[derive(Clone)]
pub struct Producer {
    client: ApiClient,
    bodies: Arc<Vec<Value>>,
    pub book: Arc<Mutex<Book>>,
}

impl Producer {
    pub fn new(base: &str, scenario: &Scenario, plan: &[Submission], scale: f64) -> Producer {
        let bodies = plan.iter().map(|s| body(scenario, s, scale)).collect();
        Producer {
            client: ApiClient::new(base, None).expect("a valid local address"),
            bodies: Arc::new(bodies),
            book: Arc::new(Mutex::new(Book {
                acks: vec![None; plan.len()],
                ..Book::default()
            })),
        }
    }

    pub fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.book().acks.iter().flatten().count()
    }

    /// Submits logical job `logical` until the API acknowledges or refuses it.
    pub async fn submit(&self, logical: u64) {
        let body = &self.bodies[logical as usize];
        loop {
            let sent_at = wall_clock();
            match self.client.post("/v1/jobs", body).await {
                Ok((status, reply)) if status.is_success() => {
                    let job = reply["id"]
                        .as_str()
                        .and_then(|id| id.trim_start_matches('j').parse().ok())
                        .map(JobId);
                    if let Some(job) = job {
                        self.record(logical, job, sent_at);
                        return;
                    }
                }
                Ok((status, reply)) if status.is_client_error() => {
                    self.book().refused.push((logical, reply.to_string()));
                    return;
                }
                _ => {}
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    fn record(&self, logical: u64, job: JobId, sent_at: Time) {
        let mut book = self.book();
        let slot = &mut book.acks[logical as usize];
        match slot {
            Some(ack) if ack.job != job => {
                let old = ack.job;
                ack.job = job;
                book.replaced.push(old);
            }
            Some(_) => {}
            None => {
                *slot = Some(Ack {
                    job,
                    first_at: wall_clock(),
                    sent_at,
                })
            }
        }
    }

    /// Resubmits, by key, every acknowledged job `finished` does not know as terminal.
    pub async fn reconcile(&self, finished: impl Fn(JobId) -> bool) -> usize {
        let outstanding: Vec<u64> = self
            .book()
            .acks
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.filter(|a| !finished(a.job)).map(|_| i as u64))
            .collect();
        for &logical in &outstanding {
            self.submit(logical).await;
        }
        outstanding.len()
    }
}

/// The API body of one job: the sleep executor sleeping its scaled service time.
fn body(scenario: &Scenario, s: &Submission, scale: f64) -> Value {
    let w = &scenario.workloads[s.workload];
    let scaled = |span: Span| span.as_secs_f64() / scale;
    let mut body = json!({
        "kind": "sleep",
        "payload": {"seconds": scaled(s.service)},
        "priority": w.priority,
        "requirements": {
            "gpus": w.gpus,
            "gpu_mem_gb": w.gpu_mem_gb,
            "gpu_models": w.gpu_models,
            "disk_gb": w.disk_gb,
            "labels": w.labels,
            "not_labels": w.not_labels,
        },
        "idempotency_key": format!("chaos-{}", s.logical),
    });
    if w.max_attempts > 0 {
        body["max_attempts"] = w.max_attempts.into();
    }
    if w.timeout > Span::ZERO {
        let ms = (scaled(w.timeout) * 1000.0).ceil().max(1.0) as u64;
        body["timeout"] = format!("{ms}ms").into();
    }
    body
}
