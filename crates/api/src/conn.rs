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
//! - It knows no route: the route table (`routes.rs`) names the head's
//!   route, whose checks run on the head alone; a refusal with a body
//!   pending closes the connection (its body is never read). The body is
//!   read under the limit the route gives, its declared size checked before
//!   `100 Continue` is sent, its bytes taken in the shard's budget as they
//!   arrive (`shard/budget.rs`); then the route's handler answers.
//! - Time: between requests a connection may idle `http.idle_timeout_ms`;
//!   once a request's first byte arrived, the whole request must arrive within
//!   `http.read_timeout_ms` (else 408), so a slow client cannot hold a shard.
//! - Every response that closes the connection is followed by a lingering
//!   close. A panic here is not caught: it aborts the process
//!   (docs/guarantees.md, "Failure policy").

use edge_http::ErrorCode;
use std::net::IpAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::cors;
use crate::http::{
    BodyReader, BodyStep, Bounds, Framing, HeadStep, Method, Need, Reject, RequestHead, Response,
};
use crate::routes::{self, Next};
use crate::shard::budget::{self, Held, Pool, FREE_BUFFER_BYTES};
use crate::shard::Shard;

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
    /// The connection came in on the TLS listener.
    secure: bool,
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
        secure: false,
        buf: Vec::with_capacity(IDLE_BUFFER_BYTES),
        out: Vec::with_capacity(256),
        read_cancelled: false,
    };
    let resp = Response::error(
        429,
        ErrorCode::ClientConnectionLimit,
        "too many open connections from this address",
    )
    .retry_after(1);
    if conn.send(&resp, false, false).await {
        linger(&mut conn).await;
    }
}

/// Serves one accepted connection (plain TCP, or TLS when `secure`) until
/// it closes.
pub async fn serve<S: Io>(stream: S, peer: IpAddr, secure: bool, shard: Rc<Shard>) {
    let counters = shard.state.metrics.shard(shard.index);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        stream,
        peer,
        secure,
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
    let bounds = Bounds::new(http.max_header_bytes);
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
        let route = routes::lookup(&conn.buf[head.path.clone()]);
        let origin = route.answer_origin(&head, &conn.buf);
        let origin = origin.as_deref();
        // The route's checks, before the body.
        let admitted = match route.on_head(shard, &head, (conn.peer, conn.secure), &conn.buf) {
            Next::Read(a) => a,
            Next::Answer(resp) => {
                let resp = cors::allow(resp, origin);
                // The body was not read: the connection cannot be reused.
                let keep = head.keep_alive && head.framing == Framing::None;
                if !finish(conn, shard, &resp, keep, head_only).await || !keep {
                    return;
                }
                conn.buf.drain(..head.len);
                continue;
            }
        };
        let reader = match bounds.body(&head, admitted.limit) {
            Ok(r) => r,
            Err(r) => return refuse_request(conn, shard, origin, Some(r)).await,
        };
        // The request's bytes in the shard's budget, taken as they arrive
        // (budget.rs): a declared length costs nothing until it is sent.
        let client = admitted.client;
        let mut held = shard.hold(client);
        let mut pieces = None;
        let body = read_body(
            conn,
            shard,
            &head,
            reader,
            admitted.limit.reads(),
            &mut pieces,
            &mut held,
            started + read_timeout,
        )
        .await;
        let (in_place, consumed) = match body {
            Ok(framed) => framed,
            Err(stop) => {
                // The answer first, then the request's buffers and budget go
                // back, before the answer is written and the connection
                // lingers.
                let resp = match stop {
                    BodyStop::Busy => Some(shard.busy()),
                    BodyStop::Answer(r) => Some(r.response()),
                    BodyStop::Left => None,
                };
                let resp = resp.map(|r| cors::allow(r, origin));
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
            let resp = route
                .on_body(shard, &admitted, (&head, &conn.buf), body, started)
                .await;
            cors::allow(resp, origin)
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
                let r = Reject::new(
                    408,
                    ErrorCode::RequestTimeout,
                    "request not received in time",
                );
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

/// Reads `head`'s body by `deadline`: where it lies in the buffer and how
/// many buffer bytes the request used. Chunked data of a route that reads its
/// body (`keep`) goes into `pieces` (a pooled buffer); other routes discard
/// it. The buffers' growth is taken in `held` before each read.
#[allow(clippy::too_many_arguments)]
async fn read_body<S: Io>(
    conn: &mut Conn<S>,
    shard: &Shard,
    head: &RequestHead,
    mut reader: BodyReader,
    keep: bool,
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
                let bytes = budget::request_bytes(conn.buf.capacity(), pieces.as_ref(), pooled);
                return if held.grow_to(bytes) {
                    Ok((body, end))
                } else {
                    Err(BodyStop::Busy)
                };
            }
            BodyStep::Data(r) => {
                if keep {
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
        let need = budget::before_read(&mut conn.buf, pieces.as_ref(), pooled, need, held)
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
                let r = Reject::new(
                    408,
                    ErrorCode::RequestTimeout,
                    "request body not received in time",
                );
                return Err(BodyStop::Answer(r));
            }
            Err(ReadError::Closed) => return Err(BodyStop::Left),
        }
    }
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
        let resp = cors::allow(r.response(), origin);
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
            ErrorCode::AnswerTooLarge,
            &format!("the answer is {size} bytes, more than this server sends at once ({most}); narrow the query"),
        );
        let resp = cors::allow(resp, origin);
        return finish(conn, shard, &resp, keep_alive, head_only).await;
    }
    let Some(held) = shard.reserve_in(Pool::Answers, client, size) else {
        let busy = cors::allow(shard.busy(), origin);
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
