//! One connection: keep-alive, pipelining, bounded reads under deadlines.
//!
//! The connection owns one read buffer and the socket; what the bytes mean is
//! decided by [`crate::reader`], which has no I/O. A request's head and
//! (length-framed) body are parsed in place in the buffer; pipelined requests
//! that arrived with it stay in the buffer and are served next, in order.
//! Bounds: the head may not exceed `http.max_header_bytes` (431), the body
//! `http.max_body_bytes` on `/ingest` and a small drain elsewhere (413). Time:
//! between requests a connection may idle `http.idle_timeout_ms`; once a
//! request's first byte arrived, the whole request must arrive within
//! `http.read_timeout_ms` (else 408), so a slow client cannot hold a shard.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::{probe, Framing, Method, RequestHead, Response, Route};
use crate::ingest::{ingest, precheck, Shard};
use crate::reader::{read_body, read_head, Body, BodyStep, Bounds, HeadStep, Reject};
use crate::state::Authed;

/// Read buffer kept by an idle connection; larger buffers shrink back to it.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;
/// Bytes asked of the socket per read, at least.
const READ_CHUNK_BYTES: usize = 16 * 1024;

enum ReadError {
    Closed,
    TimedOut,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    /// Reads more bytes, at most `want` more are needed; fails on EOF/timeout.
    async fn fill(&mut self, want: usize, deadline: Instant) -> Result<(), ReadError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::TimedOut);
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < READ_CHUNK_BYTES.min(want.max(1)) || spare == 0 {
            self.buf.reserve(want.clamp(READ_CHUNK_BYTES, 1 << 20));
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let read = self.stream.read(buf.slice_mut(len..));
        match monoio::time::timeout(deadline - now, read).await {
            Ok((Ok(n), slice)) => {
                self.buf = slice.into_inner();
                if n == 0 {
                    Err(ReadError::Closed)
                } else {
                    Ok(())
                }
            }
            Ok((Err(_), _)) => Err(ReadError::Closed),
            Err(_) => Err(ReadError::TimedOut),
        }
    }

    async fn send(&mut self, resp: &Response, keep_alive: bool, head_only: bool) -> bool {
        self.out.clear();
        resp.write_to(&mut self.out, keep_alive, head_only);
        let out = std::mem::take(&mut self.out);
        let (res, out) = self.stream.write_all(out).await;
        self.out = out;
        res.is_ok()
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, shard: Rc<Shard>) {
    let _ = stream.set_nodelay(true);
    let counters = shard.state.metrics.shard(shard.index);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(IDLE_BUFFER_BYTES),
        out: Vec::with_capacity(1024),
    };
    serve_requests(&mut conn, &shard).await;
    counters.connections_open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_requests(conn: &mut Conn, shard: &Shard) {
    let http = &shard.state.config.http;
    let idle = Duration::from_millis(http.idle_timeout_ms);
    let read_timeout = Duration::from_millis(http.read_timeout_ms);
    let bounds = Bounds {
        max_header_bytes: http.max_header_bytes,
        max_body_bytes: http.max_body_bytes,
    };
    loop {
        // Head.
        let mut started = (!conn.buf.is_empty()).then(Instant::now);
        let head = loop {
            if !conn.buf.is_empty() {
                match read_head(&conn.buf, &bounds) {
                    HeadStep::Head(h) => break h,
                    HeadStep::Reject(r) => return refuse(conn, shard, r).await,
                    HeadStep::NeedMore { .. } => {}
                }
            }
            let deadline = match started {
                Some(s) => s + read_timeout,
                None => Instant::now() + idle,
            };
            let want = bounds.max_header_bytes.saturating_sub(conn.buf.len());
            match conn.fill(want, deadline).await {
                Ok(()) => {
                    started.get_or_insert_with(Instant::now);
                }
                Err(ReadError::TimedOut) if started.is_some() => {
                    let resp =
                        Response::error(408, "request_timeout", "request not received in time")
                            .closing();
                    finish(conn, shard, &resp, false, false).await;
                    return;
                }
                Err(_) => return,
            }
        };
        let started = started.unwrap_or_else(Instant::now);
        let deadline = started + read_timeout;
        #[cfg(debug_assertions)]
        fault::maybe_panic(&conn.buf[head.path.clone()]);
        let head_only = head.method == Method::Head;
        // Route and early checks, before the body.
        let tenant = match route_check(&head, shard, &conn.buf) {
            Ok(t) => t,
            Err(resp) => {
                // The body was not read: the connection cannot be reused.
                let body_pending = head.framing != Framing::None;
                let keep = head.keep_alive && !body_pending;
                if !finish(conn, shard, &resp, keep, head_only).await || !keep {
                    return;
                }
                conn.buf.drain(..head.len);
                continue;
            }
        };
        if head.expect_continue && conn.buf.len() == head.len {
            let (res, _) = conn
                .stream
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await;
            if res.is_err() {
                return;
            }
        }
        // Body.
        let mut chunks = match head.framing {
            Framing::Chunked => Some(shard.take_buffer()),
            _ => None,
        };
        let mut scratch = Vec::new();
        let step = loop {
            let out = chunks.as_mut().unwrap_or(&mut scratch);
            match read_body(&conn.buf, &head, &bounds, out) {
                BodyStep::NeedMore { at_least } => {
                    if let Err(e) = conn.fill(at_least, deadline).await {
                        if let Some(b) = chunks {
                            shard.give_buffer(b);
                        }
                        timeout_reply(conn, shard, e).await;
                        return;
                    }
                }
                done => break done,
            }
        };
        let (end, body) = match step {
            BodyStep::Complete { end, body } => (end, body),
            BodyStep::Reject(r) => {
                if let Some(b) = chunks {
                    shard.give_buffer(b);
                }
                return refuse(conn, shard, r).await;
            }
            BodyStep::NeedMore { .. } => unreachable!("the loop above reads until done"),
        };
        let resp = {
            let body: &[u8] = match (body, &chunks) {
                (Body::InBuffer { start, end }, _) => &conn.buf[start..end],
                (Body::Decoded, Some(b)) => b,
                (Body::Decoded, None) => &[],
            };
            dispatch(shard, &head, tenant.as_ref(), body, started).await
        };
        if let Some(b) = chunks {
            shard.give_buffer(b);
        }
        conn.buf.drain(..end);
        let keep = head.keep_alive && !shard.state.shutting_down.load(Ordering::Relaxed);
        if !finish(conn, shard, &resp, keep, head_only).await || !keep || resp.close {
            return;
        }
        if conn.buf.is_empty() && conn.buf.capacity() > 4 * IDLE_BUFFER_BYTES {
            conn.buf = Vec::with_capacity(IDLE_BUFFER_BYTES);
        }
    }
}

/// Answers a refused request and closes the connection.
async fn refuse(conn: &mut Conn, shard: &Shard, r: Reject) {
    let resp = Response::error(r.status, r.code, r.message).closing();
    finish(conn, shard, &resp, false, false).await;
}

/// Fault injection for the failure-policy test (debug builds only): a request
/// to the path in `ENGINE_FAULT_PANIC_PATH` panics its shard.
#[cfg(debug_assertions)]
mod fault {
    use std::sync::OnceLock;

    pub fn maybe_panic(path: &[u8]) {
        static PATH: OnceLock<Option<Vec<u8>>> = OnceLock::new();
        let armed = PATH.get_or_init(|| {
            std::env::var_os("ENGINE_FAULT_PANIC_PATH").map(|p| p.into_encoded_bytes())
        });
        if armed.as_deref() == Some(path) {
            panic!(
                "fault injected: request to {}",
                String::from_utf8_lossy(path)
            );
        }
    }
}

/// Counts and writes a response; false when the connection broke. A response
/// that closes the connection is followed by a lingering close.
async fn finish(
    conn: &mut Conn,
    shard: &Shard,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    shard
        .state
        .metrics
        .shard(shard.index)
        .count_status(resp.status);
    let ok = conn.send(resp, keep_alive, head_only).await;
    if ok && (!keep_alive || resp.close) {
        linger(conn).await;
    }
    ok
}

/// Most bytes discarded after a closing response.
const LINGER_BYTES: usize = 4 << 20;
/// Longest time spent discarding after a closing response.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Half-closes, then reads and discards what the client is still sending
/// (bounded in bytes and time), so that closing with unread data does not
/// reset the connection before the client has read our response.
async fn linger(conn: &mut Conn) {
    let _ = conn.stream.shutdown().await;
    let deadline = Instant::now() + LINGER_TIME;
    let mut discarded = 0;
    conn.buf.clear();
    conn.buf.shrink_to(IDLE_BUFFER_BYTES);
    while discarded < LINGER_BYTES {
        conn.buf.clear();
        if conn.fill(READ_CHUNK_BYTES, deadline).await.is_err() {
            return;
        }
        discarded += conn.buf.len();
    }
}

async fn timeout_reply(conn: &mut Conn, shard: &Shard, e: ReadError) {
    if let ReadError::TimedOut = e {
        let resp =
            Response::error(408, "request_timeout", "request body not received in time").closing();
        finish(conn, shard, &resp, false, false).await;
    }
}

/// Route and method checks, and the ingest precheck, on the head alone.
fn route_check(head: &RequestHead, shard: &Shard, buf: &[u8]) -> Result<Option<Authed>, Response> {
    if head.route == Route::NotFound {
        return Err(Response::error(
            404,
            "not_found",
            "no such endpoint; see /health, /ingest, /metrics",
        ));
    }
    if !head.route.allows(head.method) {
        let mut r = Response::error(
            405,
            "method_not_allowed",
            &format!("use {}", head.route.allow()),
        );
        r.allow = Some(head.route.allow());
        return Err(r);
    }
    if head.route == Route::Ingest {
        return precheck(shard, head, buf).map(Some);
    }
    Ok(None)
}

async fn dispatch(
    shard: &Shard,
    head: &RequestHead,
    tenant: Option<&Authed>,
    body: &[u8],
    started: Instant,
) -> Response {
    let state = &*shard.state;
    match (head.route, tenant) {
        (Route::Ingest, Some(tenant)) => {
            let resp = ingest(shard, tenant, head.encoding, body, started).await;
            shard.histograms.borrow_mut().record(
                telemetry::Stage::Request,
                started.elapsed().as_micros() as u64,
            );
            resp
        }
        (Route::Live, _) => Response::json(200, probe::LIVE.into()),
        (Route::Ready, _) => {
            if state.ready() {
                Response::json(200, probe::READY.into())
            } else {
                let reason = if state.shutting_down.load(Ordering::Relaxed) {
                    "shutting_down"
                } else if !state.broker_up() {
                    "broker_unreachable"
                } else {
                    "rings_saturated"
                };
                Response::json(503, probe::not_ready(reason).into_bytes())
                    .retry_after(state.config.http.retry_after_secs)
            }
        }
        (Route::Health, _) => crate::shard::health(state),
        (Route::Metrics, _) => Response::text(
            200,
            "text/plain; version=0.0.4",
            state.metrics.render_prometheus().into_bytes(),
        ),
        (Route::DebugLatency, _) => Response::text(
            200,
            "text/plain; charset=utf-8",
            state.metrics.render_latency_table().into_bytes(),
        ),
        _ => Response::error(404, "not_found", "no such endpoint"),
    }
}
