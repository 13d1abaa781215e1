//! The store's Redis Function library: loaded again when a server has lost it, and its caches
//! of classes never outliving the namespace's data.

#[path = "support/cli.rs"]
mod cli;
use cli::raw;

use drover_engine::core::EngineConfig;
use drover_engine::redis::{RedisStore, DATA_LAYOUT};
use drover_engine::runtime::SharedStore;
use drover_engine::runtime::StoreError;
use drover_engine::store::conformance::{job, machine, offer};
use drover_engine::store::{Grant, Refusal, Reply, Request};
use drover_engine::testing::redis::RedisServer;

async fn submit(store: &RedisStore, gpus: u32) {
    match store.apply(Request::Submit(Box::new(job(gpus, 0)))).await {
        Ok(Ok(Reply::Submitted { .. })) => {}
        other => panic!("submit: {other:?}"),
    }
}

/// What a fresh machine with `gpus` GPUs is granted by its first claim.
async fn first_claim(store: &RedisStore, gpus: u32) -> Vec<Grant> {
    let Ok(Ok(Reply::Registered { machine })) = store
        .apply(Request::Register(Box::new(machine("m", gpus, 80))))
        .await
    else {
        panic!("register")
    };
    let claim = Request::Claim {
        machine,
        seq: 1,
        offer: offer(gpus, 80),
    };
    match store.apply(claim).await {
        Ok(Ok(Reply::Claimed { grants, .. })) => grants,
        other => panic!("claim: {other:?}"),
    }
}

/// The GPUs each job granted to a fresh machine with `gpus` GPUs asks for.
async fn claim_gpus(store: &RedisStore, gpus: u32) -> Vec<u32> {
    let grants = first_claim(store, gpus).await;
    grants.iter().map(|g| g.spec.requirements.gpus).collect()
}

#[tokio::test]
async fn a_server_that_lost_the_library_gets_it_again() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "lib", EngineConfig::default())
        .await
        .expect("connect");
    submit(&store, 1).await;
    raw(&server, &["FUNCTION", "FLUSH"]);
    submit(&store, 1).await;
    assert_eq!(claim_gpus(&store, 8).await, vec![1, 1]);
}

#[tokio::test]
async fn a_wiped_namespace_does_not_meet_the_classes_it_had() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "wipe", EngineConfig::default())
        .await
        .expect("connect");
    // Class 0 is "4 GPUs", and the library remembers it.
    submit(&store, 4).await;
    assert_eq!(claim_gpus(&store, 8).await, vec![4]);
    // The data goes (the library stays); class 0 is now "1 GPU". A stale cache would still
    // think it takes 4 and grant a 2-GPU machine nothing.
    raw(&server, &["FLUSHALL"]);
    submit(&store, 1).await;
    submit(&store, 1).await;
    assert_eq!(claim_gpus(&store, 2).await, vec![1, 1]);
}

#[tokio::test]
async fn a_namespace_of_another_layout_is_refused_not_misread() {
    let server = RedisServer::start();
    let config = EngineConfig::default;
    // Written by an engine from before layouts were recorded: an epoch and no layout.
    raw(&server, &["HSET", "{old}:meta", "epoch", "1", "clock", "1"]);
    let refused = RedisStore::connect(&server.url, "old", config())
        .await
        .err()
        .expect("an old namespace is refused");
    assert!(
        refused.to_string().contains("layout none"),
        "the refusal says why: {refused}"
    );

    // A namespace this engine wrote records its layout and is welcome again.
    let store = RedisStore::connect(&server.url, "new", config())
        .await
        .expect("connect");
    submit(&store, 1).await;
    let layout = raw(&server, &["HGET", "{new}:meta", "layout"]);
    assert_eq!(
        layout,
        redis::Value::BulkString(DATA_LAYOUT.to_string().into_bytes())
    );
    RedisStore::connect(&server.url, "new", config())
        .await
        .expect("the same layout connects");

    // Rewritten in another layout while this engine is connected: each call refuses it.
    raw(&server, &["HSET", "{new}:meta", "layout", "999"]);
    match store.apply(Request::Stats).await {
        Err(StoreError::Script(message)) => assert!(message.contains("layout 999"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Class queues fold the priority into the score beside the id (exact below 2^46): near that
/// limit they still order by priority, then id; past it a submission is refused, not misfiled.
#[tokio::test]
async fn queues_order_by_priority_then_id_up_to_the_id_limit() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "ids", EngineConfig::default())
        .await
        .expect("connect");
    submit(&store, 1).await; // id 1, priority 50
    let limit: u64 = 1 << 46;
    raw(
        &server,
        &["HSET", "{ids}:meta", "next_job", &(limit - 4).to_string()],
    );
    let mut ids = Vec::new();
    for priority in [10, 90, 10] {
        let mut spec = job(1, 0);
        spec.priority = priority;
        match store.apply(Request::Submit(Box::new(spec))).await {
            Ok(Ok(Reply::Submitted { job, .. })) => ids.push(job.0),
            other => panic!("submit: {other:?}"),
        }
    }
    assert_eq!(ids, [limit - 3, limit - 2, limit - 1]);
    match store.apply(Request::Submit(Box::new(job(1, 0)))).await {
        Ok(Err(Refusal::Full { what, limit: l })) => assert_eq!((what, l), ("job ids", limit)),
        other => panic!("a submission past the id limit: {other:?}"),
    }
    let order: Vec<u64> = first_claim(&store, 4)
        .await
        .iter()
        .map(|g| g.job.0)
        .collect();
    assert_eq!(order, [limit - 2, 1, limit - 3, limit - 1]);
}
