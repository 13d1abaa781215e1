//! Shared by the API and agent tests: an API server on a `LocalStore` and in-process agents,
//! all on short timers so that every test ends in seconds.
#![allow(dead_code)]

// A path, not a bare `mod`: this file is also a test crate of its own (cargo compiles every
// tests/*.rs), where a bare `mod promql` would look for tests/promql.rs.
#[path = "api_support/promql.rs"]
pub mod promql;

use axum::http::{Method, StatusCode};
use drover_engine::agent::Agent;
use drover_engine::api::client::{ApiClient, ClientOptions};
use drover_engine::api::{self, ApiOptions, ApiState};
use drover_engine::core::{EngineConfig, MachineSpec, ModelSet, Span, Time};
use drover_engine::executor::Executors;
use drover_engine::runtime::{
    AgentDriver, AgentSnapshot, DriverExit, DriverOptions, LocalStore, Metered, SharedStore,
};
use drover_engine::testing::TlsFiles;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "s3cret";

/// Timers short enough for tests, long enough for a loaded 2-core CI machine.
pub fn fast_config() -> EngineConfig {
    let config = EngineConfig {
        lease_ttl: Span::from_secs(2),
        heartbeat: Span::from_millis(200),
        machine_ttl: Span::from_secs(2),
        reaper_period: Span::from_millis(100),
        request_timeout: Span::from_secs(1),
        retry_base: Span::from_millis(50),
        retry_max: Span::from_millis(200),
        idle_recheck: Span::from_secs(1),
        backoff_base: Span::from_millis(100),
        backoff_max: Span::from_millis(100),
        ..EngineConfig::default()
    };
    config.validate().expect("valid test config");
    config
}

pub struct TestApi<S: SharedStore> {
    pub base: String,
    pub client: ApiClient,
    pub store: S,
    pub state: ApiState<S>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl<S: SharedStore> Drop for TestApi<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub async fn start_api<S: SharedStore>(store: S, config: EngineConfig) -> TestApi<S> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = ApiClient::new(&base, Some(TOKEN.into())).unwrap();
    launch(store, config, listener, base, client)
}

/// The API over HTTPS with `files`' server certificate; its client trusts `files`' CA.
pub async fn start_tls_api<S: SharedStore>(
    store: S,
    config: EngineConfig,
    files: &TlsFiles,
) -> TestApi<S> {
    let tls = api::tls::server_config(&files.cert, &files.key).expect("test certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let options = ClientOptions {
        ca_cert: Some(files.ca_cert.clone()),
    };
    let client = ApiClient::with_options(&base, Some(TOKEN.into()), &options).unwrap();
    let listener = api::tls::TlsListener::new(listener, tls).unwrap();
    launch(store, config, listener, base, client)
}

fn launch<S: SharedStore, L>(
    store: S,
    config: EngineConfig,
    listener: L,
    base: String,
    client: ApiClient,
) -> TestApi<S>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let options = ApiOptions {
        token: Some(TOKEN.into()),
        ..ApiOptions::default()
    };
    let state = ApiState::new(Metered::new(store.clone()), Arc::new(config), options);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(api::serve(listener, state.clone(), true, shutdown));
    TestApi {
        base,
        client,
        store,
        state,
        stop: Some(stop),
        task,
    }
}

pub async fn local_api() -> TestApi<LocalStore> {
    let config = fast_config();
    start_api(LocalStore::new(config.clone()), config).await
}

pub struct TestAgent {
    pub snapshot: watch::Receiver<AgentSnapshot>,
    pub drain: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<DriverExit>,
}

pub fn machine(name: &str, gpus: u32) -> MachineSpec {
    MachineSpec {
        name: name.into(),
        pool: "test".into(),
        gpus,
        gpu_model: "T4".into(),
        gpu_mem_gb: 16,
        disk_gb: 100,
        labels: Default::default(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    }
}

pub fn start_agent<S: SharedStore>(
    store: S,
    config: EngineConfig,
    spec: MachineSpec,
    drain_grace: Duration,
) -> TestAgent {
    let config = Arc::new(config);
    let agent = Agent::new(config.clone(), spec, ModelSet::EMPTY, 7, Time::ZERO);
    let executors = Executors::from_templates(&Default::default());
    let options = DriverOptions { drain_grace };
    let driver = AgentDriver::new(store, agent, config, executors, options);
    let snapshot = driver.snapshot();
    let (drain, drained) = oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async move {
        let _ = drained.await;
    }));
    TestAgent {
        snapshot,
        drain: Some(drain),
        task,
    }
}

/// Polls `GET /v1/jobs/{id}` until `done` holds of the job, or panics after `limit`.
pub async fn wait_job(
    client: &ApiClient,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + limit;
    loop {
        let (status, job) = client.get(&format!("/v1/jobs/{id}")).await.unwrap();
        assert!(status.is_success(), "{status}: {job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < until, "job never got there: {job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |job| job["state"] == state
}

/// The event stream of one sleep job watched from before it starts to its end (a run of
/// progress events counts once: `names`).
pub const ONE_JOB_STREAM: [&str; 6] = [
    "state",
    "leased",
    "progress",
    "succeeded",
    "result",
    "state",
];

/// One server-sent event: its type, id (if any) and data as JSON.
#[derive(Debug)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// Reads server-sent events until the stream ends (`headers` such as Last-Event-ID).
pub async fn read_events(client: &ApiClient, id: &str, headers: &[(&str, &str)]) -> Vec<Sse> {
    let path = format!("/v1/jobs/{id}/events");
    let response = client
        .send(Method::GET, &path, None, headers)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends at a terminal state");
    parse_events(&text)
}

pub fn parse_events(text: &str) -> Vec<Sse> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
            let data = serde_json::from_str(&data).unwrap_or_default();
            let id = field("id:");
            events.push(Sse { event, id, data });
        }
    }
    events
}

pub fn names(events: &[Sse]) -> Vec<&str> {
    let mut names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    names.dedup(); // a run of progress events counts once
    names
}
