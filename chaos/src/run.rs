//! One run: start Redis, the API and the fleet; submit the jobs and play the faults in real
//! time with a progress bar; end when every job is terminal (or at the scenario's horizon);
//! then stop everything and judge the history.

use crate::faults::Stage;
use crate::fleet::{self, AgentSetup, NAMESPACE};
use crate::judge;
use crate::plan::{self, Submission};
use crate::procs::Children;
use crate::producer::Producer;
use crate::redis_server::RedisServer;
use crate::summary::Report;
use anyhow::{bail, Context, Result};
use drover_engine::check::Checker;
use drover_engine::core::{JobId, StateName, Time};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::store::wall_clock;
use drover_engine::store::{Reply, Request};
use drover_sim::scenario::{Scenario, Span};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What `drover-chaos run` was asked.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub file: PathBuf,
    pub seed: Option<u64>,
    pub chaos: Option<f64>,
    pub time_scale: f64,
    pub drover: PathBuf,
    /// Where to keep logs, Redis's files and the summary; a temporary directory otherwise.
    pub report: Option<PathBuf>,
    pub progress: bool,
    /// TESTS ONLY: the planted bug (a success skips its fencing check).
    pub skip_fencing: bool,
}

/// How long agents may take to register at the start.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// After the horizon, how long submissions still retrying may take.
const GRACE: Duration = Duration::from_secs(60);
/// How often the run looks at the journal and redraws the bar.
const TICK: Duration = Duration::from_millis(200);

pub async fn run(options: RunOptions, children: &Children) -> Result<Report> {
    let file = options.file.display().to_string();
    let scenario = Scenario::load(&options.file)?;
    plan::check(&scenario, &file, options.time_scale)?;
    if let Some(rate) = options.chaos.filter(|r| !(0.0..=10_000.0).contains(r)) {
        bail!(plan::Unplayable::ChaosRate(rate));
    }
    let seed = options.seed.unwrap_or(scenario.seed);
    let submissions = plan::submissions(&scenario, seed);
    let (faults, skipped) = plan::faults(&scenario, seed, options.chaos);
    let (dir, temporary) = run_dir(options.report.as_deref())?;
    let result = play(
        &options,
        scenario,
        seed,
        &submissions,
        faults,
        skipped,
        &dir,
        children,
    )
    .await;
    children.kill_all();
    if temporary && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A failed run keeps its directory: the processes' logs say what went wrong.
    let mut report = result
        .with_context(|| format!("the run failed (its logs are kept in {})", dir.display()))?;
    if let Some(dir) = &options.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(dir.join("summary.json"), json)?;
        let pids: String = children
            .started()
            .iter()
            .map(|p| format!("{p}\n"))
            .collect();
        std::fs::write(dir.join("pids"), pids)?;
        report.report_dir = Some(dir.display().to_string());
    } else if temporary {
        report.report_dir = None;
    }
    Ok(report)
}

fn run_dir(report: Option<&std::path::Path>) -> Result<(PathBuf, bool)> {
    let (dir, temporary) = match report {
        Some(dir) => (dir.to_path_buf(), false),
        None => (
            std::env::temp_dir().join(format!("drover-chaos-{}", std::process::id())),
            true,
        ),
    };
    for sub in ["", "redis", "logs", "config", "state"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok((dir, temporary))
}

#[allow(clippy::too_many_arguments)]
async fn play(
    options: &RunOptions,
    scenario: Scenario,
    seed: u64,
    submissions: &[Submission],
    faults: Vec<drover_sim::scenario::FaultSpec>,
    skipped: u32,
    dir: &std::path::Path,
    children: &Children,
) -> Result<Report> {
    let scale = options.time_scale;
    let redis =
        RedisServer::start(children, &dir.join("redis"), scenario.redis.persistence).await?;
    let redis_url = redis.url();
    let configs = fleet::write_configs(&scenario, &dir.join("config"))?;
    let (api, _) = fleet::start_api(
        children,
        &options.drover,
        &redis_url,
        &configs[0],
        &dir.join("logs"),
    )
    .await?;
    let store = RedisStore::connect(&redis_url, NAMESPACE, scenario.engine.clone())
        .await
        .context("connecting to the run's Redis")?;
    if options.skip_fencing {
        store.mark_test_namespace().await?;
        store.skip_completion_fencing(true).await?;
    }
    let setup = AgentSetup {
        drover: options.drover.clone(),
        redis_port: redis.port,
        redis_latency: Duration::from_micros(scenario.redis.latency.as_micros()),
        configs,
        dir: dir.to_path_buf(),
    };
    let journal = crate::journal::Journal::new(store.clone());
    let stage = Arc::new(Stage::new(
        scenario.clone(),
        seed,
        scale,
        children.clone(),
        setup,
        redis,
        journal,
    ));
    let (stop_journal, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(stage.journal.clone().follow(stopped));
    for (pool, spec) in scenario.pools.iter().enumerate() {
        for _ in 0..spec.machines {
            stage.boot(pool).await?;
        }
    }
    wait_registered(&stage, scenario.total_machines() as usize).await?;

    let producer = Producer::new(&api, &scenario, submissions, scale);
    *stage.producer.lock().unwrap_or_else(|e| e.into_inner()) = Some(producer.clone());
    // The clock starts now, with the fleet up: every time below is from here.
    stage.restart_clock();
    let start = tokio::time::Instant::now();
    let start_wall = wall_clock();
    let submitter = tokio::spawn(submit_all(
        producer.clone(),
        submissions.to_vec(),
        start,
        scale,
    ));
    let fault_count = faults.len();
    let player = tokio::spawn(play_faults(stage.clone(), faults, start, scale));

    let bar = progress_bar(options.progress, &scenario, submissions.len());
    let horizon = Duration::from_secs_f64(scenario.horizon().as_secs_f64() / scale);
    let arrivals_end = Duration::from_secs_f64(scenario.duration.as_secs_f64() / scale);
    loop {
        tokio::time::sleep(TICK).await;
        let elapsed = start.elapsed();
        let (journaled, finished) = stage.job_sets();
        let done = producer.done(&journaled, &finished);
        let acked = producer.acknowledged();
        let played = stage.fault_log.lock().map(|l| l.len()).unwrap_or(0);
        bar.set_position(done as u64);
        bar.set_message(format!(
            "t={:.0}s/{:.0}s  acked {acked}/{}  faults {played}/{fault_count}  agents {}",
            elapsed.as_secs_f64() * scale,
            scenario.duration.as_secs_f64(),
            submissions.len(),
            stage.alive(),
        ));
        let all_in = submitter.is_finished() && elapsed >= arrivals_end;
        let refused = producer.book().refused.len();
        if all_in && done + refused >= submissions.len() && player.is_finished() {
            break;
        }
        // At the horizon the run ends; a producer still retrying (the API unreachable) gets a
        // minute more to be acknowledged.
        if elapsed >= horizon && (submitter.is_finished() || elapsed >= horizon + GRACE) {
            break;
        }
    }
    bar.finish_and_clear();
    let wall_s = start.elapsed().as_secs_f64();
    stage.ending.store(true, Ordering::Relaxed);
    player.abort();
    submitter.abort();
    // Let a restart in progress finish, so the journal can be read to its end.
    let _restart_done = stage.redis.lock().await;
    drop(_restart_done);
    let _ = stop_journal.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), follower).await;
    // The history is what the server's journal holds at the end.
    if let Err(e) = stage.journal.resync().await {
        eprintln!("drover-chaos: reading the journal at the end (judging what was followed): {e}");
    }
    let end = wall_clock();

    let entries = stage.journal.lock().clone();
    let book = std::mem::take(&mut *producer.book());
    let history = judge::history(&entries, &book, start_wall);
    let mut checker = judge::check(&history.events);
    let live = store_states(&store, &checker).await;
    let since_start = |t: Time| Time(t.0.saturating_sub(start_wall.0));
    checker.check_nothing_lost(since_start(end), |job| live.get(&job).copied().flatten());
    let bound = judge::liveness_bound(&scenario.engine, longest_service(submissions, scale));
    let healed = since_start(Time(stage.healed_at.load(Ordering::Relaxed)));
    checker.check_liveness(since_start(end), healed, bound);
    let lost = checker
        .violations()
        .iter()
        .filter(|v| v.invariant == drover_engine::check::Invariant::NoJobLost)
        .count() as u64;
    let warmup_end = Time::ZERO.plus(Span::from_secs_f64(scenario.warmup.as_secs_f64() / scale));
    let acked = book.acks.iter().flatten().count() as u64;
    let figures = judge::figures(&history, acked, &live, lost, warmup_end, scale);
    let kills = stage.kills.lock().map(|k| k.clone()).unwrap_or_default();
    let (redistribution, never) = judge::redistribution(&entries, &kills, scale);
    let fault_log = stage
        .fault_log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let sleeps: HashMap<JobId, f64> = book
        .acks
        .iter()
        .zip(submissions)
        .filter_map(|(ack, s)| Some((ack.as_ref()?.job, s.service.as_secs_f64() / scale)))
        .collect();
    let overheads = crate::overheads::measure(
        &entries,
        |pool| scenario.pool(pool).map_or(0, |p| p.gpus),
        |job| sleeps.get(&job).copied(),
    );
    Ok(Report::new(crate::summary::Parts {
        scenario: &scenario,
        seed,
        chaos: options.chaos,
        scale,
        wall_s,
        figures,
        checker: &checker,
        redistribution,
        never_redistributed: never,
        fault_log,
        faults_skipped: skipped,
        refused: book.refused.len() as u64,
        stage: &stage,
        journal_entries: entries.len() as u64,
        history_events: history.events.len() as u64,
        overheads,
    }))
}

/// Waits until `machines` agents registered (the journal shows it).
async fn wait_registered(stage: &Stage, machines: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
    loop {
        let registered = stage
            .journal
            .lock()
            .iter()
            .flat_map(|e| e.events.iter())
            .filter(|e| e.name() == "registered")
            .count();
        if registered >= machines {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {registered} of {machines} agents registered within {}s; see the agent logs",
                REGISTER_TIMEOUT.as_secs()
            );
        }
        let dead: Vec<String> = stage
            .machines()
            .iter()
            .filter(|m| !stage.children.is_running(m.pid))
            .map(|m| m.name.clone())
            .collect();
        if let Some(name) = dead.first() {
            bail!("agent {name} exited at start; see its log (agent-{name}.log)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits every job at its time (each on its own task, so a slow reply delays no other).
async fn submit_all(
    producer: Producer,
    submissions: Vec<Submission>,
    start: tokio::time::Instant,
    scale: f64,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for s in submissions {
        let at = start + Duration::from_secs_f64(s.at.as_secs_f64() / scale);
        tokio::time::sleep_until(at).await;
        let producer = producer.clone();
        tasks.spawn(async move { producer.submit(s.logical).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn play_faults(
    stage: Arc<Stage>,
    faults: Vec<drover_sim::scenario::FaultSpec>,
    start: tokio::time::Instant,
    scale: f64,
) {
    for fault in faults {
        let at = start + Duration::from_secs_f64(fault.at.as_secs_f64() / scale);
        tokio::time::sleep_until(at).await;
        stage.play(&fault).await;
    }
}

/// The store's state for every job the checker still sees live.
async fn store_states(store: &RedisStore, checker: &Checker) -> BTreeMap<JobId, Option<StateName>> {
    use drover_engine::runtime::SharedStore;
    let mut states = BTreeMap::new();
    for (job, _) in checker.live() {
        let state = match store.apply(Request::Get { job }).await {
            Ok(Ok(Reply::Job(view))) => Some(view.state),
            _ => None,
        };
        states.insert(job, state);
    }
    states
}

fn longest_service(submissions: &[Submission], scale: f64) -> Span {
    let longest = submissions
        .iter()
        .map(|s| s.service.as_secs_f64())
        .fold(0.0, f64::max);
    Span::from_secs_f64(longest / scale)
}

fn progress_bar(show: bool, scenario: &Scenario, jobs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(jobs as u64);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} jobs done  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("scenario {}", scenario.name));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
