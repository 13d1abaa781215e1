//! `RedisStore`: the store on a real Redis 7 or later (one node, or Redis Cluster), applying every
//! request as one call of a Lua function (a Redis Function library, atomic) with the same semantics as `MemStore` (the conformance suite in
//! `store::conformance` and `tests/redis_conformance.rs` holds the two to identical replies).
//!
//! Key layout: every key is `{<namespace>}:...`, one hash tag, so a namespace lives on one
//! cluster shard and one script may touch all of it:
//!
//! | key | type | what |
//! |---|---|---|
//! | `{ns}:meta` | hash | `hot` (the clock, job counts and the submitted and succeeded totals, packed: lua/prelude.lua), next_job, seq, last_machine, epoch, layout, classes, profiles, machines, other totals (`t_*`); test_clock |
//! | `{ns}:j:<job>` | hash | a job's fields that seldom change (see lua/jobs.lua) |
//! | `{ns}:run` | hash | job -> its run record: state, attempt, tokens, lease (see lua/run.lua) |
//! | `{ns}:spec` | hash | job -> its spec as the client sent it |
//! | `{ns}:jobs` | zset | every retained job by id (listings) |
//! | `{ns}:idem` | hash | idempotency key -> job |
//! | `{ns}:classkey` | hash | class key -> class id |
//! | `{ns}:c:<class>` | hash | a class's requirements |
//! | `{ns}:c:<class>:q` | zset | its queue: score (100 - priority) * 2^46 + id, member the id |
//! | `{ns}:c:<class>:allows` | hash | profile -> 1 never fits / 2 fits when free |
//! | `{ns}:nonempty` | zset | classes with queued jobs |
//! | `{ns}:delayed` | zset | retries by release time |
//! | `{ns}:lexp` | zset | machines with leases, by their earliest lease expiry |
//! | `{ns}:finished` | list | `finished_at:job,job,...` (one entry per call), oldest first (purging) |
//! | `{ns}:profkey`, `{ns}:p:<profile>` | hash | machine profiles, interned |
//! | `{ns}:mname`, `{ns}:m:<machine>` | hash | machines by name; a machine |
//! | `{ns}:machines`, `{ns}:mexp` | zset | machines by id; by heartbeat expiry |
//! | `{ns}:waitp`, `{ns}:w:<profile>` | zset | profiles with idle machines; the idle line |
//! | `{ns}:wake:<machine>` | list | a pending wake-up; the machine BLPOPs it |
//! | `{ns}:config` | hash | the namespace's engine configuration: json, sha1, written_by, written_at (ns_config.rs) |
//! | `drover:libraries` | hash | server-wide, outside every namespace: function library -> when a process last said it uses it (libraries.rs) |
//!
//! `dump.rs` holds the same layout as data (`dump::KEYS`), with the decoder of every key, and
//! `formats.rs` the packed values' formats. `backup/` snapshots a namespace's keys, whatever
//! they are, to a file and restores them (`drover admin backup`, `drover admin restore`).
//!
//! Time is the script's `TIME` (never the client's), kept monotonic in `meta.clock`. If
//! `meta.test_clock` exists its value is the clock instead: the conformance suite drives virtual
//! time with it exactly as MemStore is given `now`. Production never sets that field.
//! `meta.epoch` is set when the namespace's data is first written; the library's caches of
//! classes and profiles are kept per epoch, so a wiped namespace never meets stale ones.
//! `meta.layout` records the data layout (`DATA_LAYOUT`) that first wrote the namespace; an
//! engine of another layout refuses it at connect and on every call.

pub mod backup;
mod codec;
mod connection;
pub mod dump;
pub mod formats;
pub mod inspect;
pub mod libraries;
mod ns_config;
mod scripts;

pub use codec::{requirements_from_key, wire_config};
pub use connection::{parse_url, redact, ConnectOptions, Target};
pub use ns_config::{canonical_json, config_differences, ConfigDifference, NamespaceConfig};
pub use scripts::DATA_LAYOUT;

use crate::core::{EngineConfig, MachineId, Time};
use crate::runtime::{SharedStore, StoreError};
use crate::store::journal::{EntryId, JournalEntry};
use crate::store::{Refusal, Reply, Request};
use ::redis::Value;
use connection::{store_error, Blocking, Requests, WaitPool};
use std::sync::Arc;
use std::time::Duration;

/// The store on Redis. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    requests: Requests,
    waits: Arc<WaitPool>,
    namespace: String,
    meta_key: String,
    config: Arc<EngineConfig>,
    wire_config: String,
}

/// A reply with the machines the request woke (in the order the store woke them).
pub type Traced = (Result<Reply, Refusal>, Vec<MachineId>);

impl RedisStore {
    /// Connects to `url`: `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS, system
    /// roots; see `connect_with` for a private CA) or
    /// `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` for TLS).
    /// `namespace` names the queue space (its keys are `{namespace}:...`).
    pub async fn connect(
        url: &str,
        namespace: &str,
        config: EngineConfig,
    ) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(url, namespace, config, ConnectOptions::default()).await
    }

    /// `connect` with options: a CA to trust for TLS, a response timeout.
    pub async fn connect_with(
        url: &str,
        namespace: &str,
        config: EngineConfig,
        options: ConnectOptions,
    ) -> Result<RedisStore, StoreError> {
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(StoreError::Connection(format!(
                "bad namespace {namespace:?}: it must be non-empty and without braces"
            )));
        }
        let timeout = options
            .response_timeout
            .unwrap_or(Duration::from_micros(config.request_timeout.as_micros()));
        let (requests, waits) =
            connection::open(url, &options, timeout)
                .await
                .map_err(|e| match e {
                    StoreError::Connection(m) => {
                        StoreError::Connection(format!("{}: {m}", connection::redact(url)))
                    }
                    other => other,
                })?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                requests,
                waits,
                namespace: namespace.to_string(),
                meta_key: format!("{{{namespace}}}:meta"),
                wire_config: wire_config(&config),
                config: Arc::new(config),
            }),
        };
        // A PING first: an unauthenticated client gets NOAUTH for it, where the library's
        // large payload would only get a protocol error.
        store.query(::redis::cmd("PING")).await?;
        if options.read_only {
            return Ok(store);
        }
        // Loads the library now, so a server that cannot run it fails here, not on a request.
        store.load_library().await.map_err(|e| {
            StoreError::Connection(format!(
                "{}: loading Drover's Redis Function library (Redis 7 or later is needed): {e}",
                connection::redact(url)
            ))
        })?;
        store
            .check_layout()
            .await
            .map_err(|e| StoreError::Connection(format!("{}: {e}", connection::redact(url))))?;
        // One engine configuration per namespace: the first process records its own, later
        // ones must bring the same (ns_config.rs).
        if !options.skip_namespace_config {
            store.adopt_namespace_config().await?;
        }
        // So that `drover admin gc` keeps the library while this process may use it.
        store.start_announcing().await;
        Ok(store)
    }

    /// Refuses a namespace that an engine of another data layout wrote (`DATA_LAYOUT`); one
    /// never written is fine (its first request records the layout).
    async fn check_layout(&self) -> Result<(), StoreError> {
        let mut read = ::redis::cmd("HMGET");
        read.arg(&self.inner.meta_key).arg("epoch").arg("layout");
        let (epoch, layout): (Option<String>, Option<String>) =
            ::redis::from_redis_value(self.query(read).await?)
                .map_err(|e| StoreError::Decode(format!("namespace layout: {e}")))?;
        let ours = DATA_LAYOUT.to_string();
        match (epoch, layout) {
            (None, _) => Ok(()),
            (Some(_), Some(layout)) if layout == ours => Ok(()),
            (Some(_), found) => Err(StoreError::Connection(format!(
                "namespace {:?} holds data in layout {} and this engine reads layout {ours}: \
                 drain it with the engine that wrote it, or use another namespace",
                self.inner.namespace,
                found
                    .as_deref()
                    .unwrap_or("none (written before layouts were recorded)")
            ))),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Applies one request and also returns the machines it woke (the conformance suite
    /// compares them with MemStore's `drain_wakes`).
    pub async fn apply_traced(&self, request: Request) -> Result<Traced, StoreError> {
        let wire = match codec::encode(&request, &self.inner.config) {
            Ok(wire) => wire,
            Err(refusal) => return Ok((Err(refusal), Vec::new())),
        };
        let mut call = ::redis::cmd("FCALL");
        call.arg(&scripts::library().function)
            .arg(1)
            .arg(&self.inner.meta_key)
            .arg(&self.inner.wire_config)
            .arg(&wire.bytes);
        let value = match self.query_raw(&call).await {
            // A restarted server without persistence, or a node new to the cluster.
            Err(e) if scripts::is_missing(&e) => {
                self.load_library().await?;
                self.query_raw(&call).await
            }
            other => other,
        }
        .map_err(store_error)?;
        codec::decode(&codec::unpack(&value)?, &request, &wire)
    }

    /// `FUNCTION LOAD REPLACE`: idempotent, so racing engines of one version do no harm (a
    /// cluster connection sends it to every master).
    async fn load_library(&self) -> Result<(), StoreError> {
        let mut load = ::redis::cmd("FUNCTION");
        load.arg("LOAD")
            .arg("REPLACE")
            .arg(&scripts::library().source);
        self.query(load).await.map(|_| ())
    }

    /// TESTS ONLY: sets the namespace's store clock to `now` (µs), or back to Redis `TIME`
    /// with `None`. The store clock still never runs backwards.
    pub async fn set_test_clock(&self, now: Option<Time>) -> Result<(), StoreError> {
        let mut cmd = match now {
            Some(t) => {
                let mut c = ::redis::cmd("HSET");
                c.arg(&self.inner.meta_key).arg("test_clock").arg(t.0);
                c
            }
            None => {
                let mut c = ::redis::cmd("HDEL");
                c.arg(&self.inner.meta_key).arg("test_clock");
                c
            }
        };
        self.query(std::mem::take(&mut cmd)).await.map(|_| ())
    }

    /// The journal's entries after `after` (from its start with `None`), at most `count`, in
    /// order.
    pub async fn read_journal(
        &self,
        after: Option<EntryId>,
        count: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(self.journal_key())
            .arg(after.map_or("-".to_string(), |id| format!("({id}")))
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1));
        codec::journal::entries(&self.query(cmd).await?)
    }

    /// Waits up to `timeout` for entries after `after` (`None`: only new ones), then returns
    /// them (none if it timed out): a blocking read on a connection of its own, so a reader
    /// never polls.
    pub async fn wait_journal(
        &self,
        after: Option<EntryId>,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let mut cmd = ::redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(timeout.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.journal_key())
            .arg(after.map_or("$".to_string(), |id| id.to_string()));
        let mut conn = self.inner.waits.take().await?;
        let guard = timeout + Duration::from_secs(2);
        let read = async {
            match &mut conn {
                Blocking::Node(c) => cmd.query_async::<Value>(c).await,
                Blocking::Cluster(c) => cmd.query_async::<Value>(c).await,
            }
        };
        let value = match tokio::time::timeout(guard, read).await {
            Ok(Ok(value)) => {
                self.inner.waits.give_back(conn);
                value
            }
            Ok(Err(e)) => return Err(store_error(e)),
            Err(_) => return Err(StoreError::Timeout),
        };
        // XREAD answers [[stream, entries]] (RESP2), or nil when it timed out.
        match value {
            Value::Nil => Ok(Vec::new()),
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(stream)) if stream.len() == 2 => {
                    codec::journal::entries(&stream[1])
                }
                other => Err(StoreError::Decode(format!("journal read: {other:?}"))),
            },
            Value::Map(streams) => match streams.first() {
                Some((_, entries)) => codec::journal::entries(entries),
                None => Ok(Vec::new()),
            },
            other => Err(StoreError::Decode(format!("journal read: {other:?}"))),
        }
    }

    fn journal_key(&self) -> String {
        format!("{{{}}}:journal", self.inner.namespace)
    }

    /// TESTS ONLY: marks the namespace as a test namespace, the only kind where failures may
    /// be injected (`inject_failure`).
    pub async fn mark_test_namespace(&self) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(&self.inner.meta_key).arg("test_namespace").arg(1);
        self.query(cmd).await.map(|_| ())
    }

    /// TESTS ONLY: every call raises right after its `after_write`-th logged write (`None`
    /// disarms), and must leave the namespace as it was (lua/prelude.lua, the write
    /// discipline). Refused unless the namespace is marked as a test namespace; the library
    /// refuses an armed failure there too.
    pub async fn inject_failure(&self, after_write: Option<u32>) -> Result<(), StoreError> {
        let mut cmd = match after_write {
            Some(n) => {
                let mut marked = ::redis::cmd("HGET");
                marked.arg(&self.inner.meta_key).arg("test_namespace");
                let marked: Option<String> =
                    ::redis::from_redis_value(self.query(marked).await?)
                        .map_err(|e| StoreError::Decode(format!("test_namespace: {e}")))?;
                if marked.as_deref() != Some("1") {
                    return Err(StoreError::Script(format!(
                        "failure injection refused: namespace {:?} is not a test namespace",
                        self.inner.namespace
                    )));
                }
                let mut c = ::redis::cmd("HSET");
                c.arg(&self.inner.meta_key).arg("test_fail").arg(n);
                c
            }
            None => {
                let mut c = ::redis::cmd("HDEL");
                c.arg(&self.inner.meta_key).arg("test_fail");
                c
            }
        };
        self.query(std::mem::take(&mut cmd)).await.map(|_| ())
    }

    /// TESTS ONLY: the chaos harness's planted bug. While on, a success is recorded even when
    /// its token is not the job's live lease (lua/prelude.lua, `test_skip_fencing`), so the
    /// checker must report a stale outcome. Refused unless the namespace is marked as a test
    /// namespace; the library refuses it there too.
    pub async fn skip_completion_fencing(&self, on: bool) -> Result<(), StoreError> {
        let mut marked = ::redis::cmd("HGET");
        marked.arg(&self.inner.meta_key).arg("test_namespace");
        let marked: Option<String> = ::redis::from_redis_value(self.query(marked).await?)
            .map_err(|e| StoreError::Decode(format!("test_namespace: {e}")))?;
        if on && marked.as_deref() != Some("1") {
            return Err(StoreError::Script(format!(
                "skipping fencing refused: namespace {:?} is not a test namespace",
                self.inner.namespace
            )));
        }
        let mut cmd = if on {
            let mut c = ::redis::cmd("HSET");
            c.arg(&self.inner.meta_key).arg("test_skip_fencing").arg(1);
            c
        } else {
            let mut c = ::redis::cmd("HDEL");
            c.arg(&self.inner.meta_key).arg("test_skip_fencing");
            c
        };
        self.query(std::mem::take(&mut cmd)).await.map(|_| ())
    }

    /// Sends one plain command on the request connection.
    async fn query(&self, cmd: ::redis::Cmd) -> Result<Value, StoreError> {
        self.query_raw(&cmd).await.map_err(store_error)
    }

    /// Sends commands in one round trip on the request connection (reads for `dump`).
    async fn query_pipe(&self, pipe: &::redis::Pipeline) -> Result<Vec<Value>, StoreError> {
        match &self.inner.requests {
            Requests::Node(conn) => pipe.query_async(&mut conn.clone()).await,
            Requests::Cluster(conn) => pipe.query_async(&mut conn.clone()).await,
        }
        .map_err(store_error)
    }

    /// Sends a command that names no key (SCAN) to the node holding the namespace.
    async fn query_slot(&self, cmd: ::redis::Cmd) -> Result<Value, StoreError> {
        use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        match &self.inner.requests {
            Requests::Node(_) => self.query(cmd).await,
            Requests::Cluster(conn) => {
                let route = Route::with_key(&self.inner.meta_key, SlotAddr::Master);
                conn.clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
                    .map_err(store_error)
            }
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.inner.requests, Requests::Cluster(_))
    }

    async fn query_raw(&self, cmd: &::redis::Cmd) -> Result<Value, ::redis::RedisError> {
        match &self.inner.requests {
            Requests::Node(conn) => cmd.query_async(&mut conn.clone()).await,
            Requests::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }

    async fn blpop(conn: &mut Blocking, key: &str, timeout: Duration) -> Result<bool, StoreError> {
        let mut cmd = ::redis::cmd("BLPOP");
        cmd.arg(key).arg(timeout.as_secs_f64());
        let value: Value = match conn {
            Blocking::Node(c) => cmd.query_async(c).await,
            Blocking::Cluster(c) => cmd.query_async(c).await,
        }
        .map_err(store_error)?;
        Ok(!matches!(value, Value::Nil))
    }
}

impl SharedStore for RedisStore {
    async fn apply(&self, request: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        self.apply_traced(request).await.map(|(reply, _)| reply)
    }

    /// BLPOP on the machine's wake list, on a connection of its own without a response
    /// timeout. A wake-up that came while nobody waited is still in the list (until it
    /// expires, or the machine's next idle claim clears it), so none is lost between a claim
    /// and the wait.
    async fn wait_wake(&self, machine: MachineId, timeout: Duration) -> Result<bool, StoreError> {
        let key = format!("{{{}}}:wake:{}", self.inner.namespace, machine.0);
        if timeout.is_zero() {
            let mut cmd = ::redis::cmd("LPOP");
            cmd.arg(&key);
            return Ok(!matches!(self.query(cmd).await?, Value::Nil));
        }
        let mut conn = self.inner.waits.take().await?;
        // Redis times the BLPOP out itself; this outer bound only catches a server that went
        // silent, and drops the connection (its BLPOP may still be pending there).
        let guard = timeout + Duration::from_secs(2);
        match tokio::time::timeout(guard, RedisStore::blpop(&mut conn, &key, timeout)).await {
            Ok(Ok(woken)) => {
                self.inner.waits.give_back(conn);
                Ok(woken)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        // XREAD after 0-0 reads from the oldest entry; it blocks only when there is none.
        let after = after.unwrap_or(EntryId { ms: 0, seq: 0 });
        self.wait_journal(Some(after), limit, timeout).await
    }
}
