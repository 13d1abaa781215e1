//! Wake-ups on real Redis: an idle machine blocked in `wait_wake` (BLPOP on its own
//! connection) is woken by the very script that accepts a fitting submission, so it learns of
//! the job within the submission's own round trip; and a wait longer than redis-rs's default
//! 500 ms response timeout is not abandoned.

use drover_engine::core::{EngineConfig, MachineId};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::SharedStore;
use drover_engine::store::conformance::{job, machine, offer};
use drover_engine::store::{Reply, Request};
use drover_engine::testing::RedisServer;
use std::time::{Duration, Instant};

async fn idle_machine(store: &RedisStore, name: &str) -> MachineId {
    let Ok(Ok(Reply::Registered { machine })) = store
        .apply(Request::Register(Box::new(machine(name, 1, 24))))
        .await
    else {
        panic!("register")
    };
    let claimed = store
        .apply(Request::Claim {
            machine,
            seq: 1,
            offer: offer(1, 24),
        })
        .await
        .expect("claim")
        .expect("claim accepted");
    assert_eq!(
        claimed,
        Reply::Claimed {
            grants: vec![],
            idle: true
        }
    );
    machine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_wakes_the_waiting_machine_within_its_round_trip() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "wake", EngineConfig::default())
        .await
        .expect("connect");
    let machine = idle_machine(&store, "a").await;
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let woken = store.wait_wake(machine, Duration::from_secs(10)).await;
            (woken, Instant::now())
        }
    });
    // Longer than redis-rs's default response timeout: the wait must survive it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sent = Instant::now();
    store
        .apply(Request::Submit(Box::new(job(1, 8))))
        .await
        .expect("submit")
        .expect("accepted");
    let replied = Instant::now();
    let (woken, at) = waiter.await.expect("waiter");
    assert_eq!(woken, Ok(true));
    let round_trip = replied - sent;
    let wake = at.saturating_duration_since(sent);
    eprintln!("submit round trip {round_trip:?}, woken after {wake:?}");
    // Pushed, not polled: well within one round trip plus scheduling slack on a loaded CI
    // machine, and two orders of magnitude below the idle recheck (30 s).
    assert!(
        wake <= round_trip + Duration::from_millis(250),
        "woken after {wake:?}, the submission took {round_trip:?}"
    );
    // Nothing more to wake it for.
    assert_eq!(
        store.wait_wake(machine, Duration::from_millis(200)).await,
        Ok(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_machines_wait_at_once_and_a_wake_is_kept_until_waited_for() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "wake2", EngineConfig::default())
        .await
        .expect("connect");
    let mut machines = Vec::new();
    for i in 0..5 {
        machines.push(idle_machine(&store, &format!("m{i}")).await);
    }
    let waiters: Vec<_> = machines
        .iter()
        .map(|&m| {
            let store = store.clone();
            tokio::spawn(async move { store.wait_wake(m, Duration::from_secs(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        store
            .apply(Request::Submit(Box::new(job(1, 8))))
            .await
            .expect("submit")
            .expect("accepted");
    }
    for waiter in waiters {
        assert_eq!(waiter.await.expect("waiter"), Ok(true));
    }
    // A wake-up that arrives before the machine waits is not lost.
    let store = RedisStore::connect(&server.url, "wake3", EngineConfig::default())
        .await
        .expect("connect");
    let late = idle_machine(&store, "late").await;
    store
        .apply(Request::Submit(Box::new(job(1, 8))))
        .await
        .expect("submit")
        .expect("accepted");
    assert_eq!(
        store.wait_wake(late, Duration::from_secs(1)).await,
        Ok(true)
    );
}
