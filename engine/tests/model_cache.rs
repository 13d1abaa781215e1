//! The agent's model cache end to end: models served by a local HTTP server started here,
//! fetched by agents into their own cache directories, claims on a real redis-server that
//! prefer the warm machine, eviction within the disk budget, a checksum that does not match,
//! one download for two attempts, scratch directories, and a disk that is really full (a
//! tmpfs in a user namespace, where `unshare` allows one).

mod api_support;

use api_support::*;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use drover_engine::agent::Agent;
use drover_engine::api::agent_metrics;
use drover_engine::core::config::CatalogModel;
use drover_engine::core::{EngineConfig, ModelSet, Time};
use drover_engine::executor::{CommandTemplate, Executors};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::model_cache::layout::{entry_name, EVICTED_PREFIX, PART_PREFIX};
use drover_engine::runtime::model_cache::{CacheEvent, FetchError, ModelError, ModelSource};
use drover_engine::runtime::{
    AgentDriver, DriverOptions, LocalStore, SharedStore, Workspace, WorkspaceConfig,
};
use drover_engine::testing::RedisServer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// Model files served over HTTP, with the requests each got.
struct ModelServer {
    base: String,
    state: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

struct Served {
    files: BTreeMap<String, Vec<u8>>,
    /// Each response waits this long first (so that concurrent attempts overlap).
    delay: Duration,
    requests: Mutex<BTreeMap<String, u64>>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_model(
    State(served): State<Arc<Served>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    *served
        .requests
        .lock()
        .unwrap()
        .entry(name.clone())
        .or_default() += 1;
    tokio::time::sleep(served.delay).await;
    match served.files.get(&name) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl ModelServer {
    async fn start(files: &[(&str, Vec<u8>)], delay: Duration) -> ModelServer {
        let state = Arc::new(Served {
            files: files
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.clone()))
                .collect(),
            delay,
            requests: Mutex::new(BTreeMap::new()),
        });
        let router = Router::new()
            .route("/models/{name}", get(serve_model))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        ModelServer { base, state, task }
    }

    fn requests(&self, name: &str) -> u64 {
        self.state
            .requests
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// A source for `name` at this server, with its digest when given.
    fn source(&self, name: &str, sha256: Option<String>) -> ModelSource {
        ModelSource {
            url: Some(format!("{}/models/{name}", self.base)),
            command: None,
            sha256,
            timeout: None,
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Distinct content for each model, `len` bytes.
fn content(name: &str, len: usize) -> Vec<u8> {
    name.bytes().cycle().take(len).collect()
}

/// The fast test config with a catalog of 1 GB models (their files are a few KB: the budget
/// counts catalog sizes).
fn catalog_config(models: &[&str]) -> EngineConfig {
    let mut config = fast_config();
    config.models = models
        .iter()
        .map(|name| CatalogModel {
            name: name.to_string(),
            size_gb: 1,
        })
        .collect();
    config
}

/// A fresh directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("drover-cache-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn workspace_config(
    dir: &Path,
    disk_gb: u32,
    sources: &BTreeMap<String, ModelSource>,
) -> WorkspaceConfig {
    WorkspaceConfig {
        cache_dir: dir.join("models"),
        scratch_dir: dir.join("scratch"),
        disk_gb,
        sources: sources.clone(),
    }
}

fn template(program: &str, args: &[&str]) -> CommandTemplate {
    CommandTemplate {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        workdir: None,
    }
}

/// An in-process agent with a workspace in `dir`, budget `disk_gb`.
struct CacheAgent {
    agent: TestAgent,
}

impl CacheAgent {
    fn start<S: SharedStore>(
        store: S,
        config: &EngineConfig,
        name: &str,
        gpus: u32,
        workspace: (WorkspaceConfig, &BTreeMap<String, CommandTemplate>),
    ) -> CacheAgent {
        let (ws_config, kinds) = workspace;
        let config = Arc::new(config.clone());
        let (workspace, cached) = Workspace::open(&ws_config, &config).unwrap();
        let spec = drover_engine::core::MachineSpec {
            disk_gb: ws_config.disk_gb,
            ..machine(name, gpus)
        };
        let agent = Agent::new(config.clone(), spec, cached, 11, Time::ZERO);
        let executors = Executors::from_templates(kinds);
        let options = DriverOptions::default();
        let driver =
            AgentDriver::new(store, agent, config, executors, options).with_workspace(workspace);
        let snapshot = driver.snapshot();
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(async move {
            let _ = drained.await;
        }));
        let agent = TestAgent {
            snapshot,
            drain: Some(drain),
            task,
        };
        CacheAgent { agent }
    }

    fn machine(&self) -> Option<u64> {
        self.agent.snapshot.borrow().machine.map(|m| m.0)
    }

    fn metrics(&self) -> String {
        agent_metrics::render(&self.agent.snapshot.borrow())
    }
}

/// Makes `models` ready in `workspace`, as an attempt would before it runs.
async fn fetch_models(
    workspace: &Workspace,
    config: &EngineConfig,
    models: &[&str],
) -> Result<BTreeMap<String, PathBuf>, ModelError> {
    let set = models.iter().fold(ModelSet::EMPTY, |set, m| {
        set.with(config.model_id(m).unwrap())
    });
    let (events, _keep) = tokio::sync::mpsc::channel::<CacheEvent>(16);
    let (progress, _reports) = tokio::sync::mpsc::channel(16);
    let sink = drover_engine::executor::ProgressSink::new(
        drover_engine::core::JobId(0),
        drover_engine::core::Token(0),
        progress,
    );
    workspace.cache().acquire(set, &events).wait(&sink).await
}

/// Fetches `models` into a workspace at `ws` and closes it, as a previous run would have.
async fn prewarm(ws: &WorkspaceConfig, config: &EngineConfig, models: &[&str]) {
    let (workspace, _) = Workspace::open(ws, config).unwrap();
    let paths = fetch_models(&workspace, config, models).await.unwrap();
    assert_eq!(paths.len(), models.len());
}

async fn submit<S: SharedStore>(api: &TestApi<S>, body: Value) -> String {
    let (status, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    assert!(status.is_success(), "{status}: {reply}");
    reply["id"].as_str().unwrap().to_string()
}

fn needs(models: &[&str], seconds: f64) -> Value {
    json!({"kind": "sleep", "payload": {"seconds": seconds},
           "requirements": {"gpus": 1, "models": models}})
}

/// The metric's value in `text` (a line `name value` or `name{labels} value`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The machines that ran the finished job's attempts, in order (its journal's `leased`).
async fn ran_on<S: SharedStore>(api: &TestApi<S>, id: &str) -> Vec<u64> {
    // A finished job's stream holds its events after the given id: all of them.
    let events = read_events(&api.client, id, &[("last-event-id", "0-0")]).await;
    let machine = |value: &Value| {
        let text = value
            .as_str()
            .map(|s| s.trim_start_matches('m').to_string());
        value.as_u64().or(text.and_then(|t| t.parse().ok()))
    };
    events
        .iter()
        .filter(|e| e.event == "leased")
        .filter_map(|e| machine(&e.data["machine"]))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_prefers_the_agent_whose_cache_is_warm() {
    let (m1, m2) = (content("m1", 4096), content("m2", 4096));
    let server = ModelServer::start(&[("m1", m1), ("m2", m2)], Duration::ZERO).await;
    let sources = BTreeMap::from([
        ("m1".to_string(), server.source("m1", None)),
        ("m2".to_string(), server.source("m2", None)),
    ]);
    let config = catalog_config(&["m1", "m2"]);
    let (dir1, dir2) = (temp_dir("warm1"), temp_dir("warm2"));
    let (ws1, ws2) = (
        workspace_config(&dir1, 10, &sources),
        workspace_config(&dir2, 10, &sources),
    );
    prewarm(&ws1, &config, &["m1"]).await;
    prewarm(&ws2, &config, &["m2"]).await;
    // What a crash left is swept when the agent opens the cache again.
    std::fs::write(ws1.cache_dir.join(format!("{PART_PREFIX}m1-x")), b"half").unwrap();
    assert_eq!((server.requests("m1"), server.requests("m2")), (1, 1));

    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url, "warm", config.clone())
        .await
        .unwrap();
    let api = start_api(store.clone(), config.clone()).await;
    // The job needing m2 is older, so only the warm model can make w1 take the other.
    let job2 = submit(&api, needs(&["m2"], 0.2)).await;
    let job1 = submit(&api, needs(&["m1"], 1.0)).await;
    let kinds = BTreeMap::new();
    let a1 = CacheAgent::start(store.clone(), &config, "w1", 1, (ws1.clone(), &kinds));
    wait_job(&api.client, &job1, LIMIT, state_is("leased")).await;
    let (_, waiting) = api.client.get(&format!("/v1/jobs/{job2}")).await.unwrap();
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let a2 = CacheAgent::start(store.clone(), &config, "w2", 1, (ws2.clone(), &kinds));
    let done1 = wait_job(&api.client, &job1, LIMIT, state_is("succeeded")).await;
    let done2 = wait_job(&api.client, &job2, LIMIT, state_is("succeeded")).await;
    assert_eq!(done1["attempt"], 1, "{done1}");
    assert_eq!(done2["attempt"], 1, "{done2}");
    assert_eq!(ran_on(&api, &job1).await, vec![a1.machine().unwrap()]);
    assert_eq!(ran_on(&api, &job2).await, vec![a2.machine().unwrap()]);
    assert_eq!(
        (server.requests("m1"), server.requests("m2")),
        (1, 1),
        "nothing downloaded again"
    );
    let metrics = a1.metrics();
    assert_eq!(metric(&metrics, "drover_agent_model_cache_hits_total"), 1.0);
    assert_eq!(metric(&metrics, "drover_agent_model_fetches_total"), 0.0);
    assert_eq!(metric(&metrics, "drover_agent_model_cached"), 1.0);
    assert!(!entries(&ws1.cache_dir).iter().any(|e| e.starts_with('.')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_model_is_evicted_within_the_budget() {
    let files: Vec<(&str, Vec<u8>)> = ["a", "b", "c"]
        .iter()
        .map(|&m| (m, content(m, 2048)))
        .collect();
    let server = ModelServer::start(&files, Duration::ZERO).await;
    let sources: BTreeMap<String, ModelSource> = ["a", "b", "c"]
        .iter()
        .map(|&m| (m.to_string(), server.source(m, None)))
        .collect();
    let config = catalog_config(&["a", "b", "c"]);
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let dir = temp_dir("evict");
    let ws = workspace_config(&dir, 2, &sources);
    let agent = CacheAgent::start(
        api.store.clone(),
        &config,
        "e1",
        1,
        (ws.clone(), &BTreeMap::new()),
    );
    let entry = |m: &str| entry_name(m, &sources[m]);
    // Two 1 GB models fill the 2 GB budget; `a` is used again, so `b` is the oldest.
    for models in ["a", "b", "a", "c"] {
        let id = submit(&api, needs(&[models], 0.0)).await;
        wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    }
    wait_until("b is deleted", || !ws.cache_dir.join(entry("b")).exists()).await;
    wait_until("the trash is emptied", || {
        !entries(&ws.cache_dir)
            .iter()
            .any(|e| e.starts_with(EVICTED_PREFIX))
    })
    .await;
    let on_disk = entries(&ws.cache_dir);
    assert_eq!(on_disk, {
        let mut want = vec![entry("a"), entry("c")];
        want.sort();
        want
    });
    let requests: Vec<u64> = ["a", "b", "c"].iter().map(|m| server.requests(m)).collect();
    assert_eq!(requests, vec![1, 1, 1], "the second `a` was a hit");
    // `b` again: fetched again, and now `a` (used before `c`) goes.
    let id = submit(&api, needs(&["b"], 0.0)).await;
    wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    wait_until("a is deleted", || !ws.cache_dir.join(entry("a")).exists()).await;
    assert_eq!(server.requests("b"), 2);
    let metrics = agent.metrics();
    assert_eq!(metric(&metrics, "drover_agent_model_evictions_total"), 2.0);
    assert_eq!(metric(&metrics, "drover_agent_model_cache_hits_total"), 1.0);
    assert_eq!(
        metric(&metrics, "drover_agent_model_cache_misses_total"),
        4.0
    );
    assert_eq!(metric(&metrics, "drover_agent_model_cached"), 2.0);
    assert_eq!(
        metric(&metrics, "drover_agent_model_bytes_downloaded_total"),
        4.0 * 2048.0
    );
    wait_until("the trash is emptied", || {
        !entries(&ws.cache_dir)
            .iter()
            .any(|e| e.starts_with(EVICTED_PREFIX))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_fails_the_attempt_and_leaves_no_file() {
    let served = content("bad", 3000);
    let server = ModelServer::start(&[("bad", served)], Duration::ZERO).await;
    let declared = sha256(b"the file the catalog meant");
    let sources = BTreeMap::from([("bad".to_string(), server.source("bad", Some(declared)))]);
    let config = catalog_config(&["bad"]);
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let dir = temp_dir("checksum");
    let ws = workspace_config(&dir, 10, &sources);
    let agent = CacheAgent::start(
        api.store.clone(),
        &config,
        "c1",
        1,
        (ws.clone(), &BTreeMap::new()),
    );
    let body = json!({"kind": "sleep", "payload": {"seconds": 0},
                      "requirements": {"gpus": 1, "models": ["bad"]}, "max_attempts": 2});
    let id = submit(&api, body).await;
    let job = wait_job(&api.client, &id, LIMIT, state_is("dead")).await;
    assert_eq!(job["attempt"], 2, "{job}");
    let error = job["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("model bad: sha256 mismatch"), "{job}");
    assert_eq!(
        server.requests("bad"),
        2,
        "each attempt fetched once, no retries"
    );
    assert_eq!(entries(&ws.cache_dir), Vec::<String>::new(), "no file left");
    let metrics = agent.metrics();
    let failures = "drover_agent_model_fetch_failures_total{reason=\"checksum\"}";
    assert_eq!(metric(&metrics, failures), 2.0);
    assert_eq!(metric(&metrics, "drover_agent_model_cached"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attempts_needing_one_model_download_it_once_and_report_progress() {
    let server =
        ModelServer::start(&[("m", content("m", 8192))], Duration::from_millis(1500)).await;
    let sources = BTreeMap::from([("m".to_string(), server.source("m", None))]);
    let config = catalog_config(&["m"]);
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let dir = temp_dir("single");
    let ws = workspace_config(&dir, 10, &sources);
    let first = submit(&api, needs(&["m"], 0.1)).await;
    let second = submit(&api, needs(&["m"], 0.1)).await;
    let agent = CacheAgent::start(
        api.store.clone(),
        &config,
        "s1",
        2,
        (ws.clone(), &BTreeMap::new()),
    );
    let fetching = |job: &Value| {
        let message = job["progress"]["message"].as_str().unwrap_or_default();
        message.starts_with("fetching models: m ") || job["state"] == "succeeded"
    };
    let seen = wait_job(&api.client, &first, LIMIT, fetching).await;
    assert_eq!(
        seen["state"], "leased",
        "the download shows as progress: {seen}"
    );
    for id in [&first, &second] {
        wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    }
    assert_eq!(server.requests("m"), 1, "one download for both attempts");
    let metrics = agent.metrics();
    assert_eq!(metric(&metrics, "drover_agent_model_fetches_total"), 1.0);
    assert_eq!(
        metric(&metrics, "drover_agent_model_cache_misses_total"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_too_small_for_the_model_sends_the_job_where_it_fits_and_oversized_files_are_cut_off(
) {
    let server = ModelServer::start(&[("big", content("big", 4096))], Duration::ZERO).await;
    let sources = BTreeMap::from([("big".to_string(), server.source("big", None))]);
    let mut config = catalog_config(&["big"]);
    config.models[0].size_gb = 5;
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let (small_dir, large_dir) = (temp_dir("small"), temp_dir("large"));
    let kinds = BTreeMap::new();
    let small_ws = workspace_config(&small_dir, 2, &sources);
    let small = CacheAgent::start(api.store.clone(), &config, "small", 1, (small_ws, &kinds));
    wait_until("the small agent registers", || small.machine().is_some()).await;
    let id = submit(&api, needs(&["big"], 0.0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, job) = api.client.get(&format!("/v1/jobs/{id}")).await.unwrap();
    assert_eq!(
        job["state"], "queued",
        "2 GB cannot hold a 5 GB model: {job}"
    );
    let large_ws = workspace_config(&large_dir, 10, &sources);
    let large = CacheAgent::start(api.store.clone(), &config, "large", 1, (large_ws, &kinds));
    let job = wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(ran_on(&api, &id).await, vec![large.machine().unwrap()]);

    // A file larger than its catalog size is cut off: it would overrun the budget.
    let server = ModelServer::start(&[("liar", vec![7u8; 5000])], Duration::ZERO).await;
    let mut config = catalog_config(&["liar"]);
    config.models[0].size_gb = 0;
    let sources = BTreeMap::from([("liar".to_string(), server.source("liar", None))]);
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let dir = temp_dir("liar");
    let ws = workspace_config(&dir, 10, &sources);
    let agent = CacheAgent::start(api.store.clone(), &config, "l1", 1, (ws.clone(), &kinds));
    let body = json!({"kind": "sleep", "requirements": {"models": ["liar"]}, "max_attempts": 1});
    let id = submit(&api, body).await;
    let job = wait_job(&api.client, &id, LIMIT, state_is("dead")).await;
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than its catalog size"),
        "{job}"
    );
    assert_eq!(entries(&ws.cache_dir), Vec::<String>::new());
    let too_large = "drover_agent_model_fetch_failures_total{reason=\"too_large\"}";
    assert_eq!(metric(&agent.metrics(), too_large), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_for_disk_gets_a_scratch_directory_removed_when_its_attempt_ends() {
    let server = ModelServer::start(&[("m", content("m", 1000))], Duration::ZERO).await;
    let sources = BTreeMap::from([("m".to_string(), server.source("m", None))]);
    let config = catalog_config(&["m"]);
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let dir = temp_dir("scratch");
    let ws = workspace_config(&dir, 10, &sources);
    let report = dir.join("report");
    let mut kinds = BTreeMap::new();
    // Writes its scratch path and what it put there (a copy of its model) to "$1".
    let script = "echo \"$DROVER_SCRATCH\" > \"$1\"; cp \"$DROVER_MODEL_M\" \"$DROVER_SCRATCH/m\" \
                  && wc -c < \"$DROVER_SCRATCH/m\" >> \"$1\"";
    kinds.insert(
        "use".to_string(),
        template("/bin/sh", &["-c", script, "sh", "{report}"]),
    );
    kinds.insert(
        "hold".to_string(),
        template("/bin/sh", &["-c", "exec sleep 30"]),
    );
    let _agent = CacheAgent::start(api.store.clone(), &config, "d1", 1, (ws.clone(), &kinds));
    let body = json!({"kind": "use", "payload": {"report": report.to_string_lossy()},
                      "requirements": {"gpus": 1, "models": ["m"], "disk_gb": 2}});
    let id = submit(&api, body).await;
    wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    let written = std::fs::read_to_string(&report).unwrap();
    let mut lines = written.lines();
    let scratch = PathBuf::from(lines.next().unwrap());
    assert!(scratch.starts_with(&ws.scratch_dir), "{written}");
    assert_eq!(lines.next().map(str::trim), Some("1000"), "{written}");
    wait_until("the scratch directory is removed", || !scratch.exists()).await;

    // A stopped attempt's scratch directory goes too.
    let body = json!({"kind": "hold", "requirements": {"gpus": 1, "disk_gb": 1}});
    let id = submit(&api, body).await;
    wait_job(&api.client, &id, LIMIT, state_is("leased")).await;
    wait_until("the attempt has its scratch directory", || {
        !entries(&ws.scratch_dir).is_empty()
    })
    .await;
    let (status, _) = api
        .client
        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .unwrap();
    assert!(status.is_success(), "{status}");
    wait_until("the stopped attempt's scratch directory is removed", || {
        entries(&ws.scratch_dir).is_empty()
    })
    .await;
}

/// Whether this machine lets an unprivileged process mount a tmpfs in a user namespace.
fn user_namespaces_work() -> bool {
    let probe = temp_dir("probe");
    let status = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\""])
        .arg(&*probe)
        .stderr(std::process::Stdio::null())
        .status();
    drop(probe);
    status.is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_really_full_disk_fails_the_attempt_as_disk_full_and_the_retry_runs_elsewhere() {
    if !user_namespaces_work() {
        eprintln!("skipped: `unshare -rm` cannot mount a tmpfs here (no user namespaces)");
        return;
    }
    // An 8 MiB model for a 4 MiB filesystem: the write meets ENOSPC.
    let server = ModelServer::start(&[("m", content("m", 8 << 20))], Duration::ZERO).await;
    let config = catalog_config(&["m"]);
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url, "full", config.clone())
        .await
        .unwrap();
    let api = start_api(store.clone(), config.clone()).await;
    let dir = temp_dir("full");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = dir.join("agent.toml");
    write_agent_config(&file, &config, &format!("{}/models/m", server.base));
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut full = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c"])
        .arg("mount -t tmpfs -o size=4m tmpfs \"$0\" && exec \"$@\"")
        .arg(&state)
        .arg(env!("CARGO_BIN_EXE_drover"))
        .args([
            "agent",
            "--redis",
            &redis.url,
            "--namespace",
            "full",
            "--pool",
            "test",
        ])
        .args([
            "--name",
            "full",
            "--gpus",
            "1",
            "--gpu-mem-gb",
            "16",
            "--disk-gb",
            "1",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let body = json!({"kind": "sleep", "payload": {"seconds": 0},
                      "requirements": {"gpus": 1, "models": ["m"]}, "max_attempts": 3});
    let id = submit(&api, body).await;
    // The full agent fails the attempt, counts the disk as taken, and drains: it leaves.
    let until = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = full.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the full agent did not leave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("the disk is full"), "{log}");
    assert!(log.contains("disk_full"), "{log}");
    // The retry runs on a machine with room.
    let ws = workspace_config(
        &dir.join("roomy"),
        10,
        &BTreeMap::from([("m".to_string(), server.source("m", None))]),
    );
    let roomy = CacheAgent::start(store.clone(), &config, "roomy", 1, (ws, &BTreeMap::new()));
    let job = wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 2, "{job}");
    let machines = ran_on(&api, &id).await;
    assert_eq!(machines.len(), 2, "{machines:?}");
    assert_eq!(machines[1], roomy.machine().unwrap(), "{machines:?}");
    assert_ne!(machines[0], machines[1], "{machines:?}");
    let events = read_events(&api.client, &id, &[("last-event-id", "0-0")]).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "failed")
        .map(|e| &e.data["class"])
        .collect();
    assert_eq!(failed, vec!["disk_full"], "a resource failure, not a crash");
    assert_eq!(server.requests("m"), 2);
}

/// The agent's config file: the fast engine config with its catalog, and `m` at `url`.
fn write_agent_config(path: &Path, config: &EngineConfig, url: &str) {
    #[derive(serde::Serialize)]
    struct File<'a> {
        engine: &'a EngineConfig,
    }
    let mut text = toml::to_string(&File { engine: config }).unwrap();
    text.push_str(&format!("\n[models.m]\nurl = \"{url}\"\n"));
    std::fs::write(path, text).unwrap();
}

fn command(argv: &[&str], sha256: Option<String>) -> ModelSource {
    ModelSource {
        url: None,
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        sha256,
        timeout: None,
    }
}

#[tokio::test]
async fn fetch_commands_write_files_or_directories_and_their_failures_are_told_apart() {
    let sh = |script: &str| command(&["/bin/sh", "-c", script, "sh", "{dest}"], None);
    let sources = BTreeMap::from([
        (
            "file".to_string(),
            ModelSource {
                sha256: Some(sha256(b"weights")),
                ..sh("printf weights > \"$1\"")
            },
        ),
        (
            "tree".to_string(),
            sh("mkdir -p \"$1/sub\" && printf w > \"$1/sub/w\""),
        ),
        (
            "full".to_string(),
            sh("echo 'write: No space left on device' >&2; exit 1"),
        ),
        (
            "nothing".to_string(),
            command(&["/bin/true", "{dest}"], None),
        ),
    ]);
    let config = catalog_config(&["file", "tree", "full", "nothing"]);
    let dir = temp_dir("command");
    let (workspace, _) = Workspace::open(&workspace_config(&dir, 10, &sources), &config).unwrap();
    let paths = fetch_models(&workspace, &config, &["file", "tree"])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&paths["file"]).unwrap(), b"weights");
    assert_eq!(std::fs::read(paths["tree"].join("sub/w")).unwrap(), b"w");
    let full = fetch_models(&workspace, &config, &["full"])
        .await
        .unwrap_err();
    assert!(matches!(full.error, FetchError::DiskFull(_)), "{full}");
    assert_eq!(
        full.outcome(),
        drover_engine::core::Outcome::Failed(drover_engine::core::Failure::DiskFull)
    );
    let nothing = fetch_models(&workspace, &config, &["nothing"])
        .await
        .unwrap_err();
    assert!(matches!(nothing.error, FetchError::Command(_)), "{nothing}");
    // Only the two verified models are left; the failures' partial paths are gone.
    let mut want = vec![
        entry_name("file", &sources["file"]),
        entry_name("tree", &sources["tree"]),
    ];
    want.sort();
    assert_eq!(entries(&dir.join("models")), want);
    let stats = workspace.stats();
    assert_eq!((stats.fetches, stats.cached_models), (4, 2));
    assert_eq!(stats.failures.get("disk_full"), Some(&1));
    assert_eq!(stats.failures.get("command"), Some(&1));
}

/// A 1 GiB model streamed from memory, fetched into the cache (hashed, written, flushed,
/// renamed): prints the rate. A measurement, not a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --test model_cache -- --ignored --nocapture"]
async fn fetch_throughput() {
    static CHUNK: [u8; 1 << 20] = [7; 1 << 20];
    const CHUNKS: usize = 1024;
    let body = || {
        let chunks = (0..CHUNKS).map(|_| Ok::<_, std::convert::Infallible>(&CHUNK[..]));
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    };
    let router = Router::new().route("/models/big", get(move || async move { body() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/models/big", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let source = ModelSource {
        url: Some(url),
        command: None,
        sha256: None,
        timeout: None,
    };
    let sources = BTreeMap::from([("big".to_string(), source)]);
    let config = catalog_config(&["big"]);
    let dir = temp_dir("throughput");
    let (workspace, _) = Workspace::open(&workspace_config(&dir, 10, &sources), &config).unwrap();
    let started = Instant::now();
    let paths = fetch_models(&workspace, &config, &["big"]).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&paths["big"]).unwrap().len();
    assert_eq!(bytes, (CHUNKS << 20) as u64);
    println!(
        "fetched {} MiB in {seconds:.2} s: {:.0} MiB/s",
        bytes >> 20,
        (bytes >> 20) as f64 / seconds
    );
    server.abort();
}
