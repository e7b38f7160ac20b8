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
//! same bounds on both node kinds. One request per connection, served in
//! turn: scrapes and probes are rare and cheap.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api::admin::{self, Listener};
use api::health::{self, Node};
use api::http::{BodyStep, Bounds, HeadStep, Method, Need, Reject, Response, Route};
use engine_core::config::{AdminConfig, Config, Role};
use telemetry::{HealthCheck, Registry};
use tracing::debug;

/// Largest request head read; anything longer gets 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes asked of the socket per read, at most.
const READ_BYTES: usize = 4 * 1024;
/// After the answer, unread bytes are discarded for at most this long and
/// this many, so closing does not reset the connection before the client
/// has read the answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

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
    let served = Served {
        node,
        listener,
        admin: admin.clone(),
    };
    let name = match listener {
        Listener::Main => "status",
        Listener::Admin => "admin",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in socket.incoming().flatten() {
                if let Err(e) = serve(conn, &served) {
                    debug!(%e, "status request failed");
                }
            }
        })?;
    Ok(addr)
}

fn serve<N: Node>(mut conn: TcpStream, served: &Served<N>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let Some((resp, head_only)) = answer(&mut conn, &mut buf, served)? else {
        return Ok(());
    };
    let mut out = Vec::with_capacity(256 + resp.body.len());
    resp.write_to(&mut out, false, head_only);
    conn.write_all(&out)?;
    conn.flush()?;
    linger(&mut conn)
}

/// Reads one request and builds its answer; `None` when the client left
/// before a whole head arrived.
fn answer<N: Node>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    served: &Served<N>,
) -> std::io::Result<Option<(Response, bool)>> {
    let node = &served.node;
    // No route takes a body here: each gets the bodiless drain at most.
    let bounds = Bounds::new(MAX_HEAD_BYTES, 0);
    let head = loop {
        match bounds.read_head(buf) {
            HeadStep::Head(h) => break h,
            HeadStep::Reject(r) => return Ok(Some((r.response(), false))),
            HeadStep::NeedMore(need) => match read(conn, buf, need) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return timed_out(e, !buf.is_empty()),
            },
        }
    };
    let head_only = head.method == Method::Head;
    let auth = head.authorization.clone().map(|r| &buf[r]);
    if let Some(refused) = admin::refusal(head.route, served.listener, auth, &served.admin) {
        return Ok(Some((refused, head_only)));
    }
    if head.route == Route::Ingest {
        let r = Response::error(
            404,
            "not_found",
            "this node runs only the sink role; send events to an ingest node",
        );
        return Ok(Some((r, false)));
    }
    if let Some(refused) = head.route.refuse(head.method) {
        return Ok(Some((refused, head_only)));
    }
    let mut body = match bounds.body(&head) {
        Ok(b) => b,
        Err(r) => return Ok(Some((r.response(), false))),
    };
    loop {
        match body.advance(buf) {
            BodyStep::Done { .. } => break,
            BodyStep::Data(_) => {}
            BodyStep::NeedMore(need) => match read(conn, buf, need) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return timed_out(e, true),
            },
            BodyStep::Reject(r) => return Ok(Some((r.response(), false))),
        }
    }
    let resp = match head.route {
        Route::Asset(a) if a.is_oncall() => api::assets::answer(a, &head, buf),
        route => health::answer(route, node)
            .unwrap_or_else(|| Response::error(404, "not_found", "no such endpoint")),
    };
    Ok(Some((resp, head_only)))
}

/// 408 for a request that started but did not arrive in time; other
/// errors end the connection.
fn timed_out(e: std::io::Error, started: bool) -> std::io::Result<Option<(Response, bool)>> {
    if started && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        let r = Reject::new(408, "request_timeout", "request not received in time");
        return Ok(Some((r.response(), false)));
    }
    Err(e)
}

/// One read of at least one and at most `need.max` bytes; `false` at EOF.
fn read(conn: &mut TcpStream, buf: &mut Vec<u8>, need: Need) -> std::io::Result<bool> {
    let len = buf.len();
    buf.resize(len + need.max.min(READ_BYTES), 0);
    let got = conn.read(&mut buf[len..]);
    buf.truncate(len + *got.as_ref().unwrap_or(&0));
    got.map(|n| n > 0)
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
