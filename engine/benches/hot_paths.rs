//! The engine's hot paths, in memory: choosing among class heads, and a whole claim through
//! MemStore, for a store holding few classes and one holding many. Compare each pair in the
//! same run: the ratio says what a larger class count costs a claim.
//! Run: `cargo bench -p drover-engine --bench hot_paths`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use drover_engine::core::labels::LabelValue;
use drover_engine::core::policy::{score, Head};
use drover_engine::core::{EngineConfig, JobSpec, MachineSpec, Offer, Requirements, Span, Time};
use drover_engine::store::{MemStore, Reply, Request};
use std::hint::black_box;
use std::sync::Arc;

fn machine() -> MachineSpec {
    MachineSpec {
        name: "bench".into(),
        pool: "p".into(),
        gpus: 8,
        gpu_model: "A100".into(),
        gpu_mem_gb: 80,
        disk_gb: 2000,
        labels: [("region".to_string(), LabelValue::Text("eu".into()))]
            .into_iter()
            .collect(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    }
}

/// `classes` distinct requirement sets, every other one unfit for the machine (wrong region).
fn requirements(classes: u32) -> Vec<Arc<Requirements>> {
    (0..classes)
        .map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            Arc::new(Requirements {
                gpus: 1 + i % 2,
                gpu_mem_gb: 8 + i,
                labels: [("region".to_string(), LabelValue::Text(region.into()))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
        })
        .collect()
}

/// A store with `per_class` queued jobs in each of `classes` classes and one registered machine.
fn loaded_store(classes: u32, per_class: u32) -> (MemStore, drover_engine::core::MachineId) {
    let config = EngineConfig {
        machine_ttl: Span::from_secs(86_400),
        ..EngineConfig::default()
    };
    let mut store = MemStore::new(config);
    let Ok(Reply::Registered { machine }) =
        store.apply(Time(1), Request::Register(Box::new(machine())))
    else {
        panic!("register")
    };
    for req in requirements(classes) {
        for _ in 0..per_class {
            store
                .apply(
                    Time(1),
                    Request::Submit(Box::new(JobSpec::new("bench", req.clone()))),
                )
                .unwrap();
        }
    }
    (store, machine)
}

fn claims(c: &mut Criterion) {
    let offer = Offer {
        free_gpus: 1,
        gpu_mem_gb: 80,
        free_disk_gb: 2000,
        cached: Default::default(),
    };
    let mut group = c.benchmark_group("claim through MemStore");
    for classes in [4u32, 256] {
        group.bench_function(format!("{classes} classes"), |b| {
            b.iter_batched(
                || loaded_store(classes, 4),
                |(mut store, machine)| {
                    black_box(
                        store
                            .apply(
                                Time(2),
                                Request::Claim {
                                    machine,
                                    seq: 1,
                                    offer,
                                },
                            )
                            .unwrap(),
                    )
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn selection(c: &mut Criterion) {
    let config = EngineConfig::default();
    let offer = Offer {
        free_gpus: 8,
        gpu_mem_gb: 80,
        free_disk_gb: 2000,
        cached: Default::default(),
    };
    let reqs = requirements(256);
    c.bench_function("score 256 class heads", |b| {
        b.iter(|| {
            let mut best = (i64::MIN, u64::MAX);
            for (i, req) in reqs.iter().enumerate() {
                let head = Head {
                    priority: 50,
                    waited: Span::from_secs(i as u64),
                    seq: i as u64,
                };
                let rank = (score(head, req, &offer, &config), i as u64);
                if drover_engine::core::policy::better(rank, best) {
                    best = rank;
                }
            }
            black_box(best)
        })
    });
}

/// One claim round trip through RedisStore on a private redis-server (AOF off), with the job
/// completed afterwards outside the timed part so the machine's lease list stays short.
fn redis_claims(c: &mut Criterion) {
    use drover_engine::redis::RedisStore;
    use drover_engine::runtime::SharedStore;
    use drover_engine::testing::redis::RedisServer;
    let server = RedisServer::start_with(&["--appendonly", "no"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = EngineConfig {
        machine_ttl: Span::from_secs(86_400),
        ..EngineConfig::default()
    };
    let store = rt
        .block_on(RedisStore::connect(&server.url, "bench", config))
        .expect("connect");
    let Ok(Ok(Reply::Registered { machine })) =
        rt.block_on(store.apply(Request::Register(Box::new(machine()))))
    else {
        panic!("register")
    };
    let offer = Offer {
        free_gpus: 1,
        gpu_mem_gb: 80,
        free_disk_gb: 2000,
        cached: Default::default(),
    };
    let req = requirements(4).remove(0);
    let mut seq = 0;
    c.bench_function("claim through RedisStore (one round trip)", |b| {
        b.iter_custom(|iters| {
            let mut timed = std::time::Duration::ZERO;
            for _ in 0..iters {
                let submit = Request::Submit(Box::new(JobSpec::new("bench", req.clone())));
                rt.block_on(store.apply(submit)).unwrap().unwrap();
                seq += 1;
                let started = std::time::Instant::now();
                let reply = rt
                    .block_on(store.apply(Request::Claim {
                        machine,
                        seq,
                        offer,
                    }))
                    .unwrap()
                    .unwrap();
                timed += started.elapsed();
                let Reply::Claimed { grants, .. } = reply else {
                    panic!("{reply:?}")
                };
                for g in grants {
                    let done = Request::Complete {
                        job: g.job,
                        token: g.token,
                        outcome: drover_engine::core::Outcome::Succeeded,
                        result: None,
                    };
                    rt.block_on(store.apply(done)).unwrap().unwrap();
                }
            }
            timed
        })
    });
}

criterion_group!(benches, claims, selection, redis_claims);
criterion_main!(benches);
