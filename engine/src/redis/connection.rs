//! Connections to Redis: one for requests (reconnecting, with a response timeout), and a small
//! pool for blocking wake-up waits, which need connections WITHOUT a response timeout (redis-rs's
//! default of 500 ms abandons a blocking command) and one connection each (a BLPOP holds its
//! connection, so waits must not share one).

use crate::runtime::StoreError;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, TlsCertificates};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle blocking connections kept for reuse; more waits than this open and close their own.
const WAIT_POOL: usize = 64;

/// Where the store lives, parsed from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS).
    Node(String),
    /// `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` for TLS):
    /// the seed nodes, each as a `redis://` or `rediss://` URL carrying the credentials.
    Cluster(Vec<String>),
}

/// Parses a store URL; the error says what form is expected.
pub fn parse_url(url: &str) -> Result<Target, StoreError> {
    let bad = |why: &str| {
        StoreError::Connection(format!(
            "bad store url {:?}: {why}; expected redis://[user:password@]host:port[/db], \
             rediss://... (TLS) or redis+cluster://host:port[,host:port...]",
            redact(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => Ok(Target::Node(url.to_string())),
        "redis+cluster" | "rediss+cluster" => {
            let node_scheme = if scheme == "redis+cluster" {
                "redis"
            } else {
                "rediss"
            };
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            if hosts.is_empty() {
                return Err(bad("no cluster nodes"));
            }
            Ok(Target::Cluster(
                hosts
                    .split(',')
                    .map(|h| format!("{node_scheme}://{auth}{h}"))
                    .collect(),
            ))
        }
        other => Err(bad(&format!("unknown scheme {other:?}"))),
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) => {
            let auth = &rest[..at - scheme.len() - 3];
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}:***@{}", &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// What `connect` was told besides the URL.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// A CA certificate (PEM) to trust for `rediss://`, instead of the system roots.
    pub root_ca_pem: Option<Vec<u8>>,
    /// Response timeout for requests (not for wake-up waits). Default: the engine's
    /// `request_timeout`.
    pub response_timeout: Option<Duration>,
    /// Connect without recording or checking the namespace's engine configuration (for tools
    /// that read or replace it: `drover admin config`). Processes that send requests must not.
    pub skip_namespace_config: bool,
    /// Only to read the namespace and manage libraries (`drover inspect`, `drover admin gc`):
    /// connect without loading the function library, announcing it, or checking the
    /// namespace's layout (the reader checks it, and says so, itself). Requests sent anyway
    /// load the library when they find it missing.
    pub read_only: bool,
}

/// Maps a redis-rs error to the store's error, saying what went wrong in words an operator can
/// act on (an authentication failure names the URL's credentials).
pub fn store_error(e: RedisError) -> StoreError {
    let text = e.to_string();
    if e.is_timeout() {
        StoreError::Timeout
    } else if text.contains("WRONGPASS") || text.contains("NOAUTH") || text.contains("NOPERM") {
        StoreError::Connection(format!(
            "authentication failed (check the user and password in the store url): {text}"
        ))
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Connection(text)
    } else if e.code().is_some() {
        StoreError::Script(text)
    } else {
        StoreError::Connection(text)
    }
}

/// rustls needs a process-wide crypto provider; redis-rs does not pick one. Installing fails
/// harmlessly when another part of the process already installed one.
fn install_crypto_provider() {
    let _ = ::rustls::crypto::ring::default_provider().install_default();
}

fn node_client(url: &str, options: &ConnectOptions) -> Result<Client, StoreError> {
    if url.starts_with("rediss") {
        install_crypto_provider();
    }
    let client = match &options.root_ca_pem {
        Some(pem) => Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(url),
    };
    client.map_err(store_error)
}

fn cluster_client(
    nodes: &[String],
    options: &ConnectOptions,
    response_timeout: Option<Duration>,
) -> Result<ClusterClient, StoreError> {
    if nodes.iter().any(|n| n.starts_with("rediss")) {
        install_crypto_provider();
    }
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    builder = match response_timeout {
        Some(t) => builder.response_timeout(t),
        // A blocking wait may take as long as its caller asked; the caller bounds it.
        None => builder
            .response_timeout(Duration::from_secs(24 * 3600))
            .overall_response_timeout(None),
    };
    if let Some(pem) = &options.root_ca_pem {
        builder = builder.certs(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
    }
    builder.build().map_err(store_error)
}

/// The request connection: reconnects by itself, but does not retry the command that met a
/// drop (the caller does, since every request is idempotent).
#[derive(Clone)]
pub enum Requests {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection that may block (BLPOP) for as long as the caller's timeout.
pub enum Blocking {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

enum Factory {
    Node(Box<Client>),
    Cluster(Box<ClusterClient>),
}

/// Opens blocking connections on demand and keeps a few idle ones.
pub struct WaitPool {
    factory: Factory,
    idle: Mutex<Vec<Blocking>>,
}

impl WaitPool {
    pub async fn take(&self) -> Result<Blocking, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        match &self.factory {
            Factory::Node(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Blocking::Node)
                    .map_err(store_error)
            }
            Factory::Cluster(client) => client
                .get_async_connection()
                .await
                .map(Blocking::Cluster)
                .map_err(store_error),
        }
    }

    /// Returns a connection whose last command completed; a connection whose wait was cut
    /// short is dropped instead, since its BLPOP may still be pending on the server.
    pub fn give_back(&self, conn: Blocking) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < WAIT_POOL {
                idle.push(conn);
            }
        }
    }
}

/// Opens the request connection and the wait pool for `url`.
pub async fn open(
    url: &str,
    options: &ConnectOptions,
    response_timeout: Duration,
) -> Result<(Requests, Arc<WaitPool>), StoreError> {
    match parse_url(url)? {
        Target::Node(url) => {
            let client = node_client(&url, options)?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(1));
            let manager = ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map_err(store_error)?;
            let pool = WaitPool {
                factory: Factory::Node(Box::new(client)),
                idle: Mutex::new(Vec::new()),
            };
            Ok((Requests::Node(manager), Arc::new(pool)))
        }
        Target::Cluster(nodes) => {
            let requests = cluster_client(&nodes, options, Some(response_timeout))?
                .get_async_connection()
                .await
                .map_err(store_error)?;
            let pool = WaitPool {
                factory: Factory::Cluster(Box::new(cluster_client(&nodes, options, None)?)),
                idle: Mutex::new(Vec::new()),
            };
            Ok((Requests::Cluster(requests), Arc::new(pool)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_nodes_and_clusters() {
        assert_eq!(
            parse_url("redis://u:p@h:1/2"),
            Ok(Target::Node("redis://u:p@h:1/2".into()))
        );
        assert_eq!(
            parse_url("redis+cluster://u:p@a:1,b:2"),
            Ok(Target::Cluster(vec![
                "redis://u:p@a:1".into(),
                "redis://u:p@b:2".into()
            ]))
        );
        assert_eq!(
            parse_url("rediss+cluster://a:1"),
            Ok(Target::Cluster(vec!["rediss://a:1".into()]))
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis+cluster://").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
