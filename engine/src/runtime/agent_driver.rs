//! Runs the pure `Agent` under tokio against any `SharedStore`.
//!
//! One loop owns the agent. It sends the agent's requests (the agent keeps one in flight), feeds
//! back replies, wakes it at `next_timeout` on a monotonic clock of its own, waits for the
//! store's wake-up while idle, runs attempts with the executors, and drains on shutdown. A
//! `StoreError` is simply a missing reply: the agent's link times the request out, backs off
//! and opens its breaker, and keeps outcomes in its outbox until the store is back.
//!
//! With a `Workspace` (`with_workspace`), an attempt's models are fetched into the cache and its
//! scratch directory made before it runs, models the agent evicts are deleted, and what the
//! disk does (a fetch that failed, a disk that proved full) is fed back to the agent, so that
//! its view of the cache, which its claims advertise, stays the disk's.
//!
//! Progress goes to the store on the side, best-effort, one report in flight and the latest per
//! job kept: it is advisory (each report supersedes the last), so it must never delay an
//! outcome, heartbeat or claim in the agent's single-request link nor count toward its breaker.

use super::clock::MonoClock;
use super::model_cache::{CacheEvent, FetchError, ModelCacheStats, Preparation, Workspace};
use super::store::{SharedStore, StoreError};
use crate::agent::{Action, Agent, Input};
use crate::core::{EngineConfig, JobId, JobResult, JobSpec, MachineId, ModelId, Outcome, Token};
use crate::executor::{
    check_result, fatal, Executors, JobContext, ProgressReport, ProgressSink, ResultSlot,
};
use crate::store::{Refusal, Reply, Request};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::Instrument;

/// How the driver behaves beyond what the agent decides.
/// At most this many yields to the runtime while outcomes keep arriving (`gather_finished`).
const GATHER_YIELDS: usize = 8;

#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// After a drain starts, running attempts get this long to finish; then they are stopped
    /// and their jobs released (no attempt charged) before the machine deregisters.
    pub drain_grace: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            drain_grace: Duration::from_secs(300),
        }
    }
}

/// What the driver shows of the agent, for `/metrics` and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentSnapshot {
    pub machine: Option<MachineId>,
    pub running: usize,
    pub outbox: usize,
    pub breaker_open: bool,
    pub breaker_opened: u64,
    pub link_failures: u64,
    pub store_errors: u64,
    /// Requests the store could not apply (errors that would repeat), by request kind.
    pub store_faults: BTreeMap<&'static str, u64>,
    pub started: u64,
    pub finished: BTreeMap<&'static str, u64>,
    pub revoked: u64,
    pub draining: bool,
    /// Registrations the store refused (each retry counts).
    pub registrations_refused: u64,
    /// Why the store refuses to register this machine, while it does.
    pub registration_refused: Option<String>,
    /// GPUs this machine offers, and those its running attempts hold.
    pub gpus: u32,
    pub gpus_busy: u32,
    /// The model cache's counters (zero without a workspace).
    pub models: ModelCacheStats,
}

/// How the driver ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DriverExit {
    /// Drained and deregistered.
    Left,
    /// The drain grace ran out: running jobs were stopped and released.
    ReleasedAfterGrace { released: usize },
}

type StoreReply = Result<Result<Reply, Refusal>, StoreError>;

/// Both ends of a channel the loop sends to itself on.
type Chan<T> = (mpsc::Sender<T>, mpsc::Receiver<T>);

struct Task {
    token: Token,
    attempt: u32,
    abort: AbortHandle,
    result: ResultSlot,
}

pub struct AgentDriver<S> {
    store: S,
    agent: Agent,
    clock: MonoClock,
    config: Arc<EngineConfig>,
    executors: Arc<Executors>,
    options: DriverOptions,
    tasks: HashMap<JobId, Task>,
    replies: Chan<(u64, StoreReply)>,
    finished: Chan<(JobId, Token, Outcome)>,
    progress: Chan<ProgressReport>,
    wakes: Chan<bool>,
    /// Refused registrations, handed to the agent after a pause (`on_registration_reply`).
    held: Chan<(u64, Result<Reply, Refusal>)>,
    /// The id of the registration in flight, if one is.
    registering: Option<u64>,
    /// The pause before the next refused registration reaches the agent.
    refusal_pause: Duration,
    waiting_for_wake: bool,
    progress_out: ProgressOut,
    snapshot: watch::Sender<AgentSnapshot>,
    stats: AgentSnapshot,
    drain_deadline: Option<Instant>,
    left: bool,
    workspace: Option<Workspace>,
    cache_events: Chan<CacheEvent>,
}

impl<S: SharedStore> AgentDriver<S> {
    /// A driver for `agent`, which must have been created at time zero of a fresh clock
    /// (`Agent::new(.., Time::ZERO)`).
    pub fn new(
        store: S,
        agent: Agent,
        config: Arc<EngineConfig>,
        executors: Executors,
        options: DriverOptions,
    ) -> AgentDriver<S> {
        AgentDriver {
            store,
            agent,
            clock: MonoClock::start(),
            config,
            executors: Arc::new(executors),
            options,
            tasks: HashMap::new(),
            replies: mpsc::channel(16),
            finished: mpsc::channel(256),
            progress: mpsc::channel(256),
            wakes: mpsc::channel(4),
            held: mpsc::channel(4),
            registering: None,
            refusal_pause: Duration::ZERO,
            waiting_for_wake: false,
            progress_out: ProgressOut::default(),
            snapshot: watch::channel(AgentSnapshot::default()).0,
            stats: AgentSnapshot::default(),
            drain_deadline: None,
            left: false,
            workspace: None,
            cache_events: mpsc::channel(64),
        }
    }

    /// Runs attempts with `workspace`'s models and scratch directories. The agent must have
    /// been created with the models `Workspace::open` found on disk. Disk the budget counts
    /// but the filesystem does not have free is handed to the agent as foreign, at once.
    pub fn with_workspace(mut self, workspace: Workspace) -> AgentDriver<S> {
        match workspace.foreign_disk_gb(false) {
            Ok(0) => {}
            Ok(gb) => {
                tracing::warn!(
                    foreign_gb = gb,
                    dir = %workspace.cache().dir().display(),
                    "the cache's filesystem has less free than the disk budget: the rest counts as used"
                );
                self.agent
                    .handle(self.clock.now(), Input::ForeignDisk { gb });
            }
            Err(e) => tracing::warn!(error = %e, "cannot measure the cache's filesystem"),
        }
        self.workspace = Some(workspace);
        self
    }

    /// Follows the driver's state: machine id, running attempts, breaker.
    pub fn snapshot(&self) -> watch::Receiver<AgentSnapshot> {
        self.snapshot.subscribe()
    }

    /// Runs until the agent has drained and left. `shutdown` starts the drain.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> DriverExit {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        self.perform_actions();
        loop {
            self.publish();
            if self.has_left() {
                return DriverExit::Left;
            }
            if self.grace_over() {
                return self.release_and_leave().await;
            }
            self.start_wait_for_wake();
            let timer = self.next_instant();
            tokio::select! {
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    self.begin_drain();
                }
                Some((id, result)) = self.replies.1.recv() => self.on_store_reply(id, result).await,
                Some((id, result)) = self.held.1.recv() => self.deliver(id, result).await,
                Some(first) = self.finished.1.recv() => self.gather_finished(vec![first]).await,
                Some(report) = self.progress.1.recv() => self.on_progress(report),
                Some(woken) = self.wakes.1.recv() => self.on_wake(woken),
                Some(event) = self.cache_events.1.recv() => self.on_cache_event(event),
                _ = tokio::time::sleep_until(timer.into()) => {
                    self.agent.on_timeout(self.clock.now());
                }
            }
            self.perform_actions();
        }
    }

    /// "m3", or "unregistered", for logs.
    fn machine_name(&self) -> String {
        self.agent
            .machine()
            .map_or("unregistered".into(), |m| m.to_string())
    }

    /// Left, or draining with nothing to finish or say: a machine the store never registered
    /// (or that is between registrations) and runs nothing has nothing to deregister, and
    /// would otherwise wait out the grace trying to register.
    fn has_left(&self) -> bool {
        self.left
            || (self.stats.draining
                && self.agent.machine().is_none()
                && self.tasks.is_empty()
                && self.agent.outbox_len() == 0)
    }

    fn grace_over(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn next_instant(&self) -> Instant {
        let mut at = match self.agent.next_timeout() {
            Some(time) => self.clock.instant(time),
            None => Instant::now() + Duration::from_secs(3600),
        };
        if let Some(deadline) = self.drain_deadline {
            at = at.min(deadline);
        }
        at
    }

    fn begin_drain(&mut self) {
        tracing::info!(
            machine = %self.machine_name(),
            running = self.tasks.len(),
            "draining: no new claims; running jobs may finish"
        );
        self.stats.draining = true;
        self.drain_deadline = Some(Instant::now() + self.options.drain_grace);
        self.agent.handle(self.clock.now(), Input::Drain);
    }

    /// A reply: the jobs it grants start, and what they report at once travels with whatever
    /// was waiting to be sent, in one batch.
    async fn on_store_reply(&mut self, id: u64, result: StoreReply) {
        match result {
            Ok(result) => {
                if self.registering == Some(id) {
                    self.registering = None;
                    if let Err(refusal) = result {
                        self.on_registration_refused(id, refusal);
                        return;
                    }
                    self.on_registration_accepted();
                }
                self.deliver(id, result).await;
            }
            // Lost on the way: the link times the request out and sends it again.
            Err(e) if e.is_transport() => {
                self.stats.store_errors += 1;
                tracing::warn!(machine = %self.machine_name(), error = %e, "store request failed");
            }
            // It will fail again if resent: the agent drops it and backs off.
            Err(e) => {
                let input = Input::StoreFault {
                    id,
                    message: e.to_string(),
                };
                self.agent.take_in(self.clock.now(), input);
                self.perform_actions();
            }
        }
    }

    /// Hands the store's answer to the agent.
    async fn deliver(&mut self, id: u64, result: Result<Reply, Refusal>) {
        self.agent
            .take_in(self.clock.now(), Input::Reply { id, result });
        self.perform_actions();
        self.gather_finished(Vec::new()).await;
    }

    /// The store will not register this machine (it is full of machines, say; a spec it
    /// could never take is refused by `drover agent` before it starts). The log says why,
    /// once per distinct reason, and the agent learns of it only after a pause that doubles
    /// from `retry_base` up to the smaller of `retry_max` and half of `request_timeout` (so its
    /// request does not time out meanwhile): it registers again at once on a refusal, and
    /// would otherwise resend as fast as the store answers.
    fn on_registration_refused(&mut self, id: u64, refusal: Refusal) {
        self.stats.registrations_refused += 1;
        let reason = refusal.to_string();
        if self.stats.registration_refused.as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                reason = %reason,
                "the store refused to register this machine; registering again until it accepts"
            );
            self.stats.registration_refused = Some(reason);
        }
        let base = Duration::from_micros(self.config.retry_base.as_micros());
        let cap = Duration::from_micros(
            self.config
                .retry_max
                .as_micros()
                .min(self.config.request_timeout.as_micros() / 2),
        );
        self.refusal_pause = (self.refusal_pause * 2).clamp(base.min(cap), cap);
        let pause = self.refusal_pause;
        let tx = self.held.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let _ = tx.send((id, Err(refusal))).await;
        });
    }

    fn on_registration_accepted(&mut self) {
        self.refusal_pause = Duration::ZERO;
        if self.stats.registration_refused.take().is_some() {
            tracing::info!(
                refused = self.stats.registrations_refused,
                "the store registered this machine after refusing it"
            );
        }
    }

    /// `finished` and every other outcome ready by now, handed to the agent together so that
    /// they travel in one batch: short jobs started together finish together, and reporting the
    /// first alone would split the rest into a round trip of their own, for good.
    async fn gather_finished(&mut self, mut finished: Vec<(JobId, Token, Outcome)>) {
        // Each yield lets the runtime run what is ready; stop once a yield brought nothing.
        for _ in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
            let before = finished.len();
            while let Ok(next) = self.finished.1.try_recv() {
                finished.push(next);
            }
            if finished.len() == before {
                break;
            }
        }
        let inputs: Vec<Input> = finished
            .into_iter()
            .filter_map(|(job, token, outcome)| self.attempt_ended(job, token, outcome))
            .collect();
        self.agent.handle_all(self.clock.now(), inputs);
    }

    /// The input an attempt's end makes, if it is the attempt this machine still runs (a
    /// stopped attempt may have finished just before it was aborted).
    fn attempt_ended(&mut self, job: JobId, token: Token, outcome: Outcome) -> Option<Input> {
        let task = self.tasks.remove(&job)?;
        if task.token != token {
            self.tasks.insert(job, task);
            return None;
        }
        let (outcome, result) = self.returned(outcome, &task.result);
        tracing::info!(
            machine = %self.machine_name(), job = %job, attempt = task.attempt,
            outcome = outcome.label(), detail = ?outcome, "attempt finished"
        );
        *self.stats.finished.entry(outcome.label()).or_default() += 1;
        Some(Input::JobFinished {
            job,
            outcome,
            result,
        })
    }

    /// What a succeeded attempt returned, checked; a result the store could not keep fails
    /// the attempt for good (the job would return the same again).
    fn returned(&self, outcome: Outcome, slot: &ResultSlot) -> (Outcome, Option<JobResult>) {
        let json = slot.take();
        let (Outcome::Succeeded, Some(json)) = (&outcome, json) else {
            return (outcome, None);
        };
        match check_result(json, self.config.limits.max_result_bytes) {
            Ok(result) => (outcome, Some(result)),
            Err(message) => (fatal(message), None),
        }
    }

    fn on_wake(&mut self, woken: bool) {
        self.waiting_for_wake = false;
        if woken {
            self.agent.handle(self.clock.now(), Input::Wake);
        }
    }

    /// While idle, waits for the store's wake-up in a task of its own: a blocking read must
    /// not be cancelled half-way by the loop's other events.
    fn start_wait_for_wake(&mut self) {
        let Some(machine) = self.agent.machine() else {
            return;
        };
        if self.waiting_for_wake || !self.agent.is_idle() || self.stats.draining {
            return;
        }
        self.waiting_for_wake = true;
        let store = self.store.clone();
        let tx = self.wakes.0.clone();
        let wait = Duration::from_micros(self.config.idle_recheck.as_micros());
        tokio::spawn(async move {
            let woken = match store.wait_wake(machine, wait).await {
                Ok(woken) => woken,
                Err(e) => {
                    tracing::warn!(machine = %machine, error = %e, "waiting for a wake-up failed");
                    // Do not spin on a store that is down; the idle recheck claims anyway.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
            };
            let _ = tx.send(woken).await;
        });
    }

    fn perform_actions(&mut self) {
        while let Some(action) = self.agent.poll_action() {
            match action {
                Action::Send { id, request } => self.send(id, request),
                Action::Start {
                    job,
                    token,
                    attempt,
                    spec,
                    download,
                } => {
                    if !download.is_empty() {
                        tracing::info!(job = %job, attempt, models = ?download, "models to fetch");
                    }
                    self.start(job, token, attempt, spec);
                }
                Action::Stop { job } => self.stop(job),
                Action::Evicted { model } => self.evict(model),
                Action::Left => {
                    self.left = true;
                    tracing::info!(machine = %self.machine_name(), "deregistered");
                }
                Action::StoreFault { request, message } => {
                    tracing::error!(
                        machine = %self.machine_name(), request, error = %message,
                        "the store could not apply the request; dropped, not resent"
                    );
                    *self.stats.store_faults.entry(request).or_default() += 1;
                }
            }
        }
    }

    fn send(&mut self, id: u64, request: Request) {
        if matches!(request, Request::Register(_)) {
            self.registering = Some(id);
        }
        let store = self.store.clone();
        let tx = self.replies.0.clone();
        // Past twice the agent's own timeout nobody waits for the reply: end the task.
        let limit = Duration::from_micros(self.config.request_timeout.as_micros() * 2);
        tokio::spawn(async move {
            let result = match tokio::time::timeout(limit, store.apply(request)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout),
            };
            let _ = tx.send((id, result)).await;
        });
    }

    fn start(&mut self, job: JobId, token: Token, attempt: u32, spec: Arc<JobSpec>) {
        let machine = self.agent.machine().unwrap_or(MachineId(0));
        let span = tracing::info_span!("job", machine = %machine, job = %job, attempt);
        span.in_scope(|| tracing::info!(kind = %spec.kind, "attempt started"));
        // Now, not in the attempt's task: a second attempt started next shares the fetch.
        let preparation = self
            .workspace
            .as_ref()
            .map(|workspace| workspace.prepare(job, attempt, &spec, &self.cache_events.0));
        let ctx = JobContext {
            job,
            attempt,
            spec,
            progress: ProgressSink::new(job, token, self.progress.0.clone()),
            result: ResultSlot::default(),
            models: Default::default(),
            scratch: None,
        };
        let result = ctx.result.clone();
        let attempt_future = run_attempt(self.executors.clone(), ctx, preparation);
        let tx = self.finished.0.clone();
        let handle = tokio::spawn(
            async move {
                let outcome = attempt_future.await;
                let _ = tx.send((job, token, outcome)).await;
            }
            .instrument(span),
        );
        let task = Task {
            token,
            attempt,
            abort: handle.abort_handle(),
            result,
        };
        self.stats.started += 1;
        self.tasks.insert(job, task);
    }

    fn stop(&mut self, job: JobId) {
        if let Some(task) = self.tasks.remove(&job) {
            task.abort.abort();
            self.stats.revoked += 1;
            tracing::warn!(
                machine = %self.machine_name(), job = %job, attempt = task.attempt,
                "attempt stopped: its lease is no longer ours"
            );
        }
    }

    /// The agent evicted `model`: its files go.
    fn evict(&mut self, model: ModelId) {
        match &self.workspace {
            Some(workspace) => {
                tracing::info!(model = %workspace.cache().name(model), "evicting model");
                workspace.evict(model);
            }
            None => tracing::info!(model = model.0, "evicted model"),
        }
    }

    /// A fetch ended, or the disk proved full: the agent learns what the disk now holds.
    fn on_cache_event(&mut self, event: CacheEvent) {
        let Some(workspace) = self.workspace.clone() else {
            return;
        };
        let now = self.clock.now();
        let full = match event {
            CacheEvent::Fetched { model, result } => {
                // Another fetch of it may have started since; only a model neither on disk
                // nor on its way leaves the agent's view.
                if result.is_err() && !workspace.cache().holds(model) {
                    self.agent.handle(now, Input::ModelGone { model });
                }
                matches!(result, Err(FetchError::DiskFull(_)))
            }
            CacheEvent::ScratchFull => true,
        };
        if full {
            self.disk_proved_full(&workspace);
        }
    }

    /// A write met a full disk: whatever the budget counts as free but the disk does not
    /// have is someone else's, so the agent evicts to make up for it, or drains if it cannot.
    fn disk_proved_full(&mut self, workspace: &Workspace) {
        match workspace.foreign_disk_gb(true) {
            Ok(gb) => {
                tracing::warn!(
                    foreign_gb = gb,
                    dir = %workspace.cache().dir().display(),
                    "the disk is full: counting space held by others, evicting to make room"
                );
                self.agent
                    .handle(self.clock.now(), Input::ForeignDisk { gb });
            }
            Err(e) => tracing::warn!(error = %e, "the disk is full and cannot be measured"),
        }
    }

    fn on_progress(&mut self, report: ProgressReport) {
        let live = self
            .tasks
            .get(&report.job)
            .is_some_and(|t| t.token == report.token);
        if live {
            self.progress_out.push(report);
            self.progress_out.pump(&self.store);
        }
    }

    fn publish(&mut self) {
        self.progress_out.pump(&self.store);
        let link = self.agent.link();
        self.stats.machine = self.agent.machine();
        self.stats.running = self.tasks.len();
        self.stats.gpus = self.agent.spec().gpus;
        self.stats.gpus_busy = self.agent.used_gpus();
        self.stats.outbox = self.agent.outbox_len();
        self.stats.breaker_open = !matches!(
            link.breaker(),
            crate::core::breaker::BreakerState::Closed { .. }
        );
        self.stats.breaker_opened = link.breaker_opened();
        self.stats.link_failures = link.failures;
        if let Some(workspace) = &self.workspace {
            self.stats.models = workspace.stats();
            let refused = self.agent.stats.disk_refusals;
            if refused > 0 {
                self.stats.models.failures.insert("budget", refused);
            }
        }
        self.snapshot.send_replace(self.stats.clone());
    }

    /// The grace ran out: stop what runs, give its jobs back uncharged, leave. Best-effort:
    /// whatever the store misses here, lease expiry and the reaper recover.
    async fn release_and_leave(mut self) -> DriverExit {
        let running: Vec<(JobId, Token)> = self.agent.running().collect();
        tracing::warn!(
            machine = %self.machine_name(), jobs = running.len(),
            "drain grace over: stopping and releasing running jobs"
        );
        for task in self.tasks.values() {
            task.abort.abort();
        }
        let mut requests: Vec<Request> = running
            .iter()
            .map(|&(job, token)| Request::Release { job, token })
            .collect();
        if let Some(machine) = self.agent.machine() {
            requests.push(Request::Deregister { machine });
        }
        let limit = Duration::from_micros(self.config.request_timeout.as_micros());
        let applied = tokio::time::timeout(limit, self.store.apply(Request::Batch(requests)));
        if !matches!(applied.await, Ok(Ok(Ok(_)))) {
            tracing::warn!("could not release running jobs; the reaper will");
        }
        self.tasks.clear();
        self.publish();
        DriverExit::ReleasedAfterGrace {
            released: running.len(),
        }
    }
}

/// One attempt: its models and scratch directory first (when the agent has a workspace), then
/// its executor. The scratch directory is dropped with this future, so it goes when the
/// attempt ends, is stopped or is aborted.
async fn run_attempt(
    executors: Arc<Executors>,
    mut ctx: JobContext,
    preparation: Option<Preparation>,
) -> Outcome {
    let prepared = match preparation {
        None => Default::default(),
        Some(preparation) => match preparation.ready(&ctx.progress).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!(error = %e, "attempt cannot run here");
                return e.outcome();
            }
        },
    };
    ctx.models = prepared.models.clone();
    ctx.scratch = prepared
        .scratch
        .as_ref()
        .map(|dir| dir.path().to_path_buf());
    let outcome = executors.run(ctx).await;
    drop(prepared);
    outcome
}

/// Progress waiting to be sent: the latest report per job, one request in flight.
#[derive(Default)]
struct ProgressOut {
    latest: BTreeMap<JobId, ProgressReport>,
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressOut {
    fn push(&mut self, report: ProgressReport) {
        self.latest.insert(report.job, report);
    }

    fn pump<S: SharedStore>(&mut self, store: &S) {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Some((_, report)) = self.latest.pop_first() else {
            return;
        };
        let store = store.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let request = Request::Progress {
                job: report.job,
                token: report.token,
                percent: report.percent,
                message: report.message,
            };
            let limit = Duration::from_secs(2);
            let _ = tokio::time::timeout(limit, store.apply(request)).await;
        }));
    }
}
