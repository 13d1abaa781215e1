//! `drover inspect` and `drover admin gc` against a real redis-server, through the built binary;
//! and the namespace decoder (`RedisStore::dump`) reporting keys that do not add up. Needs
//! `redis-server` on PATH (each test starts its own on a free port).

#[path = "support/cli.rs"]
mod cli;
use cli::{drover, raw};

use drover_engine::core::{EngineConfig, Failure, JobId, MachineId, Outcome};
use drover_engine::redis::libraries::{self, ANNOUNCE_KEY};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::SharedStore;
use drover_engine::store::conformance::{job_with, machine, offer};
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use serde_json::Value;

/// `drover ARGS --redis URL --namespace NS`, which must succeed: its stdout.
fn inspect(server: &RedisServer, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--redis", &server.url, "--namespace", ns]);
    let (code, out, err) = drover(&all);
    assert_eq!(code, 0, "drover {all:?} failed: {err}");
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn apply(store: &RedisStore, request: Request) -> Reply {
    match store.apply(request.clone()).await {
        Ok(Ok(reply)) => reply,
        other => panic!("{request:?}: {other:?}"),
    }
}

async fn submit(store: &RedisStore, gpus: u32, priority: u8) -> JobId {
    let spec = job_with(gpus, 24, |s| {
        s.priority = priority;
        s.payload = "{\"seconds\": 1}".into();
    });
    match apply(store, Request::Submit(Box::new(spec))).await {
        Reply::Submitted { job, .. } => job,
        other => panic!("submit: {other:?}"),
    }
}

/// What `populate` made.
struct Made {
    machine: MachineId,
    /// Leased to the machine, with progress reported.
    leased: JobId,
    /// Failed once, waiting for its retry.
    delayed: JobId,
    /// Too large for the machine: queued, first and second in their class's queue.
    queued: [JobId; 2],
}

/// A machine with two leases (one with progress), a job waiting for its retry, and two queued
/// jobs no machine fits.
async fn populate(store: &RedisStore) -> Made {
    let Reply::Registered { machine } = apply(
        store,
        Request::Register(Box::new(machine("gpu-host-1", 2, 80))),
    )
    .await
    else {
        panic!("register")
    };
    let a = submit(store, 1, 50).await;
    let b = submit(store, 1, 50).await;
    let queued = [submit(store, 8, 50).await, submit(store, 8, 50).await];
    let claim = Request::Claim {
        machine,
        seq: 1,
        offer: offer(2, 80),
    };
    let Reply::Claimed { grants, .. } = apply(store, claim).await else {
        panic!("claim")
    };
    assert_eq!(
        grants.iter().map(|g| g.job).collect::<Vec<_>>(),
        vec![a, b],
        "the two one-GPU jobs are leased"
    );
    apply(
        store,
        Request::Progress {
            job: a,
            token: grants[0].token,
            percent: 40,
            message: "step 4 of 10".into(),
        },
    )
    .await;
    apply(
        store,
        Request::Complete {
            job: b,
            token: grants[1].token,
            outcome: Outcome::Failed(Failure::Error {
                retryable: true,
                message: "CUDA error: an illegal memory access".into(),
            }),
            result: None,
        },
    )
    .await;
    Made {
        machine,
        leased: a,
        delayed: b,
        queued,
    }
}

#[tokio::test]
async fn inspect_shows_jobs_machines_queues_and_the_namespace() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "insp", EngineConfig::default())
        .await
        .expect("connect");
    let made = populate(&store).await;
    let id = |j: JobId| j.0.to_string();

    // A leased job: its lease, machine and progress.
    let text = inspect(&server, "insp", &["job", &id(made.leased)]);
    println!("{text}");
    for want in [
        "state             leased",
        "attempt           1 of 3",
        "gpu-host-1",
        "lease token",
        "lease expiry",
        "40% step 4 of 10",
        "history (from the job's record):",
        "journal (3 events):",
        "class             0: 1 GPU x 24 GB",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let v = json(&inspect(
        &server,
        "insp",
        &["job", &id(made.leased), "--json"],
    ));
    assert_eq!(v["job"]["state"], "leased");
    assert_eq!(v["job"]["lease"]["machine"], made.machine.0);
    assert_eq!(v["machine_name"], "gpu-host-1");
    assert!(v["lease_expiry"].as_u64().is_some(), "{v}");
    let events: Vec<&str> = v["journal"]
        .as_array()
        .expect("the job's journal events")
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["submitted", "leased", "progress"], "{v}");
    assert_eq!(v["anomalies"], serde_json::json!([]));

    // A job waiting for its retry: when, and the error that sent it back.
    let text = inspect(&server, "insp", &["job", &id(made.delayed)]);
    println!("{text}");
    for want in [
        "delayed",
        "retry at",
        "CUDA error: an illegal memory access",
        "outcome recorded",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // A queued job: its place in its queue.
    let v = json(&inspect(
        &server,
        "insp",
        &["job", &id(made.queued[1]), "--json"],
    ));
    assert_eq!(v["job"]["state"], "queued");
    assert_eq!(v["queue"], serde_json::json!({"position": 2, "of": 2}));
    assert_eq!(v["requirements"]["gpus"], 8);

    // Unknown ids: one clear line, a non-zero exit.
    for (what, id) in [("job", "999"), ("machine", "12345")] {
        let (code, out, err) = drover(&[
            "inspect",
            what,
            id,
            "--redis",
            &server.url,
            "--namespace",
            "insp",
        ]);
        assert_ne!(code, 0, "{what} {id}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{what} {id} not found")), "{err}");
    }
    let (code, _, err) = drover(&["inspect", "job", "x1", "--redis", &server.url]);
    assert_ne!(code, 0);
    assert!(err.contains("not a number"), "{err}");

    // The machine: spec, leases, last heartbeat.
    let m = made.machine.0.to_string();
    let text = inspect(&server, "insp", &["machine", &m]);
    println!("{text}");
    for want in [
        "gpu-host-1",
        "2 x A100 (80 GB)",
        "last heartbeat",
        "leases (1):",
        "seq 1, 2 jobs",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let v = json(&inspect(&server, "insp", &["machine", &m, "--json"]));
    assert_eq!(v["machine"]["state"], "ready");
    assert_eq!(v["leases"][0]["job"], made.leased.0);
    assert_eq!(v["leases"][0]["attempt"], 1);

    // Queues: depth per class, the oldest job.
    let text = inspect(&server, "insp", &["queues"]);
    println!("{text}");
    assert!(
        text.contains("2 queued in 1 of 2 classes, 1 delayed, 1 leased"),
        "{text}"
    );
    let v = json(&inspect(&server, "insp", &["queues", "--json"]));
    assert_eq!(v["queues"][0]["depth"], 2);
    assert_eq!(v["queues"][0]["oldest"], made.queued[0].0);
    assert_eq!(v["queues"][0]["head"], made.queued[0].0);
    assert_eq!(v["delayed"], 1);

    // The namespace: layout, counters, keys, libraries; checked whole.
    let text = inspect(&server, "insp", &["namespace", "--check"]);
    println!("{text}");
    for want in [
        "layout",
        "4 submitted",
        "1 ready",
        "c:<n>:q",
        libraries::current(),
        "(this drover's)",
        "check: every key decodes",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let v = json(&inspect(
        &server,
        "insp",
        &["namespace", "--check", "--json"],
    ));
    assert_eq!(v["layout"], drover_engine::redis::DATA_LAYOUT.to_string());
    assert_eq!(v["anomalies"], serde_json::json!([]));
    assert_eq!(v["current_library"], libraries::current());

    // The whole dump, as the conformance suite sees it.
    let v = json(&inspect(&server, "insp", &["dump"]));
    let dump = store.dump().await.expect("dump");
    assert_eq!(v, serde_json::to_value(&dump).unwrap());
    assert_eq!(dump.jobs.len(), 4);
}

#[tokio::test]
async fn the_decoder_reports_keys_that_do_not_add_up() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "bad", EngineConfig::default())
        .await
        .expect("connect");
    let made = populate(&store).await;
    assert_eq!(store.dump().await.unwrap().anomalies, Vec::<String>::new());
    let q = made.queued[1].0.to_string();
    // A key nobody knows, a field nobody writes, a queue entry scored as another job, a
    // machine's lease list cut short.
    raw(&server, &["SET", "{bad}:surprise", "1"]);
    raw(
        &server,
        &["HSET", &format!("{{bad}}:j:{q}"), "colour", "red"],
    );
    raw(&server, &["ZADD", "{bad}:c:1:q", "3518437208883200", &q]);
    raw(
        &server,
        &[
            "HSET",
            &format!("{{bad}}:m:{}", made.machine.0),
            "leases",
            "",
        ],
    );
    let anomalies = store.dump().await.unwrap().anomalies;
    for want in [
        "key \"surprise\" is not in the decoder's key table",
        "has field \"colour\"",
        &format!("scores job {q} as job 0"),
        &format!(
            "job {} is leased to machine {} but in no machine's leases",
            made.leased.0, made.machine.0
        ),
        "the lease expiry index",
    ] {
        assert!(
            anomalies.iter().any(|a| a.contains(want)),
            "{want:?} missing from {anomalies:#?}"
        );
    }
    let (code, out, _) = drover(&[
        "inspect",
        "namespace",
        "--check",
        "--redis",
        &server.url,
        "--namespace",
        "bad",
    ]);
    assert_ne!(code, 0, "a failed check exits non-zero");
    assert!(out.contains("anomalies ("), "{out}");
    assert!(out.contains("surprise"), "{out}");
}

fn libraries_loaded(server: &RedisServer) -> Vec<String> {
    let reply = raw(server, &["FUNCTION", "LIST"]);
    libraries::library_names(&reply).expect("FUNCTION LIST")
}

fn load_fake(server: &RedisServer, name: &str) {
    let source =
        format!("#!lua name={name}\nredis.register_function('{name}', function() return 1 end)");
    raw(server, &["FUNCTION", "LOAD", &source]);
}

#[tokio::test]
async fn gc_deletes_old_libraries_and_keeps_the_current_one() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "gc", EngineConfig::default())
        .await
        .expect("connect");
    let current = libraries::current();
    // Connecting loaded this build's library and announced it.
    let announced: Option<u64> =
        redis::from_redis_value(raw(&server, &["HGET", ANNOUNCE_KEY, current])).unwrap();
    assert!(announced.is_some(), "connect announces the library");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // An old engine's library that never announced, one announced two days ago, one still in
    // use (announced a minute ago), and a library that is not Drover's.
    let (never, stale, live) = (
        "drover_00000000000000aa",
        "drover_00000000000000bb",
        "drover_00000000000000cc",
    );
    for name in [never, stale, live, "someone_elses"] {
        load_fake(&server, name);
    }
    raw(
        &server,
        &["HSET", ANNOUNCE_KEY, stale, &(now - 2 * 86_400).to_string()],
    );
    raw(
        &server,
        &["HSET", ANNOUNCE_KEY, live, &(now - 60).to_string()],
    );
    // An announcement of a library no longer loaded anywhere.
    raw(
        &server,
        &[
            "HSET",
            ANNOUNCE_KEY,
            "drover_00000000000000dd",
            &(now - 3 * 86_400).to_string(),
        ],
    );

    let (code, out, err) = drover(&["admin", "gc", "--redis", &server.url, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    for (action, name) in [
        ("would delete", never),
        ("would delete", stale),
        ("in use", live),
        ("current", current),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(action) && l.contains(name)),
            "{action} {name} missing from:\n{out}"
        );
    }
    assert_eq!(
        libraries_loaded(&server).len(),
        5,
        "a dry run deletes nothing"
    );

    let (code, out, err) = drover(&["admin", "gc", "--redis", &server.url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let verdicts = json(&out);
    assert_eq!(verdicts.as_array().map(Vec::len), Some(4), "{verdicts}");
    let mut left = libraries_loaded(&server);
    left.sort();
    let mut want = vec![
        current.to_string(),
        live.to_string(),
        "someone_elses".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
    let hash: std::collections::BTreeMap<String, u64> =
        redis::from_redis_value(raw(&server, &["HGETALL", ANNOUNCE_KEY])).unwrap();
    assert_eq!(
        hash.keys().cloned().collect::<Vec<_>>(),
        {
            let mut k = vec![current.to_string(), live.to_string()];
            k.sort();
            k
        },
        "the deleted libraries' announcements are forgotten"
    );

    // The current library keeps working (and a process whose library was deleted anyway
    // loads it again on its next call).
    raw(&server, &["FUNCTION", "DELETE", current]);
    let spec = job_with(0, 0, |_| {});
    assert!(matches!(
        store.apply(Request::Submit(Box::new(spec))).await,
        Ok(Ok(Reply::Submitted { .. }))
    ));
}

#[tokio::test]
async fn on_a_cluster_the_namespace_decodes_and_gc_reaches_every_master() {
    let cluster = drover_engine::testing::RedisCluster::start(3, 0);
    let url = cluster.url();
    let store = RedisStore::connect(&url, "clu", EngineConfig::default())
        .await
        .expect("connect");
    let made = populate(&store).await;
    // SCAN goes to the shard that holds the namespace; the reads go there as one pipeline.
    let dump = store.dump().await.expect("dump");
    assert_eq!(dump.anomalies, Vec::<String>::new());
    assert_eq!(dump.jobs.len(), 4);
    let v = json(&inspect_url(
        &url,
        "clu",
        &["job", &made.leased.0.to_string(), "--json"],
    ));
    assert_eq!(v["job"]["state"], "leased");
    let v = json(&inspect_url(
        &url,
        "clu",
        &["namespace", "--check", "--json"],
    ));
    assert_eq!(v["anomalies"], serde_json::json!([]));
    let libs = v["libraries"].as_array().expect("libraries").clone();
    assert_eq!(libs.len(), 1, "{libs:?}");
    assert_eq!(
        libs[0]["loaded_on"].as_array().map(Vec::len),
        Some(3),
        "{libs:?}"
    );
    // An old library on every master (as FUNCTION LOAD through a cluster client leaves it).
    let old = "drover_00000000000000ee";
    for node in &cluster.nodes {
        load_fake(node, old);
    }
    let (code, out, err) = drover(&["admin", "gc", "--redis", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("deleted") && l.contains(old)),
        "{out}"
    );
    for node in &cluster.nodes {
        let left = libraries_loaded(node);
        assert!(!left.iter().any(|l| l == old), "{left:?}");
        assert!(left.iter().any(|l| l == libraries::current()), "{left:?}");
    }
}

fn inspect_url(url: &str, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--redis", url, "--namespace", ns]);
    let (code, out, err) = drover(&all);
    assert_eq!(code, 0, "drover {all:?} failed: {err}");
    out
}
