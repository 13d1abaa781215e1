//! Every store call is all-or-nothing (lua/prelude.lua, "the write discipline"), proved on a
//! real redis-server: every conformance case is replayed with a failure injected right after
//! each write of each request in turn, and after every injected failure the namespace holds
//! exactly what it held before the request, key by key and byte by byte. A batch whose request
//! fails is applied again without it: the other requests' effects are exactly those of the
//! batch without the failed one. Needs `redis-server` on PATH.

use drover_engine::core::{EngineConfig, JobId, MachineId, Outcome, Time, Token};
use drover_engine::redis::RedisStore;
use drover_engine::store::conformance;
use drover_engine::store::{LeaseRef, Refusal, Reply, Request};
use drover_engine::testing::RedisServer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Every key of a namespace (its name without the namespace prefix) and its content in a
/// canonical form: a hash's fields sorted, a zset's members with their scores in order, a
/// list's and a stream's entries in order. TTLs are left out (they tick).
const DUMP: &str = r#"
local out = {}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. '*', 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local kind = redis.call('TYPE', key).ok
    local parts = {}
    if kind == 'hash' then
      local flat = redis.call('HGETALL', key)
      local pairs_ = {}
      for i = 1, #flat, 2 do pairs_[#pairs_ + 1] = flat[i] .. '=' .. flat[i + 1] end
      table.sort(pairs_)
      parts = pairs_
    elseif kind == 'zset' then
      parts = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    elseif kind == 'list' then
      parts = redis.call('LRANGE', key, 0, -1)
    elseif kind == 'stream' then
      for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
        parts[#parts + 1] = entry[1]
        for _, v in ipairs(entry[2]) do parts[#parts + 1] = v end
      end
    else
      parts = {redis.call('GET', key)}
    end
    out[#out + 1] = string.sub(key, #ARGV[1] + 1)
    out[#out + 1] = kind .. '\0' .. table.concat(parts, '\0')
  end
until cursor == '0'
return out
"#;

type Dump = BTreeMap<String, Vec<u8>>;

struct Namespace {
    runtime: tokio::runtime::Runtime,
    store: RedisStore,
    conn: redis::Client,
    prefix: String,
}

impl Namespace {
    fn new(url: &str, config: EngineConfig) -> Namespace {
        static N: AtomicU64 = AtomicU64::new(0);
        let ns = format!("atomic{}", N.fetch_add(1, Ordering::Relaxed));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let store = runtime
            .block_on(RedisStore::connect(url, &ns, config))
            .expect("connect to the test redis");
        runtime
            .block_on(store.mark_test_namespace())
            .expect("mark the test namespace");
        Namespace {
            runtime,
            store,
            conn: redis::Client::open(url).expect("redis client"),
            prefix: format!("{{{ns}}}:"),
        }
    }

    fn dump(&self) -> Dump {
        let mut conn = self.conn.get_connection().expect("redis connection");
        let flat: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(DUMP)
            .arg(0)
            .arg(&self.prefix)
            .query(&mut conn)
            .expect("dump the namespace");
        flat.chunks(2)
            .map(|kv| (String::from_utf8_lossy(&kv[0]).into_owned(), kv[1].clone()))
            .collect()
    }

    fn apply(
        &self,
        now: Time,
        request: Request,
        fail_after: Option<u32>,
    ) -> Result<Reply, Refusal> {
        self.prepare(now, fail_after);
        self.send(request)
    }

    /// Sets the store clock to `now` and arms a failure after write `fail_after` (or none).
    fn prepare(&self, now: Time, fail_after: Option<u32>) {
        let store = self.store.clone();
        self.runtime.block_on(async move {
            store.set_test_clock(Some(now)).await.expect("set clock");
            store.inject_failure(fail_after).await.expect("arm");
        })
    }

    fn send(&self, request: Request) -> Result<Reply, Refusal> {
        let store = self.store.clone();
        self.runtime
            .block_on(async move { store.apply_traced(request).await.expect("redis request").0 })
    }
}

/// `dump` without what twin namespaces never share: the epoch (when each was first written),
/// the armed failure, and when each recorded its engine configuration.
fn comparable(mut dump: Dump) -> Dump {
    dump.remove("config");
    if let Some(meta) = dump.get_mut("meta") {
        let kept: Vec<&[u8]> = meta
            .split(|&b| b == 0)
            .filter(|f| !f.starts_with(b"epoch=") && !f.starts_with(b"test_fail="))
            .collect();
        *meta = kept.join(&0u8);
    }
    dump
}

/// The first difference between two dumps, readably.
fn first_difference(before: &Dump, after: &Dump) -> Option<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter().find_map(|key| {
        let (b, a) = (before.get(key), after.get(key));
        (b != a).then(|| {
            let show = |v: Option<&Vec<u8>>| {
                v.map_or("(absent)".to_string(), |v| {
                    format!("{:?}", String::from_utf8_lossy(v))
                })
            };
            format!("key {key}: before {} / after {}", show(b), show(a))
        })
    })
}

/// The injected failure's step, as "HSET j:*" (ids folded), if `reply` is one.
fn injected_step(reply: &Result<Reply, Refusal>) -> Option<String> {
    let Err(Refusal::Failed(message)) = reply else {
        return None;
    };
    let step = message.strip_prefix("injected failure after write ")?;
    let step = step.split_once(" (")?.1.trim_end_matches(')');
    Some(
        step.chars()
            .map(|c| if c.is_ascii_digit() { '*' } else { c })
            .collect::<String>(),
    )
}

/// Applies `request` with a failure after its 1st write, then its 2nd, ... checking each time
/// that nothing changed, until it runs with fewer writes than that and is applied.
fn apply_failing_each_write(
    ns: &Namespace,
    now: Time,
    request: &Request,
    steps: &mut BTreeSet<(&'static str, String)>,
) -> Result<Result<Reply, Refusal>, String> {
    for n in 1.. {
        ns.prepare(now, Some(n));
        let before = ns.dump();
        let reply = ns.send(request.clone());
        let Some(step) = injected_step(&reply) else {
            if let Err(Refusal::Failed(message)) = &reply {
                return Err(format!("{request:?} failed by itself: {message}"));
            }
            return Ok(reply);
        };
        if let Some(diff) = first_difference(&before, &ns.dump()) {
            return Err(format!(
                "{request:?} left writes behind after failing at write {n} ({step}): {diff}"
            ));
        }
        steps.insert((request.kind(), step));
    }
    unreachable!()
}

#[test]
fn a_failure_after_any_write_of_any_request_leaves_the_namespace_as_it_was() {
    let server = RedisServer::start();
    let mut steps = BTreeSet::new();
    let mut failures = Vec::new();
    for case in conformance::cases() {
        let ns = Namespace::new(&server.url, case.config.clone());
        let mut error = None;
        conformance::drive(&case, |i, now, request| {
            if error.is_some() {
                return Err(Refusal::Failed("case stopped".into()));
            }
            // A batch's requests one by one: a failed batch entry is checked apart (below).
            let parts = match request {
                Request::Batch(parts) => parts.clone(),
                one => vec![one.clone()],
            };
            let mut replies = Vec::new();
            for part in &parts {
                match apply_failing_each_write(&ns, now, part, &mut steps) {
                    Ok(reply) => replies.push(reply),
                    Err(e) => {
                        error = Some(format!("{}: step {i}: {e}", case.name));
                        return Err(Refusal::Failed("case stopped".into()));
                    }
                }
            }
            match request {
                Request::Batch(_) => Ok(Reply::Batch(replies)),
                _ => replies.pop().expect("one reply"),
            }
        });
        failures.extend(error);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every request that writes met a failure after each of its writes somewhere in the suite.
    let kinds: BTreeSet<&str> = steps.iter().map(|(kind, _)| *kind).collect();
    for writes in [
        "submit",
        "cancel",
        "register",
        "deregister",
        "heartbeat",
        "claim",
        "complete",
        "release",
        "reap",
        "progress",
    ] {
        assert!(
            kinds.contains(writes),
            "no failure was injected into a {writes}: {steps:?}"
        );
    }
    assert!(
        steps.len() >= 40,
        "too few distinct steps failed: {steps:?}"
    );
}

/// Registers a machine, submits four jobs, claims them: the start of the batch test.
fn batch_setup(ns: &Namespace) -> (MachineId, Vec<(JobId, Token)>) {
    let now = Time(1_000_000);
    let Ok(Reply::Registered { machine }) = ns.apply(
        now,
        Request::Register(Box::new(conformance::machine("m", 4, 24))),
        None,
    ) else {
        panic!("register")
    };
    for _ in 0..4 {
        ns.apply(now, Request::Submit(Box::new(conformance::job(1, 8))), None)
            .expect("submit");
    }
    let claim = Request::Claim {
        machine,
        seq: 1,
        offer: conformance::offer(4, 24),
    };
    let Ok(Reply::Claimed { grants, .. }) = ns.apply(now, claim, None) else {
        panic!("claim")
    };
    assert_eq!(grants.len(), 4);
    (machine, grants.iter().map(|g| (g.job, g.token)).collect())
}

/// The agent's kind of batch: two successes, a failure, a heartbeat and a claim.
fn agent_batch(machine: MachineId, leases: &[(JobId, Token)]) -> Vec<Request> {
    let complete = |i: usize, outcome: Outcome| Request::Complete {
        job: leases[i].0,
        token: leases[i].1,
        outcome,
        result: None,
    };
    vec![
        complete(0, Outcome::Succeeded),
        complete(1, Outcome::Succeeded),
        complete(2, conformance::error(true)),
        Request::Heartbeat {
            machine,
            leases: vec![LeaseRef {
                job: leases[3].0,
                token: leases[3].1,
            }],
        },
        Request::Claim {
            machine,
            seq: 2,
            offer: conformance::offer(3, 24),
        },
    ]
}

#[test]
fn a_batch_whose_request_fails_is_applied_without_it() {
    let server = RedisServer::start();
    let config = conformance::config();
    let at = Time(2_000_000);
    let mut failed_entries = BTreeSet::new();
    for n in 1.. {
        // Twin namespaces, built alike: the batch with a failure after write n goes to one,
        // the same batch without the request that failed to the other.
        let (failing, twin) = (
            Namespace::new(&server.url, config.clone()),
            Namespace::new(&server.url, config.clone()),
        );
        let (machine, leases) = batch_setup(&failing);
        assert_eq!(
            batch_setup(&twin),
            (machine, leases.clone()),
            "twins are built alike"
        );
        let batch = agent_batch(machine, &leases);
        let Ok(Reply::Batch(replies)) = failing.apply(at, Request::Batch(batch.clone()), Some(n))
        else {
            panic!("the batch is answered")
        };
        let failed: Vec<usize> = (0..replies.len())
            .filter(|&i| injected_step(&replies[i]).is_some())
            .collect();
        if failed.is_empty() {
            assert!(n > 5, "the batch makes more than five writes");
            break;
        }
        // One entry fails: one request, or the successes the codec sent as one entry.
        let one_entry = failed.windows(2).all(|w| w[1] == w[0] + 1)
            && failed.iter().all(|&i| replies[i] == replies[failed[0]]);
        assert!(one_entry, "one entry fails: {replies:?}");
        failed_entries.insert(failed[0]);
        let kept = |i: &usize| !failed.contains(i);
        let without: Vec<Request> = (0..batch.len())
            .filter(kept)
            .map(|i| batch[i].clone())
            .collect();
        let Ok(Reply::Batch(twin_replies)) = twin.apply(at, Request::Batch(without), None) else {
            panic!("the twin's batch is answered")
        };
        let others: Vec<_> = (0..replies.len())
            .filter(kept)
            .map(|i| replies[i].clone())
            .collect();
        assert_eq!(
            others, twin_replies,
            "write {n}: the other requests' replies"
        );
        if let Some(diff) = first_difference(&comparable(twin.dump()), &comparable(failing.dump()))
        {
            panic!("write {n}: the batch without its failed request differs: {diff}");
        }
    }
    // The failures fell in the successes (one entry: codec/encode.rs gathers them), the failed
    // attempt, the heartbeat and the claim.
    assert!(failed_entries.len() >= 4, "{failed_entries:?}");
}

#[test]
fn failures_are_refused_on_a_namespace_not_marked_for_tests() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = runtime
        .block_on(RedisStore::connect(
            &server.url,
            "production",
            EngineConfig::default(),
        ))
        .expect("connect");
    let refused = runtime.block_on(store.inject_failure(Some(1)));
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("not a test namespace")),
        "{refused:?}"
    );
    // Armed behind the helper's back, the library refuses to run at all.
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let _: () = redis::cmd("HSET")
        .arg("{production}:meta")
        .arg("test_fail")
        .arg(1)
        .query(&mut conn)
        .expect("arm by hand");
    let submit = Request::Submit(Box::new(conformance::job(1, 8)));
    let reply = runtime.block_on(store.apply_traced(submit));
    assert!(
        matches!(&reply, Err(e) if e.to_string().contains("not marked as a test namespace")),
        "{reply:?}"
    );
    let jobs: u64 = redis::cmd("ZCARD")
        .arg("{production}:jobs")
        .query(&mut conn)
        .expect("zcard");
    assert_eq!(jobs, 0, "nothing was submitted");
}

/// The chaos harness's planted bug (successes skip their fencing check) is refused outside a
/// test namespace, by the helper and by the library; inside one, a stale success wins, which
/// is what the harness's checker must then catch.
#[test]
fn skipped_fencing_is_refused_unless_the_namespace_is_marked_for_tests() {
    use drover_engine::runtime::SharedStore;
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let connect = |ns: &str| {
        runtime
            .block_on(RedisStore::connect(
                &server.url,
                ns,
                EngineConfig::default(),
            ))
            .expect("connect")
    };
    let production = connect("production");
    let refused = runtime.block_on(production.skip_completion_fencing(true));
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("not a test namespace")),
        "{refused:?}"
    );
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let _: () = redis::cmd("HSET")
        .arg("{production}:meta")
        .arg("test_skip_fencing")
        .arg(1)
        .query(&mut conn)
        .expect("arm by hand");
    let submit = Request::Submit(Box::new(conformance::job(1, 8)));
    let reply = runtime.block_on(production.apply(submit));
    assert!(
        matches!(&reply, Ok(Err(Refusal::Failed(e))) if e.contains("not marked as a test namespace"))
            || matches!(&reply, Err(e) if e.to_string().contains("not marked as a test namespace")),
        "{reply:?}"
    );

    // Marked for tests: a success under a token that is not the live lease's is recorded.
    let test = connect("planted");
    runtime.block_on(test.mark_test_namespace()).expect("mark");
    runtime
        .block_on(test.skip_completion_fencing(true))
        .expect("armed in a test namespace");
    let apply = |request| runtime.block_on(test.apply(request)).expect("reachable");
    let Ok(Reply::Registered { machine }) = apply(Request::Register(Box::new(
        conformance::machine("m", 1, 24),
    ))) else {
        panic!("register")
    };
    apply(Request::Submit(Box::new(conformance::job(1, 8)))).expect("submit");
    let Ok(Reply::Claimed { grants, .. }) = apply(Request::Claim {
        machine,
        seq: 1,
        offer: conformance::offer(1, 24),
    }) else {
        panic!("claim")
    };
    let stale = Token(grants[0].token.0 - 1);
    let reply = apply(Request::Complete {
        job: grants[0].job,
        token: stale,
        outcome: Outcome::Succeeded,
        result: None,
    });
    assert!(matches!(reply, Ok(Reply::Recorded { .. })), "{reply:?}");
}
