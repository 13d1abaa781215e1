//! Drover's function libraries on a server: which are loaded, which are in use, and removing
//! the old ones.
//!
//! A library is named after its code (`drover_<hash>`, scripts.rs), so every upgrade loads a
//! new one beside the old, and nothing removes the old. So a process announces the library it
//! uses: on connect, then once an hour while it lives (a background task, off the request
//! path), it writes `HSET drover:libraries <library> <unix seconds>`. That key is server-wide,
//! outside every namespace, because libraries are per server, not per namespace. `drover admin
//! gc` deletes every `drover_*` library but the current one that has not been announced within
//! a bound (24 hours by default), or never was.
//!
//! Deleting a library a process still uses costs that process one reload: a call that meets
//! "Function not found" loads its library again (`RedisStore::apply_traced`). So a process
//! that cannot announce (an ACL user without write access to `drover:libraries`; the failure
//! is logged, not fatal) is slowed, never broken, by a gc.

use super::connection::{store_error, Requests};
use super::{scripts, RedisStore};
use crate::runtime::StoreError;
use ::redis::Value;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server-wide hash of announcements: library -> unix seconds of its last announcement.
pub const ANNOUNCE_KEY: &str = "drover:libraries";
/// How often a process announces its library again.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3600);
/// The prefix of every Drover library's name.
pub const PREFIX: &str = "drover_";

/// The name of the library this build loads (and of its one function).
pub fn current() -> &'static str {
    &scripts::library().function
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Drover library loaded on the server (on a cluster: on at least one master).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Library {
    pub name: String,
    /// This build's library.
    pub current: bool,
    /// Unix seconds of its last announcement, if any.
    pub announced: Option<u64>,
    /// The servers (cluster masters, by address; "server" for one node) that hold it.
    pub loaded_on: Vec<String>,
}

/// What `gc` did, or would do, with one library.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub library: Library,
    /// "current", "in use" (announced within the bound), "deleted" or "would delete".
    pub action: &'static str,
}

impl RedisStore {
    /// Records that this process uses this build's library (see the module's comment).
    pub async fn announce_library(&self) -> Result<(), StoreError> {
        let mut hset = ::redis::cmd("HSET");
        hset.arg(ANNOUNCE_KEY).arg(current()).arg(unix_now());
        self.query(hset).await.map(|_| ())
    }

    /// Announces now, then every `ANNOUNCE_EVERY` until the last clone of this store is
    /// dropped. Failures are logged: announcing is a courtesy to `drover admin gc`.
    pub(super) async fn start_announcing(&self) {
        if let Err(e) = self.announce_library().await {
            tracing::warn!(error = %e, key = ANNOUNCE_KEY, "could not announce the function library in use (drover admin gc may delete it; it is reloaded when missing)");
        }
        let weak: Weak<super::Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ANNOUNCE_EVERY).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let store = RedisStore { inner };
                if let Err(e) = store.announce_library().await {
                    tracing::warn!(error = %e, "could not announce the function library in use");
                }
            }
        });
    }

    /// Every `drover_*` library on the server (every master of a cluster), with its last
    /// announcement.
    pub async fn libraries(&self) -> Result<Vec<Library>, StoreError> {
        // Every library, filtered here: LIBRARYNAME's matching differs between versions, and
        // a server holds few libraries.
        let mut list = ::redis::cmd("FUNCTION");
        list.arg("LIST");
        let mut found: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (server, reply) in self.on_every_master(list).await? {
            for name in library_names(&reply)? {
                if name.starts_with(PREFIX) {
                    found.entry(name).or_default().push(server.clone());
                }
            }
        }
        let mut read = ::redis::cmd("HGETALL");
        read.arg(ANNOUNCE_KEY);
        let announced: std::collections::BTreeMap<String, u64> =
            ::redis::from_redis_value(self.query(read).await?)
                .map_err(|e| StoreError::Decode(format!("{ANNOUNCE_KEY}: {e}")))?;
        Ok(found
            .into_iter()
            .map(|(name, loaded_on)| Library {
                current: name == current(),
                announced: announced.get(&name).copied(),
                name,
                loaded_on,
            })
            .collect())
    }

    /// Deletes every Drover library but this build's that was not announced within
    /// `older_than` of `now` (unix seconds), or never; with `dry_run`, only says which.
    /// Announcements of libraries no longer loaded anywhere are forgotten once as old.
    pub async fn gc_libraries(
        &self,
        older_than: Duration,
        now: u64,
        dry_run: bool,
    ) -> Result<Vec<Verdict>, StoreError> {
        let bound = now.saturating_sub(older_than.as_secs());
        let libraries = self.libraries().await?;
        let mut verdicts = Vec::new();
        for library in libraries {
            let action = if library.current {
                "current"
            } else if library.announced.is_some_and(|t| t >= bound) {
                "in use"
            } else if dry_run {
                "would delete"
            } else {
                for server in &library.loaded_on {
                    let mut delete = ::redis::cmd("FUNCTION");
                    delete.arg("DELETE").arg(&library.name);
                    self.on_master(server, delete).await?;
                }
                let mut forget = ::redis::cmd("HDEL");
                forget.arg(ANNOUNCE_KEY).arg(&library.name);
                self.query(forget).await?;
                "deleted"
            };
            verdicts.push(Verdict { library, action });
        }
        if !dry_run {
            // Announcements of libraries gone from the server, past the bound.
            let loaded: Vec<&str> = verdicts.iter().map(|v| v.library.name.as_str()).collect();
            let mut read = ::redis::cmd("HGETALL");
            read.arg(ANNOUNCE_KEY);
            let announced: Vec<(String, u64)> =
                ::redis::from_redis_value(self.query(read).await?).unwrap_or_default();
            for (name, at) in announced {
                if at < bound && !loaded.contains(&name.as_str()) && name != current() {
                    let mut forget = ::redis::cmd("HDEL");
                    forget.arg(ANNOUNCE_KEY).arg(&name);
                    self.query(forget).await?;
                }
            }
        }
        Ok(verdicts)
    }

    /// `cmd` on the one server, or on every master of a cluster: each server's name (its
    /// address on a cluster) with its reply.
    async fn on_every_master(&self, cmd: ::redis::Cmd) -> Result<Vec<(String, Value)>, StoreError> {
        use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
        match &self.inner.requests {
            Requests::Node(_) => Ok(vec![("server".to_string(), self.query(cmd).await?)]),
            Requests::Cluster(conn) => {
                let reply = conn
                    .clone()
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await
                    .map_err(store_error)?;
                match reply {
                    Value::Map(pairs) => pairs
                        .into_iter()
                        .map(|(addr, value)| {
                            let addr: String = ::redis::from_redis_value(addr)
                                .map_err(|e| StoreError::Decode(e.to_string()))?;
                            match value {
                                Value::ServerError(e) => {
                                    Err(StoreError::Script(format!("{addr}: {e:?}")))
                                }
                                value => Ok((addr, value)),
                            }
                        })
                        .collect(),
                    other => Err(StoreError::Decode(format!(
                        "per-master reply is not a map: {other:?}"
                    ))),
                }
            }
        }
    }

    /// `cmd` on one server named as `on_every_master` names it.
    async fn on_master(&self, server: &str, cmd: ::redis::Cmd) -> Result<Value, StoreError> {
        use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        match &self.inner.requests {
            Requests::Node(_) => self.query(cmd).await,
            Requests::Cluster(conn) => {
                let (host, port) = server
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                    .ok_or_else(|| StoreError::Decode(format!("server address {server:?}")))?;
                conn.clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                    )
                    .await
                    .map_err(store_error)
            }
        }
    }
}

/// The libraries' names in a FUNCTION LIST reply (RESP2: each library a flat array of field,
/// value; RESP3: a map).
pub fn library_names(reply: &Value) -> Result<Vec<String>, StoreError> {
    let bad = || StoreError::Decode(format!("FUNCTION LIST reply: {reply:?}"));
    let Value::Array(libraries) = reply else {
        return Err(bad());
    };
    let mut names = Vec::new();
    for library in libraries {
        let pairs: Vec<(&Value, &Value)> = match library {
            Value::Array(items) => items.chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            _ => return Err(bad()),
        };
        for (field, value) in pairs {
            let field: String = ::redis::from_redis_value_ref(field).map_err(|_| bad())?;
            if field == "library_name" {
                names.push(::redis::from_redis_value_ref(value).map_err(|_| bad())?);
            }
        }
    }
    Ok(names)
}
