//! The accept loop of `tocsin serve`, instead of `axum::serve`, for what a
//! server on the open internet needs and `axum::serve` does not offer:
//!
//! - a cap on open connections (`--max-connections`): past it, new
//!   connections wait in the kernel's backlog;
//! - a cap per client address (`--max-connections-per-address`): past it,
//!   a new connection from that address is closed at once, so one client
//!   cannot hold the others' share (trusted proxies and
//!   `--rate-limit-exempt` are not capped);
//! - a header-read timeout (`--header-read-timeout`) from `accept`, for
//!   both protocols: the first request must have begun within it (a silent
//!   socket, or one that sent half of HTTP/2's preface, is closed); after
//!   that hyper's own timer holds each HTTP/1 request head to it, counted
//!   from the moment the connection is idle again;
//! - an idle timeout for every connection, HTTP/2 included
//!   (`--idle-timeout`): no request in flight for that long closes it;
//! - the client's address in each request (for the per-address limits);
//! - a graceful shutdown with a deadline (`--shutdown-timeout`): connections
//!   finish their requests, then are dropped when it passes.
//!
//! The whole-request timeout is a middleware (`api::request_timeout`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// The most connections open at once.
    pub max_connections: usize,
    /// The most connections open at once from one client address (an IPv6
    /// /64 counts as one address).
    pub max_per_address: usize,
    /// An HTTP/1 request's head must arrive within this of the connection
    /// turning idle.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutting down waits for open connections to finish.
    pub shutdown_timeout: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// When a connection last had something to do, and whether it has now.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// Requests begun on it: none yet means the header-read timeout still
    /// runs from `accept`.
    requests: AtomicU64,
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress {
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; dropping it gives the place back.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A place for `ip`, unless it holds `max` already.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let ip = crate::limits::key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { table: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// connections finish for at most `limits.shutdown_timeout`. Addresses in
/// `uncapped` have no per-address cap.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    uncapped: Arc<[IpNet]>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // An IPv4 client of a dual-stack socket comes as ::ffff:a.b.c.d.
        let slot = if uncapped.iter().any(|n| n.contains(&peer.ip().to_canonical())) {
            None
        } else {
            match per_address.enter(peer.ip(), limits.max_per_address.max(1)) {
                Some(slot) => Some(slot),
                None => {
                    // Closed at once: waiting would hold a global place.
                    tracing::debug!(%peer, "connection refused: its address holds --max-connections-per-address");
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, stop) = (app.clone(), stop_rx.clone());
        connections.spawn(async move {
            connection(stream, peer, app, limits, stop).await;
            drop((permit, slot));
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    let drained =
        tokio::time::timeout(limits.shutdown_timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open, timeout = ?limits.shutdown_timeout, "connections still open at the shutdown deadline: closed");
        connections.abort_all();
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ListenLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        seen.requests.fetch_add(1, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        let (app, seen) = (app.clone(), seen.clone());
        async move {
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            seen.touch();
            seen.in_flight.fetch_sub(1, Ordering::Relaxed);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(100)));
    // Before its first request, a connection is on the header-read clock,
    // whichever protocol it turns out to speak (hyper's HTTP/1 timer starts
    // only once the protocol is known, and HTTP/2 has none).
    let first_request = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_request);
    let (mut closing, mut first_checked) = (false, false);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // (A `select!` condition is read once per pass of the loop,
            // which may last long: whether a request came is asked here.)
            _ = &mut first_request, if !first_checked => {
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "no request within the header-read timeout of accept: closed");
                    return;
                }
                first_checked = true;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
