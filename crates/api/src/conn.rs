//! One connection: a thin I/O loop around the request reader.
//!
//! [`crate::http::reader`] decides everything about framing and bounds from
//! the bytes alone; this module reads, writes and keeps time:
//!
//! - The connection owns one read buffer, holding the current request from
//!   its first byte (and pipelined requests after it, served next, in order).
//!   Each read takes at most the reader's [`Need::max`], so the buffer never
//!   outgrows the reader's bounds: `http.max_header_bytes` for a head, the
//!   head plus the route's body limit plus chunk overhead for a body.
//! - Route, method and the ingest precheck run on the head alone; a refusal
//!   with a body pending closes the connection (its body is never read). The
//!   declared size is checked before `100 Continue` is sent.
//! - Time: between requests a connection may idle `http.idle_timeout_ms`;
//!   once a request's first byte arrived, the whole request must arrive within
//!   `http.read_timeout_ms` (else 408), so a slow client cannot hold a shard.
//! - Every response that closes the connection is followed by a lingering
//!   close. A panic here is not caught: it aborts the process (README,
//!   "Failure policy").

use std::net::IpAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::admin::{self, Listener};
use crate::budget::{self, Held, Pool, FREE_BUFFER_BYTES};
use crate::clients::Request;
use crate::http::{
    BodyReader, BodyStep, Bounds, Framing, HeadStep, Method, Need, Reject, RequestHead, Response,
    Route,
};
use crate::ingest::{ingest, precheck, Shard};
use crate::metrics::Stage;
use crate::state::Authed;
use crate::{assets, cors, health};

/// Read buffer kept by an idle connection; larger buffers shrink back to
/// it. The shard's budget counts only what a request's buffers hold beyond.
const IDLE_BUFFER_BYTES: usize = FREE_BUFFER_BYTES;
/// Write buffer kept by a connection between answers.
const OUT_BUFFER_BYTES: usize = 1024;
/// Longest wait for a client to take a response (it stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read, at least (where the reader allows).
const READ_CHUNK_BYTES: usize = 16 * 1024;

enum ReadError {
    Closed,
    TimedOut,
}

/// A connection's byte stream: a TCP stream, or TLS over one.
pub trait Io: AsyncReadRent + AsyncWriteRent {}
impl<T: AsyncReadRent + AsyncWriteRent> Io for T {}

struct Conn<S> {
    stream: S,
    /// The peer's address (a client, or a trusted proxy).
    peer: IpAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// A read was cancelled (timed out): its buffer went with it, and a TLS
    /// stream cannot be read again (monoio-rustls lost its read buffer too:
    /// a later read panics). Nothing reads this connection any more.
    read_cancelled: bool,
}

impl<S: Io> Conn<S> {
    /// One read of at least one and at most `need.max` bytes; fails on EOF,
    /// error or `deadline`.
    async fn fill(&mut self, need: Need, deadline: Instant) -> Result<(), ReadError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::TimedOut);
        }
        self.buf
            .reserve(need.min.max(READ_CHUNK_BYTES).min(need.max));
        let len = self.buf.len();
        let end = self.buf.capacity().min(len.saturating_add(need.max));
        let buf = std::mem::take(&mut self.buf);
        let read = self.stream.read(buf.slice_mut(len..end));
        match monoio::time::timeout(deadline - now, read).await {
            Ok((Ok(n), slice)) => {
                self.buf = slice.into_inner();
                if n == 0 {
                    Err(ReadError::Closed)
                } else {
                    Ok(())
                }
            }
            Ok((Err(_), slice)) => {
                self.buf = slice.into_inner();
                Err(ReadError::Closed)
            }
            Err(_) => {
                self.read_cancelled = true;
                Err(ReadError::TimedOut)
            }
        }
    }

    /// Writes a response; false when the connection broke or the client did
    /// not take it within `WRITE_TIMEOUT` (a client that never reads
    /// must not hold its connection, and the request bytes it holds).
    async fn send(&mut self, resp: &Response, keep_alive: bool, head_only: bool) -> bool {
        self.out.clear();
        // A small answer goes in one write; a large one's body is written
        // from its own (maybe shared: a cached query answer) bytes, after
        // the head, never copied.
        let large_body = resp
            .body_to_send(head_only)
            .filter(|b| b.len() > FREE_BUFFER_BYTES);
        match large_body {
            Some(_) => resp.write_head_to(&mut self.out, keep_alive),
            None => resp.write_to(&mut self.out, keep_alive, head_only),
        }
        if !self.write_out().await {
            return false;
        }
        let Some(body) = large_body else {
            return true;
        };
        matches!(
            monoio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(body.shared())).await,
            Ok((Ok(_), _))
        )
    }

    /// Writes `out`; false when the connection broke or the client did not
    /// take it within `WRITE_TIMEOUT`.
    async fn write_out(&mut self) -> bool {
        let out = std::mem::take(&mut self.out);
        match monoio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(out)).await {
            Ok((res, mut out)) => {
                // A large answer's buffer goes (it was counted only while
                // written): an idle connection keeps a small one.
                if out.capacity() > OUT_BUFFER_BYTES * 4 {
                    out = Vec::with_capacity(OUT_BUFFER_BYTES);
                }
                self.out = out;
                res.is_ok()
            }
            // The buffer went with the cancelled write; the connection ends.
            Err(_) => false,
        }
    }
}

/// Answers a connection over its address's limit (`[clients]`) and closes
/// it, lingering as every closing answer does, so a client that already sent
/// its request reads the 429 instead of a reset.
pub async fn refuse_client<S: Io>(stream: S, peer: IpAddr) {
    let mut conn = Conn {
        stream,
        peer,
        buf: Vec::with_capacity(IDLE_BUFFER_BYTES),
        out: Vec::with_capacity(256),
        read_cancelled: false,
    };
    let resp = Response::error(
        429,
        "client_connection_limit",
        "too many open connections from this address",
    )
    .retry_after(1);
    if conn.send(&resp, false, false).await {
        linger(&mut conn).await;
    }
}

/// Serves one accepted connection (plain TCP or TLS) until it closes.
pub async fn serve<S: Io>(stream: S, peer: IpAddr, shard: Rc<Shard>) {
    let counters = shard.state.metrics.shard(shard.index);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        stream,
        peer,
        buf: Vec::with_capacity(IDLE_BUFFER_BYTES),
        out: Vec::with_capacity(OUT_BUFFER_BYTES),
        read_cancelled: false,
    };
    serve_requests(&mut conn, &shard).await;
    counters.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// Why a request ended the connection: `Some` is answered, `None` (the
/// client left) is not.
type Stop = Option<Reject>;

async fn serve_requests<S: Io>(conn: &mut Conn<S>, shard: &Shard) {
    let http = &shard.state.config.http;
    let bounds = Bounds::new(http.max_header_bytes, http.max_body_bytes);
    let read_timeout = http.read_timeout_ms;
    let idle = http.idle_timeout_ms;
    loop {
        let (head, started) = match read_head(conn, &bounds, idle, read_timeout).await {
            Ok(h) => h,
            Err(stop) => return refuse(conn, shard, stop).await,
        };
        #[cfg(debug_assertions)]
        if shard.fault_panic_path.as_deref() == Some(&conn.buf[head.path.clone()]) {
            panic!("fault injection: a request for the shard panic path");
        }
        let head_only = head.method == Method::Head;
        let origin = cors_origin(&head, &conn.buf);
        let origin = origin.as_deref();
        // Route and early checks, before the body.
        let tenant = match route_check(&head, shard, conn.peer, &conn.buf) {
            Ok(t) => t,
            Err(resp) => {
                let resp = with_cors(resp, origin);
                // The body was not read: the connection cannot be reused.
                let keep = head.keep_alive && head.framing == Framing::None;
                if !finish(conn, shard, &resp, keep, head_only).await || !keep {
                    return;
                }
                conn.buf.drain(..head.len);
                continue;
            }
        };
        let reader = match bounds.body(&head) {
            Ok(r) => r,
            Err(r) => return refuse_request(conn, shard, origin, Some(r)).await,
        };
        // The request's bytes in the shard's budget, taken as they arrive
        // (budget.rs): a declared length costs nothing until it is sent.
        let client = client_of(&head, shard, conn.peer, &conn.buf);
        let mut held = shard.hold(client);
        let mut pieces = None;
        let body = read_body(
            conn,
            shard,
            &head,
            reader,
            &mut pieces,
            &mut held,
            started + read_timeout,
        )
        .await;
        let (in_place, consumed) = match body {
            Ok(framed) => framed,
            Err(stop) => {
                // The answer first (CORS reads the head in the buffer), then
                // the request's buffers and budget go back, before the answer
                // is written and the connection lingers.
                let resp = match stop {
                    BodyStop::Busy => Some(shard.busy()),
                    BodyStop::Answer(r) => Some(r.response()),
                    BodyStop::Left => None,
                };
                let resp = resp.map(|r| with_cors(r, origin));
                if let Some(b) = pieces {
                    shard.give_buffer(b);
                }
                conn.buf.clear();
                conn.buf.shrink_to(IDLE_BUFFER_BYTES);
                drop(held);
                if let Some(resp) = resp {
                    finish(conn, shard, &resp, false, head_only).await;
                }
                return;
            }
        };
        let resp = {
            let body: &[u8] = match &pieces {
                Some(b) => b,
                None => &conn.buf[in_place],
            };
            let resp = dispatch(shard, client, &head, tenant.as_ref(), body, started).await;
            with_cors(resp, origin)
        };
        // The request's bytes go back before its answer is written: a client
        // that reads slowly holds only its answer.
        if let Some(b) = pieces {
            shard.give_buffer(b);
        }
        conn.buf.drain(..consumed);
        if conn.buf.capacity() > 4 * IDLE_BUFFER_BYTES {
            conn.buf.shrink_to(conn.buf.len().max(IDLE_BUFFER_BYTES));
        }
        drop(held);
        let keep = head.keep_alive && !shard.state.shutting_down.load(Ordering::Relaxed);
        let close = resp.close;
        if !finish_held(conn, shard, client, (&head, origin), resp, keep).await || !keep || close {
            return;
        }
    }
}

/// Reads the next head and when its first byte arrived. Before that byte a
/// connection may idle `idle`; after it the head must arrive in `read_timeout`.
async fn read_head<S: Io>(
    conn: &mut Conn<S>,
    bounds: &Bounds,
    idle: Duration,
    read_timeout: Duration,
) -> Result<(RequestHead, Instant), Stop> {
    // Pipelined bytes already buffered: this request has begun.
    let mut started = (!conn.buf.is_empty()).then(Instant::now);
    loop {
        let need = match bounds.read_head(&conn.buf) {
            HeadStep::Head(h) => return Ok((h, started.unwrap_or_else(Instant::now))),
            HeadStep::NeedMore(need) => need,
            HeadStep::Reject(r) => return Err(Some(r)),
        };
        let deadline = match started {
            Some(s) => s + read_timeout,
            None => Instant::now() + idle,
        };
        match conn.fill(need, deadline).await {
            Ok(()) => {
                started.get_or_insert_with(Instant::now);
            }
            Err(ReadError::TimedOut) if started.is_some() => {
                let r = Reject::new(408, "request_timeout", "request not received in time");
                return Err(Some(r));
            }
            Err(_) => return Err(None),
        }
    }
}

/// Why a body was not read to its end.
enum BodyStop {
    /// The client left (nothing to answer).
    Left,
    /// Refused by the reader (framing, size, time).
    Answer(Reject),
    /// The shard's or the client's budget has no room for more of it.
    Busy,
}

/// Most body bytes asked of the socket per read.
const BODY_READ_WINDOW_BYTES: usize = 64 * 1024;
/// A read buffer with less room than this (and than the body still needs)
/// grows before the next read.
const BODY_READ_MIN_BYTES: usize = 4 * 1024;
/// Least growth of a full read buffer.
const BODY_GROW_MIN_BYTES: usize = 16 * 1024;

/// Reads `head`'s body by `deadline`: where it lies in the buffer and how
/// many buffer bytes the request used. Chunked data of a route that reads its
/// body goes into `pieces` (a pooled buffer); other routes discard it. The
/// buffers' growth is taken in `held` before each read.
async fn read_body<S: Io>(
    conn: &mut Conn<S>,
    shard: &Shard,
    head: &RequestHead,
    mut reader: BodyReader,
    pieces: &mut Option<Vec<u8>>,
    held: &mut Held<'_>,
    deadline: Instant,
) -> Result<(Range<usize>, usize), BodyStop> {
    let mut continue_sent = !head.expect_continue;
    // The pooled buffer's capacity when taken: the pool's, not this request's.
    let mut pooled = 0;
    loop {
        let need = match reader.advance(&conn.buf) {
            BodyStep::Done { body, end } => {
                // The last read's decoded data counts too, while the request
                // is served.
                let bytes = request_bytes(conn.buf.capacity(), pieces.as_ref(), pooled);
                return if held.grow_to(bytes) {
                    Ok((body, end))
                } else {
                    Err(BodyStop::Busy)
                };
            }
            BodyStep::Data(r) => {
                if head.route.takes_body() {
                    pieces
                        .get_or_insert_with(|| {
                            let b = shard.take_buffer();
                            pooled = b.capacity();
                            b
                        })
                        .extend_from_slice(&conn.buf[r]);
                }
                continue;
            }
            BodyStep::NeedMore(need) => need,
            BodyStep::Reject(r) => return Err(BodyStop::Answer(r)),
        };
        let need = budget_read(&mut conn.buf, pieces.as_ref(), pooled, need, held)
            .ok_or(BodyStop::Busy)?;
        // The reader refused an oversized declared body already, so a client
        // told to continue will be read.
        if !continue_sent {
            continue_sent = true;
            if conn.buf.len() == head.len {
                let write = conn.stream.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
                match monoio::time::timeout_at(deadline.into(), write).await {
                    Ok((Ok(_), _)) => {}
                    _ => return Err(BodyStop::Left),
                }
            }
        }
        match conn.fill(need, deadline).await {
            Ok(()) => {}
            Err(ReadError::TimedOut) => {
                let r = Reject::new(408, "request_timeout", "request body not received in time");
                return Err(BodyStop::Answer(r));
            }
            Err(ReadError::Closed) => return Err(BodyStop::Left),
        }
    }
}

/// Makes room in `buf` for the next read, with the request's bytes beyond
/// [`FREE_BUFFER_BYTES`] (the read buffer's capacity and the chunked data
/// decoded so far) taken in `held` first; the need that read may take (at
/// most [`BODY_READ_WINDOW_BYTES`], never past the buffer's capacity).
/// `None`: no room in the budget. Called before every read, with no await
/// since the last buffer growth, so what a request holds is counted before
/// it waits for more.
///
/// The buffer grows only once what came fills it, by a quarter (at least
/// [`BODY_GROW_MIN_BYTES`]) at a time: a body costs a few copies, and the
/// budget is never more than a quarter and 16 KiB ahead of what the client
/// sent. A connection that declares 1 MiB and sends a byte holds nothing.
fn budget_read(
    buf: &mut Vec<u8>,
    pieces: Option<&Vec<u8>>,
    pooled: usize,
    need: Need,
    held: &mut Held<'_>,
) -> Option<Need> {
    let len = buf.len();
    let spare = buf.capacity() - len;
    let mut cap = buf.capacity();
    if spare < need.max.min(BODY_READ_MIN_BYTES) {
        // Never past what this request may still send.
        let most = len.saturating_add(need.max);
        cap = cap
            .saturating_add((cap / 4).max(BODY_GROW_MIN_BYTES))
            .min(most)
            .max(len.saturating_add(1));
    }
    if !held.grow_to(request_bytes(cap, pieces, pooled)) {
        return None;
    }
    if cap > buf.capacity() {
        buf.reserve_exact(cap - len);
    }
    let window = need
        .max
        .min(buf.capacity() - len)
        .clamp(1, BODY_READ_WINDOW_BYTES);
    Some(Need {
        min: need.min.min(window),
        max: window,
    })
}

/// What a request holds beyond [`FREE_BUFFER_BYTES`]: its read buffer's
/// capacity `cap`, and the chunked data decoded so far, by its length or by
/// its buffer's growth past the capacity it had in the pool (`pooled`: that
/// much is the pool's, `http.body_buffer_pool`), whichever is more.
fn request_bytes(cap: usize, pieces: Option<&Vec<u8>>, pooled: usize) -> usize {
    let decoded = pieces.map_or(0, |p| p.len().max(p.capacity().saturating_sub(pooled)));
    cap.saturating_add(decoded)
        .saturating_sub(FREE_BUFFER_BYTES)
}

/// Answers a request that cannot be served (if anyone listens), then closes.
async fn refuse<S: Io>(conn: &mut Conn<S>, shard: &Shard, stop: Stop) {
    if let Some(r) = stop {
        finish(conn, shard, &r.response(), false, false).await;
    }
}

/// [`refuse`] once the head is known: a browser may read the answer too.
async fn refuse_request<S: Io>(
    conn: &mut Conn<S>,
    shard: &Shard,
    origin: Option<&str>,
    stop: Stop,
) {
    if let Some(r) = stop {
        let resp = with_cors(r.response(), origin);
        finish(conn, shard, &resp, false, false).await;
    }
}

/// Counts and writes a response; false when the connection broke. A response
/// that closes the connection is followed by a lingering close.
async fn finish<S: Io>(
    conn: &mut Conn<S>,
    shard: &Shard,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let ok = answer(conn, shard, resp, keep_alive, head_only).await;
    if ok && (!keep_alive || resp.close) {
        linger(conn).await;
    }
    ok
}

/// [`finish`] for a served request: an answer larger than
/// [`FREE_BUFFER_BYTES`] counts in `client`'s budget while it is written
/// (a cached answer's bytes are shared, but a client that does not read
/// keeps them alive), and is given back before any lingering. No room: `503 server_busy` instead, and the connection closes.
async fn finish_held<S: Io>(
    conn: &mut Conn<S>,
    shard: &Shard,
    client: IpAddr,
    (head, origin): (&RequestHead, Option<&str>),
    resp: Response,
    keep_alive: bool,
) -> bool {
    let head_only = head.method == Method::Head;
    // What is written: nothing of a HEAD answer's body, or a 204's/304's.
    let size = resp.body_to_send(head_only).map_or(0, |b| b.len());
    if size <= FREE_BUFFER_BYTES {
        return finish(conn, shard, &resp, keep_alive, head_only).await;
    }
    // An answer no pool could ever take is not worth retrying.
    let (_, most) = budget::bounds(&shard.state.config.http, Pool::Answers);
    if size > most {
        let resp = Response::error(
            413,
            "answer_too_large",
            &format!("the answer is {size} bytes, more than this server sends at once ({most}); narrow the query"),
        );
        let resp = with_cors(resp, origin);
        return finish(conn, shard, &resp, keep_alive, head_only).await;
    }
    let Some(held) = shard.reserve_in(Pool::Answers, client, size) else {
        let busy = with_cors(shard.busy(), origin);
        finish(conn, shard, &busy, false, head_only).await;
        return false;
    };
    let ok = answer(conn, shard, &resp, keep_alive, head_only).await;
    let close = resp.close;
    // The answer's bytes and their count go before any lingering.
    drop(resp);
    drop(held);
    if ok && (!keep_alive || close) {
        linger(conn).await;
    }
    ok
}

/// Counts, names (an error gets a request id) and writes a response.
async fn answer<S: Io>(
    conn: &mut Conn<S>,
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
    let tagged;
    let resp = if resp.status >= 400 {
        tagged = shard.requests.tag(conn.peer, resp);
        &tagged
    } else {
        resp
    };
    conn.send(resp, keep_alive, head_only).await
}

/// Most bytes discarded after a closing response.
const LINGER_BYTES: usize = 4 << 20;
/// Longest time spent discarding after a closing response.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Half-closes, then reads and discards what the client is still sending
/// (bounded in bytes and time), so that closing with unread data does not
/// reset the connection before the client has read our response.
async fn linger<S: Io>(conn: &mut Conn<S>) {
    // A connection whose read was cancelled is closed as it is: reading it
    // again would panic inside the TLS stream (a remote kill switch with
    // `panic = "abort"`, found by review), and its client was too slow
    // anyway.
    if conn.read_cancelled {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    // A TLS close_notify is a write: bounded like the rest of the linger.
    let _ = monoio::time::timeout_at(deadline.into(), conn.stream.shutdown()).await;
    let mut discarded = 0;
    conn.buf.clear();
    conn.buf.shrink_to(IDLE_BUFFER_BYTES);
    while discarded < LINGER_BYTES {
        conn.buf.clear();
        let need = Need {
            min: 1,
            max: READ_CHUNK_BYTES,
        };
        if conn.fill(need, deadline).await.is_err() {
            return;
        }
        discarded += conn.buf.len();
    }
}

/// Route and method checks, and the ingest precheck, on the head alone.
/// `Err` is the answer, given without reading a body: a refusal, a
/// preflight, or the SDK file.
fn route_check(
    head: &RequestHead,
    shard: &Shard,
    peer: IpAddr,
    buf: &[u8],
) -> Result<Option<Authed>, Response> {
    client_check(head, shard, peer, buf)?;
    let auth = head.authorization.clone().map(|r| &buf[r]);
    let admin = &shard.state.config.admin;
    if let Some(refused) = admin::refusal(head.route, Listener::Main, auth, admin) {
        return Err(refused);
    }
    if let Some(refused) = head.route.refuse(head.method) {
        return Err(refused);
    }
    match (head.route, head.method) {
        (Route::Ingest, Method::Options) => Err(cors::preflight(&shard.state, head, buf)),
        (Route::Ingest, _) => precheck(shard, head, buf).map(Some),
        (Route::Query, _) => crate::query::precheck(shard, head, buf).map(Some),
        (Route::Asset(a), _) => Err(assets::answer(a, head, buf)),
        _ => Ok(None),
    }
}

/// The client a request comes from: the peer, or the client a trusted
/// proxy names (`[clients]`), IPv6 by its prefix (`clients.ipv6_prefix_len`);
/// the key of its limits and of its share of the shard's budget.
fn client_of(head: &RequestHead, shard: &Shard, peer: IpAddr, buf: &[u8]) -> IpAddr {
    let clients = &shard.state.clients;
    clients.client_key(clients.client_of_request(peer, &head.forwarded, buf))
}

/// The per-client request limit (`[clients]`); the probes are never limited.
fn client_check(
    head: &RequestHead,
    shard: &Shard,
    peer: IpAddr,
    buf: &[u8],
) -> Result<(), Response> {
    let clients = &shard.state.clients;
    if !clients.enabled() || matches!(head.route, Route::Live | Route::Ready) {
        return Ok(());
    }
    let client = client_of(head, shard, peer, buf);
    let counters = shard.state.metrics.shard(shard.index);
    match clients.request(client) {
        Request::Allowed => Ok(()),
        Request::Untracked => {
            counters.clients_untracked.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Request::OverLimit => {
            counters
                .clients_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            Err(Response::error(
                429,
                "client_rate_limited",
                "too many requests from this address; slow down",
            )
            .retry_after(1))
        }
    }
}

/// The `Origin` an `/ingest` answer lets read it (a preflight has its own
/// headers), copied out of the head once: the read buffer changes (drained,
/// or lost with a cancelled read) before some answers are written.
fn cors_origin(head: &RequestHead, buf: &[u8]) -> Option<String> {
    if head.route == Route::Ingest && head.method != Method::Options {
        cors::origin(head, buf).map(str::to_owned)
    } else {
        None
    }
}

/// Lets a browser read an `/ingest` answer.
fn with_cors(resp: Response, origin: Option<&str>) -> Response {
    cors::allow(resp, origin)
}

async fn dispatch(
    shard: &Shard,
    client: IpAddr,
    head: &RequestHead,
    tenant: Option<&Authed>,
    body: &[u8],
    started: Instant,
) -> Response {
    if let (Route::Query, Some(authed)) = (head.route, tenant) {
        return crate::query::answer(shard, authed, body).await;
    }
    if let (Route::Ingest, Some(tenant)) = (head.route, tenant) {
        let resp = ingest(shard, client, tenant, head.encoding, body, started).await;
        Stage::Request.record(
            &mut shard.histograms.borrow_mut(),
            started.elapsed().as_micros() as u64,
        );
        return resp;
    }
    health::answer(head.route, &*shard.state)
        .unwrap_or_else(|| Response::error(404, "not_found", "no such endpoint"))
}
