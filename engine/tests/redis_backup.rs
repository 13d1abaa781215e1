//! `drover admin backup` and `drover admin restore` against real redis-servers started here:
//! a namespace with jobs in every state and machines, backed up from one server and restored
//! into a fresh one, decodes to the same state; an agent and a reaper on the new server then
//! reap the jobs that were in flight, run them again, and lose nothing. Corrupt files, another
//! layout, a key the server refuses and a target that is not empty are refused, and leave the
//! target as it was.

#[path = "support/cli.rs"]
mod cli;
use cli::{drover, raw};

mod api_support;

use api_support::start_agent;
use drover_engine::core::{
    EngineConfig, Failure, JobId, JobSpec, MachineId, Outcome, Span, StateName, Time,
};
use drover_engine::redis::backup::{Backup, BackupError, KeyRecord};
use drover_engine::redis::{ConnectOptions, RedisStore, DATA_LAYOUT};
use drover_engine::runtime::{run_reaper, SharedReaperTotals, SharedStore};
use drover_engine::store::conformance::{job_with, machine, offer};
use drover_engine::store::dump::{diff, StateDump};
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "prod";

/// Short timers, so that leases expire and retries come within seconds; a wake-up lives 20 s
/// (`idle_recheck`), so the backup holds one with a time to live.
fn config() -> EngineConfig {
    let config = EngineConfig {
        lease_ttl: Span::from_secs(2),
        heartbeat: Span::from_millis(200),
        machine_ttl: Span::from_secs(2),
        reaper_period: Span::from_millis(100),
        request_timeout: Span::from_secs(2),
        retry_base: Span::from_millis(50),
        retry_max: Span::from_millis(200),
        idle_recheck: Span::from_secs(20),
        backoff_base: Span::from_secs(2),
        backoff_max: Span::from_secs(2),
        unworkable_after: Span::from_secs(1),
        ..EngineConfig::default()
    };
    config.validate().expect("valid test config");
    config
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-backup-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn backup_cli(server: &RedisServer, ns: &str, file: &Path) -> serde_json::Value {
    let file = file.to_str().unwrap();
    let (code, out, err) = drover(&[
        "admin",
        "backup",
        "--redis",
        &server.url,
        "--namespace",
        ns,
        "--out",
        file,
        "--json",
    ]);
    assert_eq!(code, 0, "backup failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `drover admin restore`: exit code, stdout, stderr.
fn restore_cli(server: &RedisServer, file: &Path, ns: Option<&str>) -> (i32, String, String) {
    let mut args = vec!["admin", "restore", "--in", file.to_str().unwrap()];
    args.extend(["--redis", &server.url]);
    if let Some(ns) = ns {
        args.extend(["--namespace", ns]);
    }
    drover(&args)
}

/// A connection that reads (`dump`) and restores without loading the library or recording a
/// configuration, as `drover admin` connects.
async fn reader(server: &RedisServer, ns: &str) -> RedisStore {
    let options = ConnectOptions {
        read_only: true,
        ..ConnectOptions::default()
    };
    RedisStore::connect_with(&server.url, ns, config(), options)
        .await
        .expect("connect")
}

fn int(value: redis::Value) -> i64 {
    redis::from_redis_value(value).expect("an integer")
}

async fn apply(store: &RedisStore, request: Request) -> Reply {
    match store.apply(request.clone()).await {
        Ok(Ok(reply)) => reply,
        other => panic!("{request:?}: {other:?}"),
    }
}

/// A `sleep` job of `gpus` GPUs x 8 GB (an agent with T4s of 16 GB runs it) for 0.2 s.
fn sleeper(gpus: u32, edit: impl FnOnce(&mut JobSpec)) -> JobSpec {
    job_with(gpus, 8, |spec| {
        spec.payload = r#"{"seconds": 0.2}"#.into();
        edit(spec);
    })
}

async fn submit(store: &RedisStore, spec: JobSpec) -> JobId {
    match apply(store, Request::Submit(Box::new(spec))).await {
        Reply::Submitted { job, .. } => job,
        other => panic!("submit: {other:?}"),
    }
}

async fn register(store: &RedisStore, name: &str, gpus: u32, mem: u32) -> MachineId {
    match apply(store, Request::Register(Box::new(machine(name, gpus, mem)))).await {
        Reply::Registered { machine } => machine,
        other => panic!("register: {other:?}"),
    }
}

/// Claims on `machine` with `seq`; the jobs granted and their tokens.
async fn claim(
    store: &RedisStore,
    machine: MachineId,
    seq: u64,
    gpus: u32,
) -> Vec<(JobId, drover_engine::core::Token)> {
    let request = Request::Claim {
        machine,
        seq,
        offer: offer(gpus, 80),
    };
    match apply(store, request).await {
        Reply::Claimed { grants, .. } => grants.iter().map(|g| (g.job, g.token)).collect(),
        other => panic!("claim: {other:?}"),
    }
}

/// Leases `job` alone on `machine` and records `outcome`; the state it ends in.
async fn run_once(
    store: &RedisStore,
    machine: MachineId,
    seq: u64,
    job: JobId,
    outcome: Outcome,
) -> StateName {
    let grants = claim(store, machine, seq, 1).await;
    assert_eq!(grants.len(), 1, "one grant: {grants:?}");
    assert_eq!(grants[0].0, job);
    let complete = Request::Complete {
        job,
        token: grants[0].1,
        outcome,
        result: None,
    };
    match apply(store, complete).await {
        Reply::Recorded { state } => state,
        other => panic!("complete: {other:?}"),
    }
}

/// Jobs of the populated namespace, by the state each was left in.
#[derive(Debug)]
struct Made {
    succeeded: JobId,
    dead: JobId,
    cancelled: JobId,
    timed_out: JobId,
    unworkable: JobId,
    delayed: JobId,
    /// Leased to a machine that no longer runs anywhere after the restore.
    leased: [JobId; 2],
    queued: [JobId; 3],
    /// The idle machine that a wake-up (a key with a time to live) waits for.
    woken: MachineId,
}

impl Made {
    fn all(&self) -> Vec<JobId> {
        let mut all = vec![
            self.succeeded,
            self.dead,
            self.cancelled,
            self.timed_out,
            self.unworkable,
            self.delayed,
        ];
        all.extend(self.leased);
        all.extend(self.queued);
        all
    }
}

/// A namespace with jobs in every state, busy, idle and departed machines, and a wake-up.
async fn populate(store: &RedisStore) -> Made {
    let host = register(store, "gpu-host-1", 2, 80).await;
    // Too large for any machine seen: judged unworkable once it waited `unworkable_after`.
    let unworkable = submit(store, sleeper(16, |_| {})).await;
    let error = |retryable| {
        Outcome::Failed(Failure::Error {
            retryable,
            message: format!("CUDA error (retryable: {retryable})"),
        })
    };
    let one = |edit: fn(&mut JobSpec)| sleeper(1, edit);
    let succeeded = submit(store, one(|s| s.idempotency_key = Some("once".into()))).await;
    let state = run_once(store, host, 1, succeeded, Outcome::Succeeded).await;
    assert_eq!(state, StateName::Succeeded);
    let dead = submit(store, one(|_| {})).await;
    assert_eq!(
        run_once(store, host, 2, dead, error(false)).await,
        StateName::Dead
    );
    let timed_out = submit(store, one(|s| s.max_attempts = 1)).await;
    let state = run_once(
        store,
        host,
        3,
        timed_out,
        Outcome::Failed(Failure::TimedOut),
    )
    .await;
    assert_eq!(state, StateName::TimedOut);
    let delayed = submit(store, one(|_| {})).await;
    assert_eq!(
        run_once(store, host, 4, delayed, error(true)).await,
        StateName::Delayed
    );
    let cancelled = submit(store, one(|_| {})).await;
    apply(store, Request::Cancel { job: cancelled }).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let heartbeat = Request::Heartbeat {
        machine: host,
        leases: vec![],
    };
    apply(store, heartbeat).await;
    let Reply::Reaped(report) = apply(store, Request::Reap { max: 100 }).await else {
        panic!("reap")
    };
    assert_eq!(report.unworkable, 1, "{report:?}");

    // In flight: two leases on the host, one with progress.
    let leased = [
        submit(store, one(|_| {})).await,
        submit(store, one(|_| {})).await,
    ];
    let grants = claim(store, host, 5, 2).await;
    assert_eq!(
        grants.iter().map(|g| g.0).collect::<Vec<_>>(),
        leased.to_vec()
    );
    let progress = Request::Progress {
        job: leased[0],
        token: grants[0].1,
        percent: 40,
        message: "step 4 of 10".into(),
    };
    apply(store, progress).await;
    // Queued: two jobs of 2 GPUs, which the busy host cannot take now.
    let two = sleeper(2, |s| s.priority = 80);
    let mut queued = [
        submit(store, two.clone()).await,
        submit(store, two).await,
        JobId(0),
    ];
    // An idle machine of one GPU, then a job it fits: the store leaves it a wake-up.
    let woken = register(store, "gpu-host-2", 1, 80).await;
    let grants = claim(store, woken, 1, 1).await;
    assert!(grants.is_empty(), "nothing fits it yet: {grants:?}");
    queued[2] = submit(store, one(|_| {})).await;
    // A machine that left.
    let gone = register(store, "gpu-host-3", 1, 80).await;
    apply(store, Request::Deregister { machine: gone }).await;
    Made {
        succeeded,
        dead,
        cancelled,
        timed_out,
        unworkable,
        delayed,
        leased,
        queued,
        woken,
    }
}

/// `a` and `b` hold the same state, the store clock included; neither has anomalies.
fn assert_same(a: &StateDump, b: &StateDump) {
    if let Some(d) = diff(a, b, "backed up", "restored ") {
        panic!("the restored namespace differs at {d}");
    }
    assert_eq!(a.clock, b.clock, "the store clock is restored");
    assert_eq!(a, b);
    assert_eq!(a.anomalies, Vec::<String>::new());
}

fn states(dump: &StateDump) -> BTreeMap<JobId, StateName> {
    dump.jobs.iter().map(|j| (j.id, j.state)).collect()
}

async fn job(store: &RedisStore, job: JobId) -> drover_engine::core::model::JobView {
    match apply(store, Request::Get { job }).await {
        Reply::Job(view) => *view,
        other => panic!("get {job}: {other:?}"),
    }
}

/// Waits until every job in `jobs` has succeeded; their views.
async fn wait_succeeded(
    store: &RedisStore,
    jobs: &[JobId],
) -> Vec<drover_engine::core::model::JobView> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for &j in jobs {
            views.push(job(store, j).await);
        }
        if views.iter().all(|v| v.state == StateName::Succeeded) {
            return views;
        }
        let states: Vec<_> = views.iter().map(|v| (v.id, v.state, v.attempt)).collect();
        assert!(Instant::now() < until, "not all succeeded: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restored_namespace_is_the_same_and_runs_on() {
    let source = RedisServer::start();
    let store = RedisStore::connect(&source.url, NS, config())
        .await
        .expect("connect");
    let made = populate(&store).await;
    let before = store.dump().await.expect("dump");
    let wanted = BTreeMap::from([
        (made.succeeded, StateName::Succeeded),
        (made.dead, StateName::Dead),
        (made.cancelled, StateName::Cancelled),
        (made.timed_out, StateName::TimedOut),
        (made.unworkable, StateName::Unworkable),
        (made.delayed, StateName::Delayed),
        (made.leased[0], StateName::Leased),
        (made.leased[1], StateName::Leased),
        (made.queued[0], StateName::Queued),
        (made.queued[1], StateName::Queued),
        (made.queued[2], StateName::Queued),
    ]);
    assert_eq!(states(&before), wanted, "every state is there to back up");
    let wake_key = format!("{{{NS}}}:wake:{}", made.woken.0);
    assert!(
        int(raw(&source, &["PTTL", &wake_key])) > 0,
        "a wake-up with a time to live"
    );

    let file = temp_file("prod.backup");
    let written = backup_cli(&source, NS, &file);
    println!("backup: {written}");
    let kinds = &written["kinds"];
    assert_eq!(kinds["j:<n>"], 11, "{written}");
    assert_eq!(kinds["m:<n>"], 3, "{written}");
    assert_eq!(kinds["journal"], 1, "{written}");
    assert_eq!(written["with_ttl"], 1, "the wake-up: {written}");
    assert_eq!(written["unknown"], serde_json::json!([]));
    assert_eq!(written["layout"], DATA_LAYOUT);
    assert_eq!(
        store.dump().await.expect("dump"),
        before,
        "a backup changes nothing"
    );

    // Into a fresh server: the same state, key for key, with the wake-up's expiry.
    let target = RedisServer::start();
    let (code, out, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 0, "restore failed: {err}");
    assert!(out.contains(&format!("restored namespace {NS:?}")), "{out}");
    println!("{out}");
    let restored = reader(&target, NS).await;
    assert_same(&before, &restored.dump().await.expect("dump"));
    assert_eq!(
        restored.namespace_keys().await.unwrap(),
        store.namespace_keys().await.unwrap()
    );
    let ttl = int(raw(&target, &["PTTL", &wake_key]));
    assert!(
        (1..=20_000).contains(&ttl),
        "the wake-up keeps its expiry: {ttl} ms"
    );
    let epoch = |server: &RedisServer| -> String {
        redis::from_redis_value(raw(server, &["HGET", &format!("{{{NS}}}:meta"), "epoch"])).unwrap()
    };
    assert_ne!(
        epoch(&source),
        epoch(&target),
        "a restore starts a new epoch"
    );

    // The same file into another namespace of the same server.
    let (code, _, err) = restore_cli(&target, &file, Some("copy"));
    assert_eq!(code, 0, "restore into another namespace failed: {err}");
    assert_same(
        &before,
        &reader(&target, "copy").await.dump().await.unwrap(),
    );

    // The engine runs on from the restore: a reaper and an agent on the new server.
    runs_on(&target, &made).await;
    let _ = std::fs::remove_file(&file);
}

/// A reaper and an agent on the restored server: the leases of the machine that is not there
/// expire and are reaped, every queued, delayed and reaped job runs, finished ones stay.
async fn runs_on(target: &RedisServer, made: &Made) {
    let store = RedisStore::connect(&target.url, NS, config())
        .await
        .expect("an engine process connects to the restored namespace");
    let totals = SharedReaperTotals::default();
    let reaper = tokio::spawn(run_reaper(
        store.clone(),
        Arc::new(config()),
        totals.clone(),
        std::future::pending(),
    ));
    let agent = start_agent(
        store.clone(),
        config(),
        api_support::machine("rescue", 2),
        Duration::from_secs(1),
    );
    let mut reran = made.leased.to_vec();
    reran.push(made.delayed);
    let views = wait_succeeded(&store, &reran).await;
    for view in &views {
        assert_eq!(view.attempt, 2, "retried once after the restore: {view:?}");
    }
    let queued = wait_succeeded(&store, &made.queued).await;
    assert!(queued.iter().all(|v| v.attempt == 1), "{queued:?}");
    for (j, state) in [
        (made.succeeded, StateName::Succeeded),
        (made.dead, StateName::Dead),
        (made.cancelled, StateName::Cancelled),
        (made.timed_out, StateName::TimedOut),
        (made.unworkable, StateName::Unworkable),
    ] {
        assert_eq!(
            job(&store, j).await.state,
            state,
            "job {j} is kept as it was"
        );
    }
    let after = store.dump().await.unwrap();
    let ids: Vec<JobId> = after.jobs.iter().map(|j| j.id).collect();
    for j in made.all() {
        assert!(
            ids.contains(&j),
            "job {j}, accepted before the backup, is lost"
        );
    }
    assert!(
        after.totals.revoked >= 2,
        "the in-flight leases were revoked: {:?}",
        after.totals
    );
    assert_eq!(after.anomalies, Vec::<String>::new());
    let report = totals.lock().unwrap().report;
    assert!(
        report.machines_lost >= 2,
        "the old machines are lost: {report:?}"
    );
    reaper.abort();
    agent.task.abort();
}

/// A source namespace of a few jobs, backed up to a file; its dump.
async fn small_backup(name: &str) -> (RedisServer, PathBuf, StateDump) {
    let source = RedisServer::start();
    let store = RedisStore::connect(&source.url, NS, config())
        .await
        .expect("connect");
    for _ in 0..3 {
        submit(&store, sleeper(1, |_| {})).await;
    }
    let file = temp_file(name);
    backup_cli(&source, NS, &file);
    let dump = store.dump().await.unwrap();
    (source, file, dump)
}

#[tokio::test]
async fn a_corrupt_file_or_a_busy_namespace_is_refused_and_nothing_changes() {
    let (_source, file, before) = small_backup("refusals.backup").await;
    let target = RedisServer::start();

    // One flipped bit in the last key's payload.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    let corrupt = temp_file("corrupt.backup");
    std::fs::write(&corrupt, &bytes).unwrap();
    let (code, _, err) = restore_cli(&target, &corrupt, None);
    assert_eq!(code, 1);
    assert!(
        err.contains("the backup is corrupt") && err.contains("nothing was restored"),
        "{err}"
    );
    // Cut short, as a copy that did not finish.
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = restore_cli(&target, &corrupt, None);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(int(raw(&target, &["DBSIZE"])), 0, "nothing was written");

    // Restored once; a second time into the same namespace is refused, the first intact.
    let (code, _, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("namespace {NS:?} on the target is not empty"))
            && err.contains("key(s)"),
        "{err}"
    );
    assert_same(&before, &reader(&target, NS).await.dump().await.unwrap());

    // An empty namespace has nothing to back up (a mistyped --namespace, most likely).
    let (code, _, err) = drover(&[
        "admin",
        "backup",
        "--redis",
        &target.url,
        "--namespace",
        "nope",
        "--out",
        temp_file("nope.backup").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("\"nope\" holds no keys"), "{err}");
    // More keys than --max-keys: refused before the snapshot, pointing at a replica.
    let (code, _, err) = drover(&[
        "admin",
        "backup",
        "--redis",
        &target.url,
        "--namespace",
        NS,
        "--max-keys",
        "5",
        "--out",
        temp_file("large.backup").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("more than --max-keys 5") && err.contains("replica"),
        "{err}"
    );
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&corrupt);
}

#[tokio::test]
async fn another_layout_is_refused() {
    let (_source, file, _) = small_backup("layout.backup").await;
    let mut backup = Backup::read_from(&file).unwrap();
    backup.header.layout = Some(DATA_LAYOUT + 1);
    backup.write_to(&file).unwrap();
    let target = RedisServer::start();
    let (code, _, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 1);
    let want = format!(
        "the backup holds data in layout {} and this engine reads layout {DATA_LAYOUT}",
        DATA_LAYOUT + 1
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(int(raw(&target, &["DBSIZE"])), 0);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_key_the_server_refuses_undoes_the_restore() {
    let (_source, file, _) = small_backup("refused.backup").await;
    let mut backup = Backup::read_from(&file).unwrap();
    // Sorted last, so that every other key is restored before it is refused.
    backup.records.push(KeyRecord {
        key: b"zz-not-a-payload".to_vec(),
        kind: "string".into(),
        pttl_ms: -1,
        payload: b"garbage".to_vec(),
    });
    let target = RedisServer::start();
    let err = reader(&target, NS)
        .await
        .restore_namespace(&backup)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::RestoreRefused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("zz-not-a-payload") && text.contains("nothing was restored"),
        "{text}"
    );
    assert_eq!(
        int(raw(&target, &["DBSIZE"])),
        0,
        "the keys before it are undone"
    );
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn unknown_keys_are_carried_and_a_clock_behind_is_reported() {
    let source = RedisServer::start();
    let store = RedisStore::connect(&source.url, NS, config())
        .await
        .expect("connect");
    submit(&store, sleeper(1, |_| {})).await;
    // A key kind this engine does not know (a newer engine's).
    raw(
        &source,
        &["SET", &format!("{{{NS}}}:results:1"), "{\"ok\":true}"],
    );
    // The namespace's clock an hour ahead of the servers' (a host whose clock ran fast).
    let now = store.dump().await.unwrap().clock;
    let ahead = Time(now.0 + 3_600_000_000);
    store.set_test_clock(Some(ahead)).await.unwrap();
    submit(&store, sleeper(1, |_| {})).await;
    store.set_test_clock(None).await.unwrap();

    let (backup, snapshot) = reader(&source, NS)
        .await
        .snapshot_namespace(1000)
        .await
        .unwrap();
    assert_eq!(snapshot.unknown, vec!["results:1".to_string()]);
    let kinds: BTreeMap<String, String> = backup
        .records
        .iter()
        .map(|r| (r.name(), r.kind.clone()))
        .collect();
    for (key, kind) in [
        ("results:1", "string"),
        ("meta", "hash"),
        ("jobs", "zset"),
        ("journal", "stream"),
    ] {
        assert_eq!(kinds.get(key).map(String::as_str), Some(kind), "{kinds:?}");
    }
    assert_eq!(snapshot.kinds["(unknown)"], 1);
    assert_eq!(backup.header.store_clock, Some(ahead));
    let target = RedisServer::start();
    let report = reader(&target, NS)
        .await
        .restore_namespace(&backup)
        .await
        .unwrap();
    assert_eq!(report.unknown, vec!["results:1".to_string()]);
    let value: String =
        redis::from_redis_value(raw(&target, &["GET", &format!("{{{NS}}}:results:1")])).unwrap();
    assert_eq!(value, "{\"ok\":true}");
    let behind = report.clock_behind.expect("the target's clock is behind").0;
    assert!(
        (3_590_000_000..=3_600_000_000).contains(&behind),
        "about an hour: {behind} µs"
    );
}

/// Submits `n` jobs in batches of the store's `max_batch`.
async fn submit_many(store: &RedisStore, n: usize) {
    let batch = config().limits.max_batch as usize;
    for start in (0..n).step_by(batch) {
        let requests = (start..n.min(start + batch))
            .map(|_| Request::Submit(Box::new(sleeper(1, |_| {}))))
            .collect();
        let Reply::Batch(replies) = apply(store, Request::Batch(requests)).await else {
            panic!("batch")
        };
        assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    }
}

/// Leases `n` jobs on 16-GPU machines and completes all but `keep_leased` of them.
async fn run_many(store: &RedisStore, n: usize, keep_leased: usize) {
    let mut seq = 0;
    let mut done = 0;
    let mut held = 0;
    for m in 0.. {
        let machine = register(store, &format!("big-{m}"), 16, 80).await;
        let grants = claim(store, machine, 1, 16).await;
        assert!(!grants.is_empty(), "jobs left to lease");
        seq += 1;
        let completes: Vec<Request> = grants
            .iter()
            .skip(if held < keep_leased { grants.len() } else { 0 })
            .map(|&(job, token)| Request::Complete {
                job,
                token,
                outcome: Outcome::Succeeded,
                result: None,
            })
            .collect();
        held += grants.len() - completes.len();
        done += grants.len();
        if !completes.is_empty() {
            apply(store, Request::Batch(completes)).await;
        }
        if done >= n {
            break;
        }
        // Machines leave once done, so the registry stays within its limit.
        if held == 0 || done > keep_leased {
            apply(store, Request::Deregister { machine }).await;
        }
    }
    assert!(seq > 0);
}

/// What a backup of 100,000 jobs costs: how long the snapshot script holds Redis, how long a
/// client's PING waits meanwhile, the file's size, how long the restore takes. Run it with
/// `cargo test --release -p drover-engine --test redis_backup -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement: about a minute"]
async fn measure_a_backup_of_100k_jobs() {
    let jobs = 100_000;
    let source = RedisServer::start_with(&["--appendonly", "no"]);
    let mut large = config();
    large.limits.max_machines = 100_000;
    large.unworkable_after = Span::from_secs(3600);
    let store = RedisStore::connect(&source.url, NS, large)
        .await
        .expect("connect");
    let started = Instant::now();
    submit_many(&store, jobs).await;
    run_many(&store, 30_000, 2_000).await;
    println!("populated {jobs} jobs in {:?}", started.elapsed());

    // A client pinging all along: the longest wait is what the snapshot cost others.
    let url = source.url.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let _: String = redis::cmd("PING").query(&mut con).unwrap();
                worst = worst.max(at.elapsed());
            }
            worst
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let file = temp_file("100k.backup");
    let at = Instant::now();
    let written = backup_cli(&source, NS, &file);
    let backup_took = at.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst_ping = pinger.join().unwrap();
    println!(
        "backup: {} keys, {} bytes, script {} ; `drover admin backup` took {backup_took:?}; \
         the longest PING meanwhile {worst_ping:?}",
        written["keys"], written["bytes"], written["blocked"]
    );

    let target = RedisServer::start_with(&["--appendonly", "no"]);
    let at = Instant::now();
    let (code, out, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 0, "{err}");
    println!("restore took {:?}:\n{out}", at.elapsed());
    let before = store.dump().await.unwrap();
    assert_eq!(before.jobs.len(), jobs);
    assert_same(&before, &reader(&target, NS).await.dump().await.unwrap());
    let _ = std::fs::remove_file(&file);
}

/// On a Redis Cluster the snapshot and the restore go to the shard that holds the namespace's
/// slot (the calls name its `meta`): a backup of a cluster's namespace restores into another
/// namespace of the cluster (another slot, most likely another master) and into a single node.
#[tokio::test]
async fn a_cluster_namespace_backs_up_and_restores() {
    let cluster = drover_engine::testing::RedisCluster::start(3, 0);
    let url = cluster.url();
    let store = RedisStore::connect(&url, NS, config())
        .await
        .expect("connect");
    let host = register(&store, "gpu-host-1", 2, 80).await;
    for _ in 0..4 {
        submit(&store, sleeper(1, |_| {})).await;
    }
    assert_eq!(claim(&store, host, 1, 2).await.len(), 2);
    let before = store.dump().await.unwrap();
    let file = temp_file("cluster.backup");
    let (code, _, err) = drover(&[
        "admin",
        "backup",
        "--redis",
        &url,
        "--namespace",
        NS,
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");

    let mut args = vec!["admin", "restore", "--in", file.to_str().unwrap()];
    args.extend(["--redis", &url, "--namespace", "copy"]);
    let (code, _, err) = drover(&args);
    assert_eq!(code, 0, "{err}");
    let options = ConnectOptions {
        read_only: true,
        ..ConnectOptions::default()
    };
    let copy = RedisStore::connect_with(&url, "copy", config(), options)
        .await
        .unwrap();
    assert_same(&before, &copy.dump().await.unwrap());

    let single = RedisServer::start();
    let (code, _, err) = restore_cli(&single, &file, None);
    assert_eq!(code, 0, "{err}");
    assert_same(&before, &reader(&single, NS).await.dump().await.unwrap());
    let _ = std::fs::remove_file(&file);
}

/// The snapshot writes nothing, so a replica runs it: a large namespace is backed up there,
/// where the pause stops no client of the engine.
#[tokio::test]
async fn a_replica_is_backed_up_as_its_master() {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let store = RedisStore::connect(&master.url, NS, config())
        .await
        .expect("connect");
    for _ in 0..3 {
        submit(&store, sleeper(1, |_| {})).await;
    }
    // The replica has every write so far (WAIT would only cover its own connection's writes).
    let meta = format!("{{{NS}}}:meta");
    let caught_up = Instant::now() + Duration::from_secs(30);
    while raw(&replica, &["HGETALL", &meta]) != raw(&master, &["HGETALL", &meta])
        || raw(&replica, &["DBSIZE"]) != raw(&master, &["DBSIZE"])
    {
        assert!(Instant::now() < caught_up, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = temp_file("replica.backup");
    let written = backup_cli(&replica, NS, &file);
    assert_eq!(written["kinds"]["j:<n>"], 3, "{written}");
    let target = RedisServer::start();
    let (code, _, err) = restore_cli(&target, &file, None);
    assert_eq!(code, 0, "{err}");
    let before = store.dump().await.unwrap();
    assert_same(&before, &reader(&target, NS).await.dump().await.unwrap());
    let _ = std::fs::remove_file(&file);
}
