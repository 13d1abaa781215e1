//! The run's `redis-server`: on a free port, in the run's directory, with the persistence the
//! scenario's `[redis]` asks for. A `redis_restart` SIGKILLs it and starts it again on the same
//! port from its own files, so what survives is what a real crash keeps.

use crate::procs::Children;
use drover_sim::scenario::Persistence;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it starts (a large AOF replays first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error(
        "could not start `redis-server` ({0}); install Redis 7 or later so that it is on PATH"
    )]
    Spawn(std::io::Error),
    #[error("redis-server on port {port} did not answer PING within {secs}s; see {log}")]
    NoAnswer { port: u16, secs: u64, log: String },
    #[error("redis log {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
}

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    persistence: Persistence,
    pid: Option<u32>,
}

impl RedisServer {
    /// Starts a server in `dir` (its files and log go there) and waits until it answers.
    pub async fn start(
        children: &Children,
        dir: &Path,
        persistence: Persistence,
    ) -> Result<RedisServer, RedisError> {
        let mut server = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            persistence,
            pid: None,
        };
        server.launch(children).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown save, no final fsync.
    pub fn crash(&mut self, children: &Children) {
        if let Some(pid) = self.pid.take() {
            children.kill(pid);
        }
    }

    /// Starts it again on the same port from its own files.
    pub async fn restart(&mut self, children: &Children) -> Result<(), RedisError> {
        self.launch(children).await
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.dir.display().to_string(),
            "--daemonize",
            "no",
            "--save",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let aof: &[&str] = match self.persistence {
            Persistence::None => &["--appendonly", "no"],
            Persistence::AofEverysec => &["--appendonly", "yes", "--appendfsync", "everysec"],
            Persistence::AofAlways => &["--appendonly", "yes", "--appendfsync", "always"],
        };
        args.extend(aof.iter().map(|s| s.to_string()));
        args
    }

    async fn launch(&mut self, children: &Children) -> Result<(), RedisError> {
        let log_path = self.dir.join("redis.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| RedisError::Log {
                path: log_path.display().to_string(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| RedisError::Log {
            path: log_path.display().to_string(),
            source,
        })?;
        let mut command = Command::new("redis-server");
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let pid = children.spawn(&mut command).map_err(RedisError::Spawn)?;
        self.pid = Some(pid);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ping(self.port).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(RedisError::NoAnswer {
            port: self.port,
            secs: START_TIMEOUT.as_secs(),
            log: log_path.display().to_string(),
        })
    }
}

/// Whether a server on `port` answers PING with PONG (not LOADING).
pub async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A port nobody listens on right now (the OS picks; the listener is closed at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
