//! The HTTP API end to end on a `LocalStore`: auth, validation, submit → agent → succeeded,
//! idempotency, cancel, listing, the event stream, health and store outages.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use drover_engine::api::client::ApiClient;
use drover_engine::core::MachineId;
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::{Refusal, Reply, Request};
use http_body_util::BodyExt;
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

/// Reads server-sent events until the stream ends; returns (event, state) pairs.
async fn read_events(client: &ApiClient, id: &str) -> Vec<(String, String)> {
    let path = format!("/v1/jobs/{id}/events");
    let response = client.send(Method::GET, &path, None, &[]).await.unwrap();
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
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the stream ends at a terminal state");
    parse_events(&text)
}

fn parse_events(text: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
            let job: Value = serde_json::from_str(&data).unwrap_or_default();
            events.push((event, job["state"].as_str().unwrap_or("").to_string()));
        }
    }
    events
}

#[tokio::test]
async fn the_event_stream_shows_queued_leased_succeeded() {
    let api = local_api().await;
    let (_, reply) = api.client.post("/v1/jobs", &sleep_job(1.0)).await.unwrap();
    let id = reply["id"].as_str().unwrap().to_string();
    let reader = tokio::spawn({
        let client = api.client.clone();
        let id = id.clone();
        async move { read_events(&client, &id).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = start_agent(api.store.clone(), fast_config(), machine("a1", 1), LIMIT);
    let events = reader.await.unwrap();
    let states: Vec<&str> = events
        .iter()
        .filter(|(event, _)| event == "state")
        .map(|(_, state)| state.as_str())
        .collect();
    assert_eq!(states, ["queued", "leased", "succeeded"], "{events:?}");
    assert!(events.iter().any(|(e, _)| e == "progress"), "{events:?}");
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
    // The observer runs every 100 ms in tests.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, metrics) = api.client.get("/metrics").await.unwrap();
    let text = metrics.as_str().unwrap();
    for line in [
        "drover_store_up 1",
        "drover_job_wait_seconds_count 1",
        "drover_job_run_seconds_count 1",
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
    agent.task.abort();
}
