//! The API on a real redis-server reads the journal: its event streams (with Last-Event-ID)
//! and its histograms come from the Redis Stream, and two replicas show the same figures.
//! Needs `redis-server` on PATH.

mod api_support;

use api_support::*;
use drover_engine::redis::RedisStore;
use drover_engine::testing::RedisServer;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_histograms_come_from_the_redis_journal() {
    let server = RedisServer::start();
    let config = fast_config();
    let store = RedisStore::connect(&server.url, "api", config.clone())
        .await
        .expect("connect");
    let api = start_api(store.clone(), config.clone()).await;
    let mut ids = Vec::new();
    for seconds in [0.2, 0.3, 0.4] {
        let job = json!({"kind": "sleep", "payload": {"seconds": seconds}});
        let (_, reply) = api.client.post("/v1/jobs", &job).await.unwrap();
        ids.push(reply["id"].as_str().unwrap().to_string());
    }
    let reader = tokio::spawn({
        let client = api.client.clone();
        let id = ids[2].clone();
        async move { read_events(&client, &id, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let agent = start_agent(store.clone(), config.clone(), machine("r1", 1), LIMIT);
    let events = reader.await.unwrap();
    assert_eq!(names(&events), ONE_JOB_STREAM, "{events:?}");
    for id in &ids {
        wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    }

    // Resuming after the lease replays the rest from the stream.
    let after = events[1].id.clone().expect("journal events carry their id");
    let resumed = read_events(&api.client, &ids[2], &[("last-event-id", &after)]).await;
    assert_eq!(
        names(&resumed),
        ["state", "progress", "succeeded", "result"]
    );

    // Histograms: the three jobs' waits and runs, the same on a replica started afterwards.
    let replica = start_api(store.clone(), config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let figures = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("drover_job_") && l.contains("_seconds_"))
            .map(str::to_string)
            .collect()
    };
    let (_, ours) = api.client.get("/metrics").await.unwrap();
    let (_, theirs) = replica.client.get("/metrics").await.unwrap();
    let ours = figures(ours.as_str().unwrap());
    assert!(
        ours.contains(&"drover_job_wait_seconds_count{class=\"0\"} 3".to_string()),
        "{ours:#?}"
    );
    assert!(
        ours.contains(&"drover_job_run_seconds_count{class=\"0\"} 3".to_string()),
        "{ours:#?}"
    );
    let run_sum: f64 = ours
        .iter()
        .find_map(|l| l.strip_prefix("drover_job_run_seconds_sum{class=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .expect("a run sum");
    assert!(
        run_sum >= 0.9,
        "three sleeps of 0.2+0.3+0.4 s ran {run_sum} s"
    );
    assert_eq!(figures(theirs.as_str().unwrap()), ours);
    agent.task.abort();
}
