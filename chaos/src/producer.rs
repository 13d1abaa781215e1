//! The producer: submits each job through the API at its time, with an idempotency key, and
//! retries until the API acknowledges it (Redis down, the API unreachable). After a Redis
//! restart that may have lost writes it resubmits, by key, every job it has not seen finish,
//! as the simulator's producers do. Every acknowledgement is kept: the history's submissions
//! come from the client's side, so a job acknowledged and then lost is caught.

use crate::plan::Submission;
use drover_engine::api::client::ApiClient;
use drover_engine::core::{JobId, StateName, Time};
use drover_engine::runtime::store::wall_clock;
use drover_sim::scenario::{Scenario, Span};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
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
    /// Wall clock (µs) when the first try of the acknowledged submission was sent.
    pub sent_at: Time,
}

/// Every logical job's acknowledgement, and what was refused for good.
#[derive(Default)]
pub struct Book {
    pub acks: Vec<Option<Ack>>,
    /// Logical jobs seen terminal before a restart that may have lost writes: not resubmitted,
    /// and counted in this state if the server forgot them.
    pub settled: HashMap<u64, StateName>,
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

    /// Logical jobs finished: their job is in `finished`, or they were settled before a lossy
    /// restart and the server no longer holds them (`submitted`: the jobs its journal shows).
    pub fn done(&self, submitted: &HashSet<JobId>, finished: &HashSet<JobId>) -> usize {
        let book = self.book();
        book.acks
            .iter()
            .enumerate()
            .filter(|(i, ack)| {
                ack.is_some_and(|a| {
                    finished.contains(&a.job)
                        || (book.settled.contains_key(&(*i as u64)) && !submitted.contains(&a.job))
                })
            })
            .count()
    }

    /// Jobs acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.book().acks.iter().flatten().count()
    }

    /// Submits logical job `logical` until the API acknowledges or refuses it.
    pub async fn submit(&self, logical: u64) {
        let body = &self.bodies[logical as usize];
        // From the first try: a try whose reply was lost may be the one the store applied.
        let sent_at = wall_clock();
        loop {
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
        let ack = Ack {
            job,
            first_at: wall_clock(),
            sent_at,
        };
        let slot = &mut book.acks[logical as usize];
        match slot {
            // A lossy restart forgot the job: the resubmission is a new job, timed from now.
            Some(old) if old.job != job => {
                let forgotten = old.job;
                *old = ack;
                book.replaced.push(forgotten);
            }
            Some(_) => {}
            None => *slot = Some(ack),
        }
    }

    /// After a restart that may have lost writes: records as settled the jobs `finished` names
    /// (seen terminal before it), then resubmits by key every other acknowledged job. Returns
    /// how many were resubmitted.
    pub async fn reconcile(&self, finished: &HashMap<JobId, StateName>) -> usize {
        let outstanding: Vec<u64> = {
            let mut book = self.book();
            let mut outstanding = Vec::new();
            for i in 0..book.acks.len() {
                let Some(ack) = book.acks[i] else { continue };
                let logical = i as u64;
                if book.settled.contains_key(&logical) {
                    continue;
                }
                match finished.get(&ack.job) {
                    Some(&state) => {
                        book.settled.insert(logical, state);
                    }
                    None => outstanding.push(logical),
                }
            }
            outstanding
        };
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
