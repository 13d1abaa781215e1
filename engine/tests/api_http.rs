//! The HTTP API end to end on a `LocalStore`: auth, validation, submit → agent → succeeded,
//! idempotency, cancel, listing, the event stream, health and store outages.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use drover_engine::api::client::ApiClient;
use drover_engine::core::{EngineConfig, MachineId, MachineSpec, Span};
use drover_engine::runtime::LocalStore;
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::journal::{EntryId, JournalEntry};
use drover_engine::store::{Refusal, Reply, Request};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn sleep_job(seconds: f64) -> Value {
    json!({"kind": "sleep", "payload": {"seconds": seconds}})
}

#[tokio::test]
async fn every_endpoint_but_healthz_needs_the_token() {
    let api = local_api().await;
    let anonymous = ApiClient::new(&api.base, None).unwrap();
    let wrong = ApiClient::new(&api.base, Some("nope".into())).unwrap();
    for path in [
        "/v1/stats",
        "/v1/machines",
        "/v1/jobs",
        "/metrics",
        "/v1/jobs/j1",
    ] {
        let (status, body) = anonymous.get(path).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert_eq!(wrong.get(path).await.unwrap().0, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = anonymous.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.client.get("/v1/stats").await.unwrap().0, StatusCode::OK);
    let (status, body) = anonymous.get("/healthz").await.unwrap();
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ok")));
}

/// Posts `body` and returns the status and the field the error names.
async fn refused(client: &ApiClient, body: Vec<u8>) -> (StatusCode, String) {
    let (status, reply) = client
        .json(Method::POST, "/v1/jobs", Some(body), &[])
        .await
        .unwrap();
    let field = reply["error"]["field"]
        .as_str()
        .unwrap_or("<none>")
        .to_string();
    assert!(reply["error"]["message"].is_string(), "{reply}");
    (status, field)
}

fn bytes(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[tokio::test]
async fn invalid_submissions_are_refused_naming_the_field() {
    let api = local_api().await;
    let c = &api.client;
    let bad = StatusCode::BAD_REQUEST;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    assert_eq!(refused(c, b"{not json".to_vec()).await.0, bad);
    let cases = [
        (json!({"kind": "sleep", "colour": "red"}), bad, "colour"),
        (json!({"payload": {}}), bad, "body"),
        (
            json!({"kind": "sleep", "priority": 101}),
            unprocessable,
            "priority",
        ),
        (json!({"kind": "sleep", "priority": 300}), bad, "priority"),
        (
            json!({"kind": "sleep", "requirements": {"gpus": "two"}}),
            bad,
            "requirements.gpus",
        ),
        (
            json!({"kind": "sleep", "requirements": {"gpus": 65}}),
            unprocessable,
            "requirements.gpus",
        ),
        (
            json!({"kind": "sleep", "requirements": {"vram": 1}}),
            bad,
            "requirements.vram",
        ),
        (
            json!({"kind": "sleep", "requirements": {"models": ["nope"]}}),
            unprocessable,
            "requirements.models[0]",
        ),
        (
            json!({"kind": "sleep", "timeout": "3x"}),
            unprocessable,
            "timeout",
        ),
        (json!({"kind": ""}), unprocessable, "kind"),
        (
            json!({"kind": "sleep", "payload": {"seconds": "abc"}}),
            unprocessable,
            "payload.seconds",
        ),
        (
            json!({"kind": "sleep", "payload": {"second": 1}}),
            unprocessable,
            "payload.second",
        ),
        (
            json!({"kind": "sleep", "payload": "x".repeat(70_000)}),
            too_large,
            "payload",
        ),
    ];
    for (body, status, field) in cases {
        let (got_status, got_field) = refused(c, bytes(body.clone())).await;
        assert_eq!((got_status, got_field.as_str()), (status, field), "{body}");
    }
    let huge = bytes(json!({"kind": "sleep", "payload": "x".repeat(2 << 20)}));
    assert_eq!(refused(c, huge).await, (too_large, "body".to_string()));
    let (status, _) = c.get("/v1/jobs/nope").await.unwrap();
    assert_eq!(status, bad);
    let (status, _) = c.get("/v1/jobs?limit=x").await.unwrap();
    assert_eq!(status, bad);
}

#[tokio::test]
async fn a_submitted_job_runs_on_an_agent_and_succeeds() {
    let api = local_api().await;
    let agent = start_agent(api.store.clone(), fast_config(), machine("a1", 1), LIMIT);
    let (status, reply) = api.client.post("/v1/jobs", &sleep_job(0.2)).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["id"].as_str().unwrap();
    let job = wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 1);
    assert!(job["finished_at"].as_u64() >= job["started_at"].as_u64());
    assert_eq!(job["payload"], json!({"seconds": 0.2}));
    let (_, machines) = api.client.get("/v1/machines").await.unwrap();
    assert_eq!(machines["machines"][0]["name"], "a1", "{machines}");
    let (_, stats) = api.client.get("/v1/stats").await.unwrap();
    assert_eq!(stats["totals"]["succeeded"], 1, "{stats}");
    assert!(stats["cost_per_job"].as_f64().unwrap() > 0.0, "{stats}");
    agent.task.abort();
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_id() {
    let api = local_api().await;
    let body = bytes(sleep_job(1.0));
    let header = [("Idempotency-Key", "order-17")];
    let post = || {
        api.client
            .json(Method::POST, "/v1/jobs", Some(body.clone()), &header)
    };
    let (first, a) = post().await.unwrap();
    let (second, b) = post().await.unwrap();
    assert_eq!((first, second), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["id"], b["id"]);
    let mut keyed = sleep_job(1.0);
    keyed["idempotency_key"] = json!("order-17");
    let (third, c) = api.client.post("/v1/jobs", &keyed).await.unwrap();
    assert_eq!((third, &c["id"]), (StatusCode::OK, &a["id"]));
    let conflicting = api
        .client
        .json(
            Method::POST,
            "/v1/jobs",
            Some(bytes(keyed)),
            &[("Idempotency-Key", "other")],
        )
        .await
        .unwrap();
    assert_eq!(conflicting.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cancel_and_list() {
    let api = local_api().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, reply) = api.client.post("/v1/jobs", &sleep_job(1.0)).await.unwrap();
        ids.push(reply["id"].as_str().unwrap().to_string());
    }
    let (status, reply) = api
        .client
        .post(&format!("/v1/jobs/{}/cancel", ids[1]), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["previous"], "queued");
    // Cancelling is idempotent: a repeat finds the job already cancelled.
    let (again, reply) = api
        .client
        .post(&format!("/v1/jobs/{}/cancel", ids[1]), &json!({}))
        .await
        .unwrap();
    assert_eq!(
        (again, &reply["previous"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (missing, _) = api
        .client
        .post("/v1/jobs/j999/cancel", &json!({}))
        .await
        .unwrap();
    assert_eq!(missing, StatusCode::NOT_FOUND);

    let (_, page) = api
        .client
        .get("/v1/jobs?state=queued&limit=2")
        .await
        .unwrap();
    let listed: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[0].as_str(), ids[2].as_str()]);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = api
        .client
        .get(&format!("/v1/jobs?state=queued&limit=10&after={next}"))
        .await
        .unwrap();
    let listed: Vec<&str> = rest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[3].as_str(), ids[4].as_str()]);
    assert!(rest["next"].is_null());
    let (_, cancelled) = api.client.get("/v1/jobs?state=cancelled").await.unwrap();
    assert_eq!(cancelled["jobs"][0]["id"], ids[1].as_str());
}

#[tokio::test]
async fn the_event_stream_follows_the_journal_and_resumes_after_last_event_id() {
    let api = local_api().await;
    let (_, reply) = api.client.post("/v1/jobs", &sleep_job(1.0)).await.unwrap();
    let id = reply["id"].as_str().unwrap().to_string();
    let reader = tokio::spawn({
        let client = api.client.clone();
        let id = id.clone();
        async move { read_events(&client, &id, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = start_agent(api.store.clone(), fast_config(), machine("a1", 1), LIMIT);
    let events = reader.await.unwrap();
    assert_eq!(names(&events), ONE_JOB_STREAM, "{events:?}");
    assert_eq!(events[0].data["state"], "queued");
    assert_eq!(
        events[0].id, None,
        "the opening state is not a journal event"
    );
    let leased = &events[1];
    // The journal names jobs by number; the API by "j<number>".
    let job = format!("j{}", leased.data["job"]);
    assert_eq!(
        (job, leased.data["attempt"].as_u64()),
        (id.clone(), Some(1))
    );
    assert_eq!(events.last().unwrap().data["state"], "succeeded");
    // The events of one store call share its entry's id (succeeded and result here).
    let ids: Vec<EntryId> = events
        .iter()
        .filter_map(|e| e.id.as_deref())
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");

    // Reconnecting after the lease: the job's state, then everything after that id.
    let after = leased.id.clone().unwrap();
    let resumed = read_events(&api.client, &id, &[("last-event-id", &after)]).await;
    assert_eq!(
        names(&resumed),
        ["state", "progress", "succeeded", "result"],
        "{resumed:?}"
    );
    assert_eq!(resumed[0].data["state"], "succeeded");
    let replayed: Vec<&Option<String>> = resumed[1..].iter().map(|e| &e.id).collect();
    let original: Vec<&Option<String>> =
        events[2..events.len() - 1].iter().map(|e| &e.id).collect();
    assert_eq!(replayed, original, "the missed events, with their ids");

    // A finished job without Last-Event-ID: its state, and the stream ends.
    let done = read_events(&api.client, &id, &[]).await;
    assert_eq!(names(&done), ["state"]);
    let bad = api
        .client
        .json(
            Method::GET,
            &format!("/v1/jobs/{id}/events"),
            None,
            &[("last-event-id", "x")],
        )
        .await
        .unwrap();
    assert_eq!(bad.0, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", bad.1);
    agent.task.abort();
}

/// A store that cannot be reached.
#[derive(Clone)]
struct DownStore;

impl SharedStore for DownStore {
    async fn apply(&self, _: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        Err(StoreError::Connection("connection refused".into()))
    }
    async fn wait_wake(&self, _: MachineId, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Connection("connection refused".into()))
    }
    async fn follow_journal(
        &self,
        _: Option<EntryId>,
        _: usize,
        _: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        Err(StoreError::Connection("connection refused".into()))
    }
}

#[tokio::test]
async fn an_unreachable_store_is_503_with_a_json_error() {
    let api = start_api(DownStore, fast_config()).await;
    let (status, body) = api.client.get("/healthz").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = api.client.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("store"),
        "{body}"
    );
    let (status, metrics) = api.client.get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.contains("drover_store_up 0"), "{text}");
    assert!(!text.contains("drover_store_errors_total 0\n"), "{text}");
}

#[tokio::test]
async fn metrics_show_the_queue_and_finished_jobs() {
    let api = local_api().await;
    let agent = start_agent(api.store.clone(), fast_config(), machine("a1", 1), LIMIT);
    let (_, reply) = api.client.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    wait_job(
        &api.client,
        reply["id"].as_str().unwrap(),
        LIMIT,
        state_is("succeeded"),
    )
    .await;
    let mut gpu_job = sleep_job(0.1);
    gpu_job["requirements"] = json!({"gpus": 4});
    api.client.post("/v1/jobs", &gpu_job).await.unwrap();
    // The journal reader follows at once; give it a moment on a loaded machine.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, metrics) = api.client.get("/metrics").await.unwrap();
    let text = metrics.as_str().unwrap();
    for line in [
        "drover_store_up 1",
        "drover_job_wait_seconds_count{class=\"0\"} 1",
        "drover_job_run_seconds_count{class=\"0\"} 1",
        "drover_journal_events_total{event=\"submitted\"} 2",
        "drover_journal_events_total{event=\"succeeded\"} 1",
        "drover_jobs_finished_total{state=\"succeeded\"} 1",
        "drover_jobs{state=\"queued\"} 1",
        "drover_machines{state=\"ready\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(text.contains("drover_queue_depth{class="), "{text}");
    assert!(
        text.contains("drover_http_requests_total{route=\"/v1/jobs\",code=\"201\"}"),
        "{text}"
    );
    // A second replica started later reads the same journal: the same figures.
    let replica = start_api(api.store.clone(), fast_config()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, metrics) = replica.client.get("/metrics").await.unwrap();
    let from_journal = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("drover_job_") && l.contains("_seconds"))
            .map(str::to_string)
            .collect()
    };
    let ours = from_journal(text);
    assert!(!ours.is_empty());
    assert_eq!(from_journal(metrics.as_str().unwrap()), ours);
    agent.task.abort();
}

#[tokio::test]
async fn a_submission_no_recent_machine_could_run_is_accepted_with_a_warning() {
    let api = local_api().await;
    let (status, reply) = api.client.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        reply["warnings"],
        json!(["no machine seen in the last 10m: the job waits for one"])
    );
    let agent = start_agent(api.store.clone(), fast_config(), machine("w1", 1), LIMIT);
    let until = std::time::Instant::now() + LIMIT;
    let mut job = sleep_job(0.1);
    job["requirements"] = json!({"gpus": 8});
    loop {
        let (status, reply) = api.client.post("/v1/jobs", &job).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "accepted all the same");
        let warning = reply["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if warning.contains("the largest has 1") {
            assert_eq!(
                warning,
                "no machine seen in the last 10m has 8 GPUs; the largest has 1"
            );
            break;
        }
        assert!(std::time::Instant::now() < until, "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, reply) = api.client.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    assert_eq!(reply["warnings"], json!([]), "{reply}");
    agent.task.abort();
}

/// A mixed fleet: jobs reach only machines that run their kind; a kind no machine runs ends
/// unworkable saying so; a job's attempts tell where and when it ran, with RFC 3339 times.
#[tokio::test]
async fn jobs_go_only_where_their_kind_runs_and_show_their_attempts() {
    let config = EngineConfig {
        unworkable_after: Span::from_secs(1),
        ..fast_config()
    };
    let api = start_api(LocalStore::new(config.clone()), config.clone()).await;
    let spec = MachineSpec {
        kinds: vec!["sleep".into()],
        ..machine("sleeper", 1)
    };
    let agent = start_agent(api.store.clone(), config, spec, LIMIT);
    let registered = |machines: &Value| machines["machines"][0]["kinds"] == json!(["sleep"]);
    let until = std::time::Instant::now() + LIMIT;
    while !registered(&api.client.get("/v1/machines").await.unwrap().1) {
        assert!(
            std::time::Instant::now() < until,
            "the agent never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut render = sleep_job(0.1);
    render["kind"] = json!("render");
    let (_, reply) = api.client.post("/v1/jobs", &render).await.unwrap();
    assert_eq!(
        reply["warnings"],
        json!(["no machine seen in the last 1s runs jobs of kind 'render'"]),
        "the job is accepted, with the reason it may wait"
    );
    let render = reply["id"].as_str().unwrap().to_string();
    let (_, reply) = api.client.post("/v1/jobs", &sleep_job(0.1)).await.unwrap();
    let sleep = reply["id"].as_str().unwrap().to_string();

    let job = wait_job(&api.client, &sleep, LIMIT, |job| {
        job["state"] == "succeeded" && job["attempts"][0]["outcome"] == "succeeded"
    })
    .await;
    let attempt = &job["attempts"][0];
    assert_eq!(attempt["machine_name"], "sleeper", "{job}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job}");
    assert!(attempt["ended_at"].as_u64() >= attempt["started_at"].as_u64());
    let utc = job["submitted_at_utc"].as_str().unwrap();
    assert!(
        utc.len() == 24 && utc.as_bytes()[10] == b'T' && utc.ends_with('Z'),
        "{utc}"
    );

    let job = wait_job(&api.client, &render, LIMIT, state_is("unworkable")).await;
    assert_eq!(job["attempt"], 0, "never leased: {job}");
    assert_eq!(job["attempts"], json!([]));
    assert_eq!(job["error"]["class"], "unworkable");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.ends_with("runs jobs of kind 'render'"), "{message}");
    agent.task.abort();
}
