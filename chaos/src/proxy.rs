//! A TCP fault proxy between one agent and Redis. The harness sets its faults; they stack (two
//! partitions on one machine heal when both have):
//!
//! - `delay`: every chunk is forwarded this long after it was read, in order (latency);
//! - `blackhole` toward Redis, from Redis, or both: bytes are held, not forwarded, until the
//!   hole heals (as a TCP connection survives a short partition; a client that gives up on its
//!   reply drops the connection itself). Toward Redis only: requests stall. From Redis only:
//!   requests are applied but their replies do not come back;
//! - `reset`: every open connection is closed now, and new ones are closed at once while the
//!   fault lasts.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to traffic now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Extra one-way delay, each direction.
    pub delay: Duration,
    /// Partitions holding traffic toward Redis / from Redis (counts: faults stack).
    pub hole_to_redis: u32,
    pub hole_from_redis: u32,
    /// Connection resets in force.
    pub resets: u32,
    /// Bumped to close every open connection.
    pub generation: u64,
}

/// Which way a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Both,
    ToRedis,
    FromRedis,
    /// Connections are reset (closed), and refused while it lasts.
    Reset,
}

impl Cut {
    pub fn name(self) -> &'static str {
        match self {
            Cut::Both => "both ways",
            Cut::ToRedis => "toward redis",
            Cut::FromRedis => "from redis",
            Cut::Reset => "connections reset",
        }
    }
}

/// The handle the harness keeps: set faults, read the address.
#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    faults: Arc<watch::Sender<Faults>>,
    /// Serialises read-modify-write of the faults.
    edit: Arc<Mutex<()>>,
    stop: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Listens on a free local port and forwards each connection to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16, base_delay: Duration) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (faults, _) = watch::channel(Faults {
            delay: base_delay,
            ..Faults::default()
        });
        let (stop, _) = watch::channel(false);
        let proxy = Proxy {
            port,
            faults: Arc::new(faults),
            edit: Arc::new(Mutex::new(())),
            stop: Arc::new(stop),
        };
        tokio::spawn(accept_loop(listener, upstream, proxy.clone()));
        Ok(proxy)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        self.faults.send_modify(change);
    }

    /// Starts a partition of kind `cut`.
    pub fn cut(&self, cut: Cut) {
        self.update(|f| match cut {
            Cut::Both => {
                f.hole_to_redis += 1;
                f.hole_from_redis += 1;
            }
            Cut::ToRedis => f.hole_to_redis += 1,
            Cut::FromRedis => f.hole_from_redis += 1,
            Cut::Reset => {
                f.resets += 1;
                f.generation += 1;
            }
        });
    }

    /// Ends a partition of kind `cut`.
    pub fn heal(&self, cut: Cut) {
        self.update(|f| match cut {
            Cut::Both => {
                f.hole_to_redis = f.hole_to_redis.saturating_sub(1);
                f.hole_from_redis = f.hole_from_redis.saturating_sub(1);
            }
            Cut::ToRedis => f.hole_to_redis = f.hole_to_redis.saturating_sub(1),
            Cut::FromRedis => f.hole_from_redis = f.hole_from_redis.saturating_sub(1),
            Cut::Reset => f.resets = f.resets.saturating_sub(1),
        });
    }

    pub fn add_delay(&self, delay: Duration) {
        self.update(|f| f.delay += delay);
    }

    pub fn remove_delay(&self, delay: Duration) {
        self.update(|f| f.delay = f.delay.saturating_sub(delay));
    }

    /// Stops listening and closes every connection.
    pub fn shut(&self) {
        self.stop.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, upstream: u16, proxy: Proxy) {
    let mut stop = proxy.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        if proxy.faults().resets > 0 {
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, upstream, proxy.clone()));
    }
}

/// One client connection: two pumps, until either side closes, a reset, or the proxy stops.
async fn connection(client: TcpStream, upstream: u16, proxy: Proxy) {
    let generation = proxy.faults().generation;
    let mut faults = proxy.faults.subscribe();
    let mut stop = proxy.stop.subscribe();
    // While a hole toward Redis is open, even the connection is held (as a SYN would be).
    if wait_open(&mut faults, Direction::ToRedis, generation)
        .await
        .is_err()
    {
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let to_redis = pump(
        client_read,
        server_write,
        proxy.faults.subscribe(),
        Direction::ToRedis,
        generation,
    );
    let from_redis = pump(
        server_read,
        client_write,
        proxy.faults.subscribe(),
        Direction::FromRedis,
        generation,
    );
    tokio::select! {
        _ = to_redis => {}
        _ = from_redis => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToRedis,
    FromRedis,
}

impl Direction {
    fn holed(self, f: &Faults) -> bool {
        match self {
            Direction::ToRedis => f.hole_to_redis > 0,
            Direction::FromRedis => f.hole_from_redis > 0,
        }
    }
}

/// The connection was reset: its generation passed.
struct Reset;

/// Waits until `direction` is not holed; `Err` if the connection was reset meanwhile.
async fn wait_open(
    faults: &mut watch::Receiver<Faults>,
    direction: Direction,
    generation: u64,
) -> Result<(), Reset> {
    let open = faults
        .wait_for(|f| f.generation != generation || !direction.holed(f))
        .await
        .map_err(|_| Reset)?;
    if open.generation != generation {
        return Err(Reset);
    }
    Ok(())
}

/// Reads from `from` and writes to `to` each chunk `delay` after it was read, holding it while
/// the direction is holed. Ends when either side closes or the connection is reset.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<Faults>,
    direction: Direction,
    generation: u64,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reset_watch = faults.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = reset_watch.borrow().delay;
            if chunks
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let mut writer_faults = faults.clone();
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if wait_open(&mut writer_faults, direction, generation)
                .await
                .is_err()
            {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let mut resets = faults;
    let reset = async move {
        let _ = resets.wait_for(|f| f.generation != generation).await;
    };
    tokio::select! {
        // The reader ends first on a close: let the writer flush what it holds.
        _ = async { tokio::join!(reader, writer) } => {}
        _ = reset => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(start.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_delays_holds_and_resets() {
        let proxy = Proxy::start(echo_server().await, Duration::ZERO)
            .await
            .unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let quick = round_trip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(quick < Duration::from_millis(100), "pass: {quick:?}");

        proxy.add_delay(Duration::from_millis(100));
        let slow = round_trip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(
            slow >= Duration::from_millis(200),
            "two delayed ways: {slow:?}"
        );
        proxy.remove_delay(Duration::from_millis(100));

        // A one-way hole from Redis: the request goes through, the reply is held until healed.
        proxy.cut(Cut::FromRedis);
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        proxy.heal(Cut::FromRedis);
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("the held reply arrives after the heal")
            .unwrap();
        assert_eq!(&buf, b"ping");

        // Both ways, stacked twice: one heal is not enough.
        proxy.cut(Cut::Both);
        proxy.cut(Cut::Both);
        assert!(round_trip(&mut s, Duration::from_millis(200))
            .await
            .is_none());
        proxy.heal(Cut::Both);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut buf))
                .await
                .is_err()
        );
        proxy.heal(Cut::Both);
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("healed")
            .unwrap();

        // A reset closes the open connection and refuses new ones while it lasts.
        proxy.cut(Cut::Reset);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        assert!(round_trip(&mut fresh, Duration::from_millis(300))
            .await
            .is_none());
        proxy.heal(Cut::Reset);
        let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        assert!(round_trip(&mut fresh, Duration::from_secs(2))
            .await
            .is_some());
        proxy.shut();
    }
}
