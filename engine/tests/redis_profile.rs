//! Where Redis spends its time per job: claims (16 grants per call) and completes (16 per batch),
//! read from Redis's own command statistics. A measurement, not a check: ignored by default;
//! `cargo test --release -p drover-engine --test redis_profile -- --ignored --nocapture`.

use drover_engine::core::{EngineConfig, JobSpec, MachineSpec, Offer, Outcome, Requirements, Span};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::SharedStore;
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use std::sync::Arc;

fn evalsha_usec(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("");
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let calls = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|c| c.strip_prefix("calls="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (calls, field("usec="))
}

fn reset(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .unwrap();
}

#[tokio::test]
#[ignore = "a measurement"]
async fn profile_redis_cost_per_job() {
    let server = RedisServer::start_with(&["--appendonly", "no"]);
    let config = EngineConfig {
        machine_ttl: Span::from_secs(86_400),
        lease_ttl: Span::from_secs(3600),
        heartbeat: Span::from_secs(60),
        ..EngineConfig::default()
    };
    let store = RedisStore::connect(&server.url, "prof", config)
        .await
        .unwrap();
    let spec = MachineSpec {
        name: "m".into(),
        pool: "p".into(),
        gpus: 16,
        gpu_model: "A".into(),
        gpu_mem_gb: 80,
        disk_gb: 100,
        labels: Default::default(),
        cost_per_hour: 1.0,
    };
    let Ok(Reply::Registered { machine }) = store
        .apply(Request::Register(Box::new(spec)))
        .await
        .unwrap()
    else {
        panic!()
    };
    let req = Arc::new(Requirements {
        gpus: 1,
        ..Default::default()
    });
    let n = 4000u64;
    reset(&server.url);
    for _ in 0..n {
        store
            .apply(Request::Submit(Box::new(JobSpec::new("noop", req.clone()))))
            .await
            .unwrap()
            .unwrap();
    }
    let (calls, usec) = evalsha_usec(&server.url);
    println!(
        "submit: {calls} calls, {:.1} us/job",
        usec as f64 / n as f64
    );
    let offer = Offer {
        free_gpus: 16,
        gpu_mem_gb: 80,
        free_disk_gb: 100,
        cached: Default::default(),
    };
    let mut seq = 0;
    let (mut claim_us, mut complete_us, mut jobs) = (0u64, 0u64, 0u64);
    while jobs < n {
        seq += 1;
        reset(&server.url);
        let Reply::Claimed { grants, .. } = store
            .apply(Request::Claim {
                machine,
                seq,
                offer,
            })
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        claim_us += evalsha_usec(&server.url).1;
        jobs += grants.len() as u64;
        let batch = grants
            .iter()
            .map(|g| Request::Complete {
                job: g.job,
                token: g.token,
                outcome: Outcome::Succeeded,
            })
            .collect();
        reset(&server.url);
        store.apply(Request::Batch(batch)).await.unwrap().unwrap();
        complete_us += evalsha_usec(&server.url).1;
    }
    println!(
        "claim (16 per call): {:.1} us/job; complete (16 per batch): {:.1} us/job",
        claim_us as f64 / n as f64,
        complete_us as f64 / n as f64
    );
}
