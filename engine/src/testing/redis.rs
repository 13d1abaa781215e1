//! Throwaway Redis servers for tests: each on a free port, in its own temporary directory, with
//! an append-only file fsynced on every write, so a test can SIGKILL and restart it and see
//! what a real crash keeps. Dependency-free on purpose (std only), so any test can use it.
//!
//! These helpers panic with a clear message when something is wrong with the machine (no
//! `redis-server`, a server that never answers): they are for tests, where that is the report.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SERVER: &str = "redis-server";
const CLI: &str = "redis-cli";
/// How long a server may take to answer PING after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A port nobody listens on right now (the OS picks; the listener is closed at once).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local address").port()
}

/// A fresh directory under the system temp dir, removed by the owner's `Drop`.
fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("drover-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Sends one inline command over plain TCP and returns the first reply line (enough for PING
/// and for `CLUSTER INFO`'s bulk reply, which we read whole).
fn raw_command(port: u16, command: &str, auth: Option<(&str, &str)>) -> Option<String> {
    let addr = format!("127.0.0.1:{port}");
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .ok()?;
    if let Some((user, pass)) = auth {
        stream
            .write_all(format!("AUTH {user} {pass}\r\n").as_bytes())
            .ok()?;
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).ok()?;
        if !buf[..n].starts_with(b"+OK") {
            return None;
        }
    }
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the reply looks complete: a status line, or a bulk string's full length.
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.strip_prefix('$') {
            let Some((len, body)) = rest.split_once("\r\n") else {
                continue;
            };
            let len: usize = len.parse().ok()?;
            if body.len() >= len {
                break;
            }
        } else if text.ends_with("\r\n") {
            break;
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

fn spawn_server(args: &[String], log: &Path) -> Child {
    // Appended to across restarts, so a failure shows the whole story.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("create redis log {}: {e}", log.display()));
    Command::new(SERVER)
        .args(args)
        .stdout(Stdio::from(
            log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("clone log handle: {e}")),
        ))
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not start `{SERVER}` ({e}); install Redis 7 (apt-get install redis-server) \
                 so that `{SERVER}` is on PATH"
            )
        })
}

/// One `redis-server` process on 127.0.0.1, owned by a test.
pub struct RedisServer {
    pub port: u16,
    /// `redis://127.0.0.1:PORT` (or `rediss://` for a TLS server started with `start_tls`).
    pub url: String,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Credentials for readiness checks of an ACL-protected server.
    ping_auth: Option<(String, String)>,
    /// TLS servers are checked for readiness with `redis-cli --tls`.
    tls: Option<TlsFiles>,
}

/// Certificate files for a TLS server (PEM), made by the test.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl RedisServer {
    /// A server with AOF on, fsynced on every write.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra arguments appended to the defaults (later arguments win).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        RedisServer::launch(extra_args, None, None)
    }

    /// A server whose default user is disabled and `user`/`password` has every right.
    pub fn start_with_acl(user: &str, password: &str) -> RedisServer {
        // Each word a separate argument: redis-server joins the words after `--user` into one
        // directive, whereas one argument with spaces would be a (bad) user name.
        let secret = format!(">{password}");
        let extra = [
            "--user", "default", "off", "--user", user, "on", &secret, "~*", "&*", "+@all",
        ];
        RedisServer::launch(&extra, Some((user.into(), password.into())), None)
    }

    /// A TLS-only server (`--port 0`) using these certificate files; clients need not present a
    /// certificate. Panics if this `redis-server` was built without TLS.
    pub fn start_tls(files: TlsFiles) -> RedisServer {
        let port = free_port();
        let args = [
            "--port".to_string(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            files.cert.display().to_string(),
            "--tls-key-file".into(),
            files.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            files.ca_cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = RedisServer::launch_on(port, &args, None, Some(files));
        server.url = format!("rediss://127.0.0.1:{port}");
        server
    }

    fn launch(
        extra_args: &[&str],
        ping_auth: Option<(String, String)>,
        tls: Option<TlsFiles>,
    ) -> RedisServer {
        RedisServer::launch_on(free_port(), extra_args, ping_auth, tls)
    }

    fn launch_on(
        port: u16,
        extra_args: &[&str],
        ping_auth: Option<(String, String)>,
        tls: Option<TlsFiles>,
    ) -> RedisServer {
        let dir = temp_dir("redis");
        let mut args: Vec<String> = [
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.display().to_string());
        args.extend(["--port".to_string(), port.to_string()]);
        args.extend(["--bind".to_string(), "127.0.0.1".to_string()]);
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            args,
            child: None,
            ping_auth,
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.child = Some(spawn_server(&self.args, &self.dir.join("redis.log")));
        self.wait_ready();
    }

    fn ping(&self) -> bool {
        match &self.tls {
            None => {
                let auth = self
                    .ping_auth
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str()));
                raw_command(self.port, "PING", auth).is_some_and(|r| r.starts_with("+PONG"))
            }
            Some(files) => Command::new(CLI)
                .args(["--tls", "--cacert"])
                .arg(&files.ca_cert)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")),
        }
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "redis-server on port {} exited with {status} while starting; log:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no shutdown, no final fsync, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory, so it reloads its append-only file;
    /// returns once it answers PING (AOF loaded).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` masters with `replicas_per_master` replicas each, all on
/// 127.0.0.1, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        let total = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                    // AOF fsync on every write is too slow for 6 nodes on a busy test box, and
                    // a cluster's durability story is replication anyway.
                    "--appendfsync",
                    "everysec",
                    // A replica may take over however long ago it last heard from its master
                    // (the default refuses after a slow first sync on a busy test machine).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--repl-diskless-sync",
                    "yes",
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let mut command = Command::new(CLI);
        command.arg("--cluster").arg("create");
        for node in &nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        command
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes");
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("could not run `{CLI} --cluster create`: {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30));
        cluster.wait_replicas_online(replicas_per_master, Duration::from_secs(60));
        cluster
    }

    /// Waits until every master has `replicas` replicas online (synced), so a failover test
    /// does not kill a master whose replica is still copying its first snapshot.
    pub fn wait_replicas_online(&self, replicas: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let mut masters = 0;
            let mut online = 0;
            for node in &self.nodes {
                let Some(info) = raw_command(node.port, "INFO replication", None) else {
                    continue;
                };
                if info.contains("role:master") {
                    masters += 1;
                    online += info.matches("state=online").count().min(replicas);
                }
            }
            if masters > 0 && online == masters * replicas {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "replicas not online after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`, the form `RedisStore::connect` takes.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Every node's `redis://` url.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// `CLUSTER INFO` of node `i`, or `None` when it does not answer.
    pub fn info(&self, i: usize) -> Option<String> {
        raw_command(self.nodes[i].port, "CLUSTER INFO", None)
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let all_ok = self.nodes.iter().enumerate().all(|(i, node)| {
                node.child.is_none()
                    || self
                        .info(i)
                        .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if all_ok {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "cluster not ok after {timeout:?}: {:?}",
                self.info(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the node that is master for `key`'s slot now.
    pub fn master_for(&self, key: &str) -> Option<usize> {
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            let reply = raw_command(node.port, &format!("CLUSTER KEYSLOT {key}"), None)?;
            let slot: u16 = reply.trim().trim_start_matches(':').parse().ok()?;
            let nodes = Command::new(CLI)
                .args(["-p", &node.port.to_string(), "CLUSTER", "NODES"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&nodes.stdout).into_owned();
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let owns = fields[8..].iter().any(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot)
                            && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => range.parse::<u16>().is_ok_and(|s| s == slot),
                });
                if owns {
                    let port: u16 = fields[1]
                        .split(['@', ':'])
                        .nth(1)
                        .and_then(|p| p.parse().ok())?;
                    return self.nodes.iter().position(|n| n.port == port);
                }
            }
            return None;
        }
        None
    }

    /// SIGKILLs node `i` (a master, when the caller chose one) and returns its port.
    pub fn kill_master(&mut self, i: usize) -> u16 {
        self.nodes[i].kill();
        self.nodes[i].port
    }
}
