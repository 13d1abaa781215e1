//! Simulator throughput on the churn benchmark (1,000 eight-GPU machines with exponential
//! lifetimes, Poisson arrivals), beside two baselines measured in the same run over the same
//! number of jobs: a bare binary-heap M/M/c loop of the fleet's size (the floor any
//! discrete-event simulation of these jobs can reach here), and the jobs pushed straight
//! through MemStore (submit, claim, complete) with no world around it. The ratios say what the
//! whole simulation, and what the world around the store, cost. Run:
//! `cargo bench -p drover-sim --bench sim_throughput`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use drover_engine::core::{EngineConfig, JobSpec, MachineSpec, Offer, Requirements, Span, Time};
use drover_engine::store::{MemStore, Reply, Request};
use drover_sim::baseline::Mmc;
use drover_sim::run::run;
use drover_sim::scenario::Scenario;
use std::path::PathBuf;
use std::sync::Arc;

/// churn-1k shortened to about 100,000 jobs so that a sample takes well under a second.
fn churn_scenario() -> Arc<Scenario> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/churn-1k.toml");
    let text = std::fs::read_to_string(&file).expect("churn-1k.toml is bundled");
    let text = text
        .replace("duration = \"2500s\"", "duration = \"250s\"")
        .replace("warmup = \"100s\"", "warmup = \"10s\"");
    Arc::new(Scenario::parse(&text, "churn-1k-short.toml").expect("valid"))
}

fn store_cycle(jobs: u64) -> u64 {
    // A machine that never goes silent, and finished jobs forgotten after a second, as the
    // churn scenario's store forgets them after its retention.
    let config = EngineConfig {
        machine_ttl: Span::from_secs(86_400),
        retention: Span::from_secs(1),
        ..EngineConfig::default()
    };
    let mut store = MemStore::new(config);
    let spec = MachineSpec {
        name: "m".into(),
        pool: "p".into(),
        gpus: 8,
        gpu_model: "A100".into(),
        gpu_mem_gb: 80,
        disk_gb: 1000,
        labels: Default::default(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    };
    let Ok(Reply::Registered { machine }) = store.apply(Time(0), Request::Register(Box::new(spec)))
    else {
        panic!("register")
    };
    let req = Arc::new(Requirements {
        gpus: 1,
        gpu_mem_gb: 16,
        ..Default::default()
    });
    let offer = Offer {
        free_gpus: 1,
        gpu_mem_gb: 80,
        free_disk_gb: 1000,
        cached: Default::default(),
    };
    let mut done = 0;
    for i in 0..jobs {
        let now = Time(i * 1000);
        store
            .apply(
                now,
                Request::Submit(Box::new(JobSpec::new("sim", req.clone()))),
            )
            .unwrap();
        let Ok(Reply::Claimed { grants, .. }) = store.apply(
            now,
            Request::Claim {
                machine,
                seq: i + 1,
                offer,
            },
        ) else {
            panic!("claim")
        };
        for grant in grants {
            let complete = Request::Complete {
                job: grant.job,
                token: grant.token,
                outcome: drover_engine::core::Outcome::Succeeded,
                result: None,
            };
            store.apply(now, complete).unwrap();
            done += 1;
        }
        if i % 10_000 == 0 {
            store.apply(now, Request::Reap { max: 100_000 }).unwrap();
        }
    }
    done
}

fn throughput(c: &mut Criterion) {
    let scenario = churn_scenario();
    let jobs = run(scenario.clone(), scenario.seed, None, |_| {}).jobs_simulated;
    let mut group = c.benchmark_group("churn");
    group.sample_size(10);
    group.throughput(Throughput::Elements(jobs));
    let queue = Mmc::like(&scenario, jobs);
    group.bench_function("baseline: bare binary-heap M/M/c loop", |b| {
        b.iter(|| queue.run(scenario.seed))
    });
    group.bench_function("baseline: memstore submit-claim-complete", |b| {
        b.iter_batched(|| jobs, store_cycle, BatchSize::PerIteration)
    });
    group.bench_function("simulated fleet (1,000 machines, churn)", |b| {
        b.iter(|| run(scenario.clone(), scenario.seed, None, |_| {}))
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);

// The same allocator as the `drover-sim` binary, so that the bench measures what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
