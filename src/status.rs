//! The status endpoint of a sink-only node: the routes every node answers
//! (`GET /health`, `/health/live`, `/health/ready`, `/metrics`,
//! `/debug/latency`, `/debug/stats` and the on-call page `/debug/dashboard`)
//! on `host:port`.
//!
//! A node running the ingest role serves these from its HTTP shards; a sink
//! has no shards, so this small blocking server answers instead (and, on any
//! node, on the admin listener when `admin.port` is set), with the
//! shards' route table, bodies (`api::health`) and request reader
//! (`api::http::reader`), so the same request gets the same answer and the
//! same bounds on both node kinds. One request per connection.
//!
//! Bounds, so that no client can hold the listener (scrapes and probes must
//! get through while one trickles its request):
//! - each connection is served on a thread of its own, at most
//!   [`MAX_CONNECTIONS`] at once and [`MAX_CONNECTIONS_PER_PEER`] from one
//!   address; a connection over either is answered `503` at once (one
//!   non-blocking write) and closed;
//! - the whole request must arrive within [`REQUEST_DEADLINE`] of the accept,
//!   however it trickles in (`408`); the whole answer must be taken within
//!   [`WRITE_DEADLINE`]; the lingering close is bounded too, so one connection
//!   holds its thread for at most the sum of the three.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api::admin::{self, Listener};
use api::health::{self, Node};
use api::http::{BodyLimit, BodyStep, Bounds, ErrorCode, HeadStep, Method, Need, Reject, Response};
use api::routes::{self, Handler};
use engine_core::config::{AdminConfig, Config, Role};
use telemetry::{HealthCheck, Registry};
use tracing::{debug, warn};

/// Largest request head read; anything longer gets 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Connections served at once; a connection beyond is answered 503.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections one client address may hold at once (of `MAX_CONNECTIONS`),
/// so a single client cannot take every place.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// How long a client may take to send its whole request, from the accept.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// How long a client may take to read the whole answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes asked of the socket per read, at most.
const READ_BYTES: usize = 4 * 1024;
/// After the answer, unread bytes are discarded for at most this long and
/// this many, so closing does not reset the connection before the client
/// has read the answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (out of descriptors): no busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A sink-only node, as the shared health routes see it.
pub struct SinkNode {
    registry: Arc<Registry>,
    /// The sink's health.
    components: Vec<Arc<dyn HealthCheck>>,
    roles: Vec<Role>,
    retry_after_secs: u32,
}

impl Node for SinkNode {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn components(&self) -> &[Arc<dyn HealthCheck>] {
        &self.components
    }

    fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// A sink-only node has no other job: not ready while its sink cannot
    /// make progress (ClickHouse unreachable, or partitions stalled).
    fn readiness(&self) -> Result<(), &'static str> {
        self.components
            .iter()
            .find_map(|c| c.problem())
            .map_or(Ok(()), Err)
    }

    fn retry_after_secs(&self) -> u32 {
        self.retry_after_secs
    }

    fn health_members(&self, _: &mut Vec<u8>) {}
}

impl SinkNode {
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        components: Vec<Arc<dyn HealthCheck>>,
    ) -> Self {
        Self {
            registry,
            components,
            roles: config.roles.clone(),
            retry_after_secs: config.http.retry_after_secs,
        }
    }
}

/// What a status listener serves.
struct Served<N> {
    node: N,
    listener: Listener,
    admin: AdminConfig,
}

/// The places of a listener's connections.
#[derive(Debug, Default)]
struct Places {
    inner: Mutex<PlacesInner>,
}

#[derive(Debug, Default)]
struct PlacesInner {
    total: usize,
    /// Places held per peer address (no entry at zero).
    by_peer: HashMap<IpAddr, usize>,
}

/// A place held by one connection; dropping it frees the place.
#[derive(Debug)]
struct Place {
    places: Arc<Places>,
    peer: IpAddr,
}

impl Places {
    /// A place for a connection from `peer`; `None` when the listener or the
    /// peer holds its limit.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Place> {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let held = p.by_peer.get(&peer).copied().unwrap_or(0);
        if p.total >= MAX_CONNECTIONS || held >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        p.total += 1;
        p.by_peer.insert(peer, held + 1);
        Some(Place {
            places: self.clone(),
            peer,
        })
    }

    fn held(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut p = self.places.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.by_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Binds `host:port` and serves `node`'s routes on a thread, as `listener`
/// (the main port of a sink-only node, or any node's admin listener);
/// returns the bound address.
pub fn start<N: Node + Send + Sync + 'static>(
    host: &str,
    port: u16,
    node: N,
    listener: Listener,
    admin: &AdminConfig,
) -> Result<SocketAddr> {
    let socket =
        TcpListener::bind((host, port)).with_context(|| format!("binding {host}:{port}"))?;
    let addr = socket.local_addr()?;
    let served = Arc::new(Served {
        node,
        listener,
        admin: admin.clone(),
    });
    let name = match listener {
        Listener::Main => "status",
        Listener::Admin => "admin",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || accept_loop(&socket, &served, name))?;
    Ok(addr)
}

/// Accepts connections for ever, each served on a thread of its own while
/// it holds a place.
fn accept_loop<N: Node + Send + Sync + 'static>(
    socket: &TcpListener,
    served: &Arc<Served<N>>,
    name: &'static str,
) {
    let places = Arc::new(Places::default());
    loop {
        let (conn, peer) = match socket.accept() {
            Ok(c) => c,
            Err(e) => {
                debug!(%e, "status accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(place) = places.take(peer.ip()) else {
            debug!(%peer, held = places.held(), "status listener busy; connection refused");
            busy(conn);
            continue;
        };
        let served = served.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || {
                if let Err(e) = serve(conn, &served) {
                    debug!(%e, "status request failed");
                }
                drop(place);
            });
        // The closure (connection and place) is dropped with the error.
        if let Err(e) = spawned {
            warn!(%e, "cannot start a status connection thread");
            std::thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

/// Answers a connection there is no place for with 503, in one
/// non-blocking write (it must not hold the accepting thread), and closes.
fn busy(conn: TcpStream) {
    let r = Response::error(
        503,
        ErrorCode::ServerBusy,
        "too many connections to the status listener; try again",
    )
    .retry_after(1);
    let mut out = Vec::with_capacity(256);
    r.write_to(&mut out, false, false);
    if conn.set_nonblocking(true).is_ok() {
        let _ = (&conn).write(&out);
    }
    let _ = conn.shutdown(Shutdown::Write);
}

fn serve<N: Node>(mut conn: TcpStream, served: &Served<N>) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let Some((resp, head_only)) = answer(&mut conn, &mut buf, served, deadline)? else {
        return Ok(());
    };
    let mut out = Vec::with_capacity(256 + resp.body.len());
    resp.write_to(&mut out, false, head_only);
    write_all_by(&mut conn, &out, Instant::now() + WRITE_DEADLINE)?;
    linger(&mut conn)
}

/// Reads one request by `deadline` and builds its answer; `None` when the
/// client left before a whole head arrived.
fn answer<N: Node>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    served: &Served<N>,
    deadline: Instant,
) -> std::io::Result<Option<(Response, bool)>> {
    let node = &served.node;
    // No route takes a body here: each gets the bodiless drain at most.
    let bounds = Bounds::new(MAX_HEAD_BYTES);
    let head = loop {
        match bounds.read_head(buf) {
            HeadStep::Head(h) => break h,
            HeadStep::Reject(r) => return Ok(Some((r.response(), false))),
            HeadStep::NeedMore(need) => match read(conn, buf, need, deadline) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return timed_out(e, !buf.is_empty()),
            },
        }
    };
    let head_only = head.method == Method::Head;
    let route = routes::lookup(&buf[head.path.clone()]);
    let auth = head.authorization.clone().and_then(|r| buf.get(r));
    if let Some(refused) = admin::refusal(route, served.listener, auth, &served.admin) {
        return Ok(Some((refused, head_only)));
    }
    if route.handler == Handler::Ingest {
        let r = Response::error(
            404,
            ErrorCode::NotFound,
            "this node runs only the sink role; send events to an ingest node",
        );
        return Ok(Some((r, false)));
    }
    if let Some(refused) = route.refuse(head.method) {
        return Ok(Some((refused, head_only)));
    }
    let mut body = match bounds.body(&head, BodyLimit::Discard) {
        Ok(b) => b,
        Err(r) => return Ok(Some((r.response(), false))),
    };
    loop {
        match body.advance(buf) {
            BodyStep::Done { .. } => break,
            BodyStep::Data(_) => {}
            BodyStep::NeedMore(need) => match read(conn, buf, need, deadline) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return timed_out(e, true),
            },
            BodyStep::Reject(r) => return Ok(Some((r.response(), false))),
        }
    }
    let resp = match route.handler {
        Handler::Asset(a) if a.is_oncall() => api::assets::answer(a, &head, buf),
        Handler::Node(route) => health::answer(route, node),
        _ => Response::error(404, ErrorCode::NotFound, "no such endpoint"),
    };
    Ok(Some((resp, head_only)))
}

/// 408 for a request that started but did not arrive in time; other
/// errors end the connection.
fn timed_out(e: std::io::Error, started: bool) -> std::io::Result<Option<(Response, bool)>> {
    if started && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        let r = Reject::new(
            408,
            ErrorCode::RequestTimeout,
            "request not received in time",
        );
        return Ok(Some((r.response(), false)));
    }
    Err(e)
}

/// One read of at least one and at most `need.max` bytes, by `deadline`;
/// `false` at EOF.
fn read(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    need: Need,
    deadline: Instant,
) -> std::io::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    conn.set_read_timeout(Some(left))?;
    let len = buf.len();
    buf.resize(len.saturating_add(need.max.min(READ_BYTES)), 0);
    let got = conn.read(buf.get_mut(len..).unwrap_or_default());
    buf.truncate(len.saturating_add(*got.as_ref().unwrap_or(&0)));
    got.map(|n| n > 0)
}

/// Writes all of `bytes` by `deadline` (a client that reads slowly cannot
/// stretch it: each write waits only for what is left of the deadline).
fn write_all_by(conn: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.flush()
}

/// Half-closes, then discards what the client still sends (bounded).
fn linger(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink-only node's status listener on loopback, as `serve` starts it.
    fn listener() -> SocketAddr {
        let config = Config::load(None, []).unwrap();
        let node = SinkNode::new(&config, Arc::new(Registry::new()), Vec::new());
        start(
            "127.0.0.1",
            0,
            node,
            Listener::Main,
            &AdminConfig::default(),
        )
        .unwrap()
    }

    /// The status code of what `conn` answers, read until it closes
    /// (`None`: closed without an answer, or nothing within `within`).
    fn status_of(conn: &mut TcpStream, within: Duration) -> Option<u16> {
        conn.set_read_timeout(Some(within)).unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        let line = got.split(|&b| b == b'\n').next()?;
        let code = std::str::from_utf8(line).ok()?.split(' ').nth(1)?;
        code.parse().ok()
    }

    /// One whole request on a new connection: its status and how long it took.
    fn ask(addr: SocketAddr, path: &str) -> (Option<u16>, Duration) {
        let began = Instant::now();
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        (
            status_of(&mut conn, Duration::from_secs(10)),
            began.elapsed(),
        )
    }

    #[test]
    fn a_trickling_client_neither_holds_the_listener_nor_its_connection() {
        let addr = listener();
        assert_eq!(ask(addr, "/health/live").0, Some(200));
        // A byte every 1.9 s: each read is well inside any per-read timeout.
        let slow = std::thread::spawn(move || {
            let began = Instant::now();
            let mut conn = TcpStream::connect(addr).unwrap();
            let request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
            for &b in request {
                if conn.write_all(&[b]).is_err() {
                    break;
                }
                // Stops as soon as the server answered (or closed).
                conn.set_read_timeout(Some(Duration::from_millis(1900)))
                    .unwrap();
                let mut one = [0u8; 1];
                match conn.peek(&mut one) {
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            (
                status_of(&mut conn, Duration::from_secs(5)),
                began.elapsed(),
            )
        });
        // Scrapes and probes meanwhile are answered at once.
        std::thread::sleep(Duration::from_millis(300));
        for path in ["/health/live", "/metrics", "/health/ready"] {
            let (status, took) = ask(addr, path);
            assert_eq!(status, Some(200), "{path}");
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        }
        // The trickler gets 408 once the whole-request deadline is past.
        let (status, took) = slow.join().unwrap();
        assert_eq!(status, Some(408));
        assert!(
            took >= REQUEST_DEADLINE && took < REQUEST_DEADLINE + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn a_client_over_its_places_is_answered_503_at_once_and_served_later() {
        let addr = listener();
        // Silent connections take every place this address may hold.
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let (status, took) = ask(addr, "/health/live");
        assert_eq!(status, Some(503));
        assert!(took < Duration::from_secs(1), "{took:?}");
        // They end at the request deadline (silent: closed without 408),
        // and their places are free again.
        for mut conn in held {
            assert_eq!(status_of(&mut conn, REQUEST_DEADLINE * 3), None);
        }
        let mut served = false;
        for _ in 0..20 {
            if ask(addr, "/health/live").0 == Some(200) {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(served, "places never freed");
    }

    #[test]
    fn places_are_bounded_in_all_and_per_address() {
        let places = Arc::new(Places::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut held: Vec<Place> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| places.take(a).unwrap())
            .collect();
        assert!(places.take(a).is_none(), "one address, all its places");
        let mut i = 2u8;
        while places.held() < MAX_CONNECTIONS {
            held.push(places.take(IpAddr::from([192, 0, 2, i])).unwrap());
            i += 1;
        }
        assert!(
            places.take(IpAddr::from([198, 51, 100, 1])).is_none(),
            "all places"
        );
        drop(held.remove(0));
        assert!(places.take(a).is_some(), "a freed place, and taken again");
        drop(held);
        assert_eq!(places.held(), 0);
        assert!(places.inner.lock().unwrap().by_peer.is_empty());
    }

    #[test]
    fn a_slow_reader_of_the_answer_is_dropped_at_the_write_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _reader = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut b = l.accept().unwrap().0;
        // Far more than the socket buffers hold; the peer never reads.
        let big = vec![b'x'; 64 << 20];
        let began = Instant::now();
        let r = write_all_by(&mut b, &big, Instant::now() + Duration::from_millis(300));
        assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
    }
}
