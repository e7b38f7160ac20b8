//! One connection: keep-alive, pipelining, bounded reads under deadlines.
//!
//! The connection owns one read buffer. A request's head and (length-framed)
//! body are parsed in place in it; pipelined requests that arrived with it stay
//! in the buffer and are served next, in order. Bounds: the head may not exceed
//! `http.max_header_bytes` (431), the body `http.max_body_bytes` (413). Time:
//! between requests a connection may idle `http.idle_timeout_ms`; once a
//! request's first byte arrived, the whole request must arrive within
//! `http.read_timeout_ms` (else 408), so a slow client cannot hold a shard.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::{
    decode_chunked, parse_head, ChunkError, Framing, Method, RequestHead, Response, Route,
};
use crate::ingest::{ingest, precheck, Shard};
use crate::state::Authed;

/// Read buffer kept by an idle connection; larger buffers shrink back to it.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;
/// Bytes asked of the socket per read, at least.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Chunked framing overhead allowed on top of `max_body_bytes`.
const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

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
    loop {
        // Head.
        let mut started = (!conn.buf.is_empty()).then(Instant::now);
        let head = loop {
            if !conn.buf.is_empty() {
                match parse_head(&conn.buf) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => {
                        let resp = Response::error(e.status, "bad_request", e.message).closing();
                        finish(conn, shard, &resp, false, false).await;
                        return;
                    }
                }
                if conn.buf.len() >= http.max_header_bytes {
                    let resp =
                        Response::error(431, "header_too_large", "request head exceeds the limit")
                            .closing();
                    finish(conn, shard, &resp, false, false).await;
                    return;
                }
            }
            let deadline = match started {
                Some(s) => s + read_timeout,
                None => Instant::now() + idle,
            };
            match conn
                .fill(http.max_header_bytes - conn.buf.len(), deadline)
                .await
            {
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
        if head.len > http.max_header_bytes {
            let resp = Response::error(431, "header_too_large", "request head exceeds the limit")
                .closing();
            finish(conn, shard, &resp, false, false).await;
            return;
        }
        let head_only = head.method == Method::Head;
        // Route and early checks, before the body.
        let early = route_check(&head, shard, &conn.buf);
        let tenant = match early {
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
        let mut chunked_body: Option<Vec<u8>> = None;
        let consumed = match head.framing {
            Framing::None => head.len,
            Framing::Length(n) => {
                let end = head.len + n;
                while conn.buf.len() < end {
                    if let Err(e) = conn.fill(end - conn.buf.len(), deadline).await {
                        timeout_reply(conn, shard, e).await;
                        return;
                    }
                }
                end
            }
            Framing::Chunked => {
                let mut body = shard.take_buffer();
                let limit = http.max_body_bytes;
                let n = loop {
                    let failure = match decode_chunked(&conn.buf[head.len..], &mut body, limit) {
                        Ok(Some(n)) => break n,
                        Ok(None) if conn.buf.len() - head.len > limit + CHUNK_OVERHEAD_BYTES => {
                            (413, "chunked body exceeds the limit")
                        }
                        Ok(None) => match conn.fill(READ_CHUNK_BYTES, deadline).await {
                            Ok(()) => continue,
                            Err(e) => {
                                shard.give_buffer(body);
                                timeout_reply(conn, shard, e).await;
                                return;
                            }
                        },
                        Err(ChunkError::TooLarge) => (413, "chunked body exceeds the limit"),
                        Err(ChunkError::Malformed) => (400, "malformed chunked body"),
                    };
                    shard.give_buffer(body);
                    let resp = Response::error(failure.0, "bad_body", failure.1).closing();
                    finish(conn, shard, &resp, false, false).await;
                    return;
                };
                chunked_body = Some(body);
                head.len + n
            }
        };
        let resp = {
            let body: &[u8] = match &chunked_body {
                Some(b) => b,
                None => &conn.buf[head.len..consumed],
            };
            dispatch(shard, &head, tenant.as_ref(), body, started).await
        };
        if let Some(b) = chunked_body {
            shard.give_buffer(b);
        }
        conn.buf.drain(..consumed);
        let keep = head.keep_alive && !shard.state.shutting_down.load(Ordering::Relaxed);
        if !finish(conn, shard, &resp, keep, head_only).await || !keep || resp.close {
            return;
        }
        if conn.buf.is_empty() && conn.buf.capacity() > 4 * IDLE_BUFFER_BYTES {
            conn.buf = Vec::with_capacity(IDLE_BUFFER_BYTES);
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
        (Route::Live, _) => Response::json(200, br#"{"status":"live"}"#.to_vec()),
        (Route::Ready, _) => {
            if state.ready() {
                Response::json(200, br#"{"ready":true}"#.to_vec())
            } else {
                let reason = if state.shutting_down.load(Ordering::Relaxed) {
                    "shutting_down"
                } else if !state.broker_up() {
                    "broker_unreachable"
                } else {
                    "rings_saturated"
                };
                Response::json(
                    503,
                    format!(r#"{{"ready":false,"reason":"{reason}"}}"#).into_bytes(),
                )
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
