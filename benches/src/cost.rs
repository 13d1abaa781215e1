//! `drover-bench cost`: where Redis spends its time per job, read from Redis's own command
//! statistics (`INFO commandstats`, microseconds inside FCALL): submissions one per call,
//! claims granting 16 per call, completions 16 per batch.

use anyhow::{Context, Result};
use drover_engine::core::{EngineConfig, JobSpec, MachineSpec, Offer, Outcome, Requirements, Span};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::SharedStore;
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use serde_json::json;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 4000)]
    jobs: u64,
}

/// Microseconds Redis spent in FCALL since the last reset.
fn fcall_usec(con: &mut redis::Connection) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con)?;
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_fcall:"))
        .unwrap_or("");
    Ok(line
        .split(',')
        .find_map(|kv| kv.strip_prefix("usec="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn reset(con: &mut redis::Connection) -> Result<()> {
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(con)?;
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    let server = RedisServer::start_with(&["--appendonly", "no"]);
    let mut stats = redis::Client::open(server.url.as_str())?.get_connection()?;
    let config = EngineConfig {
        machine_ttl: Span::from_secs(86_400),
        ..EngineConfig::default()
    };
    let store = RedisStore::connect(&server.url, "cost", config)
        .await
        .context("connecting")?;
    let spec = MachineSpec {
        name: "m".into(),
        pool: "p".into(),
        gpus: 16,
        gpu_model: "A".into(),
        gpu_mem_gb: 80,
        disk_gb: 100,
        labels: Default::default(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    };
    let Ok(Reply::Registered { machine }) = store.apply(Request::Register(Box::new(spec))).await?
    else {
        anyhow::bail!("register failed")
    };
    let req = Arc::new(Requirements {
        gpus: 1,
        ..Default::default()
    });
    reset(&mut stats)?;
    for _ in 0..args.jobs {
        store
            .apply(Request::Submit(Box::new(JobSpec::new("noop", req.clone()))))
            .await??;
    }
    let submit_us = fcall_usec(&mut stats)?;
    let offer = Offer {
        free_gpus: 16,
        gpu_mem_gb: 80,
        free_disk_gb: 100,
        cached: Default::default(),
    };
    let (mut claim_us, mut complete_us, mut done, mut seq) = (0u64, 0u64, 0u64, 0u64);
    while done < args.jobs {
        seq += 1;
        reset(&mut stats)?;
        let Reply::Claimed { grants, .. } = store
            .apply(Request::Claim {
                machine,
                seq,
                offer,
            })
            .await??
        else {
            anyhow::bail!("claim failed")
        };
        claim_us += fcall_usec(&mut stats)?;
        done += grants.len() as u64;
        let outcomes = grants
            .iter()
            .map(|g| Request::Complete {
                job: g.job,
                token: g.token,
                outcome: Outcome::Succeeded,
                result: None,
            })
            .collect();
        reset(&mut stats)?;
        store.apply(Request::Batch(outcomes)).await??;
        complete_us += fcall_usec(&mut stats)?;
    }
    let per_job = |us: u64| us as f64 / args.jobs as f64;
    let report = json!({
        "jobs": args.jobs,
        "submit_us_per_job": per_job(submit_us),
        "claim_us_per_job": per_job(claim_us),
        "complete_us_per_job": per_job(complete_us),
        "redis_bound_jobs_per_sec": 1e6 / (per_job(claim_us) + per_job(complete_us)),
    });
    println!("{report}");
    Ok(())
}
