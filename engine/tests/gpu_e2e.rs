//! End to end on a real GPU: the API and store in this process, an agent whose `gpu` executor
//! runs on the GPUs the CUDA driver finds. Ignored without a GPU; on a GPU machine:
//! `cargo test -p drover-engine --release --test gpu_e2e -- --ignored`.

mod api_support;

use api_support::*;
use drover_engine::agent::Agent;
use drover_engine::core::{MachineSpec, ModelSet, Time};
use drover_engine::executor::{Executors, GpuExecutor};
use drover_engine::runtime::{AgentDriver, DriverOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs an NVIDIA GPU"]
async fn gpu_jobs_run_on_the_gpu_and_oom_retries_only_where_they_fit() {
    let gpus = drover_engine::gpu::discover().expect("discovery");
    assert!(!gpus.is_empty(), "a GPU machine");
    let api = local_api().await;
    let config = Arc::new(fast_config());
    let spec = MachineSpec {
        name: "gpu-host".into(),
        pool: "h200".into(),
        gpus: gpus.len() as u32,
        gpu_model: gpus[0].name.clone(),
        gpu_mem_gb: gpus[0].total_mem_gb.floor() as u32,
        disk_gb: 100,
        labels: Default::default(),
        cost_per_hour: 3.5,
        kinds: Vec::new(),
    };
    let agent = Agent::new(config.clone(), spec.clone(), ModelSet::EMPTY, 1, Time::ZERO);
    let executors = Executors::default().with(
        "gpu",
        GpuExecutor::new(gpus.iter().map(|g| g.ordinal).collect()),
    );
    let driver = AgentDriver::new(
        api.store.clone(),
        agent,
        config,
        executors,
        DriverOptions::default(),
    );
    tokio::spawn(driver.run(std::future::pending()));

    let body = json!({"kind": "gpu", "payload": {"seconds": 2.0, "mem_gb": 8},
                      "requirements": {"gpus": 1, "gpu_mem_gb": 8, "gpu_models": [spec.gpu_model]}});
    let (status, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    assert!(status.is_success(), "{status}: {reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    let job = wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    println!("{job}");
    assert_eq!(job["attempt"], 1);

    // Declares 16 GB but needs more than the GPU has: out of memory, then its requirement
    // rises to what it needed and no machine here can take the retry.
    let too_big = (spec.gpu_mem_gb * 2).to_string();
    let body = json!({"kind": "gpu", "payload": {"seconds": 1.0, "mem_gb": too_big.parse::<u32>().unwrap()},
                      "requirements": {"gpus": 1, "gpu_mem_gb": 16}, "max_attempts": 3});
    let (status, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    assert!(status.is_success(), "{status}: {reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    let job = wait_job(&api.client, &id, LIMIT, |j| {
        j["attempt"] == 1 && j["state"] != "leased"
    })
    .await;
    println!("{job}");
    assert!(job["error"]["class"] == "oom", "{job}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, job) = api.client.get(&format!("/v1/jobs/{id}")).await.unwrap();
    assert_eq!(
        job["attempt"], 1,
        "the retry does not come back to a GPU it cannot fit: {job}"
    );
    assert!(
        job["state"] == "queued" || job["state"] == "delayed",
        "{job}"
    );
}
