//! A shard's request budget: the bytes of requests it holds, taken as they
//! arrive and given back before anything lingers.
//!
//! What counts (`http.max_buffered_bytes_per_shard` in all, at most
//! `http.max_buffered_bytes_per_client` of it for one client):
//!
//! - a request's read buffer beyond the [`FREE_BUFFER_BYTES`] every
//!   connection has anyway (bounded by `http.max_connections_per_shard`),
//!   and the pooled buffer its chunked data is decoded into: **as the
//!   buffers grow**, never for a declared length before a byte of it came;
//! - the records made of a body, until the broker acknowledges them.
//!
//! Answers larger than [`FREE_BUFFER_BYTES`] count while they are written,
//! in a pool of their own ([`Pool::Answers`], a quarter of the shard's
//! budget, and the same per-client bound), so clients that ask for large
//! answers and never read them cannot refuse anyone's requests (a review
//! found that one query client could push every ingest to 503).
//!
//! Invariants:
//! - `held` is the sum of the live [`Held`] guards' bytes, and each client's
//!   entry the sum of its guards' (an entry at zero is removed, so the map
//!   has at most one entry per connection holding bytes);
//! - a guard only grows while the totals stay within both bounds; a guard
//!   that cannot grow leaves everything as it was (the caller answers
//!   `503 server_busy`);
//! - a guard gives back all it holds when dropped.
//!
//! Why: a write key is public, so anyone can open connections that declare
//! a 1 MiB body and send one byte. When the budget was reserved for the
//! declared length, 1,000 such connections (or 80 chunked heads) refused
//! every other client with 503 (issue 19). Now each holds what it sent, one
//! client at most its share, and a well-behaved client is served beside it.
//!
//! A shard is one thread: `Cell`/`RefCell`, no atomics but the gauge.

use edge_http::ErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::http::{Need, Response};
use crate::shard::Shard;

/// Read buffer every connection has whatever it sends (its idle buffer);
/// only bytes beyond it count. Small answers (most) count nothing either.
pub const FREE_BUFFER_BYTES: usize = 16 * 1024;

/// Most body bytes asked of the socket per read.
const BODY_READ_WINDOW_BYTES: usize = 64 * 1024;
/// A read buffer with less room than this (and than the body still needs)
/// grows before the next read.
const BODY_READ_MIN_BYTES: usize = 4 * 1024;
/// Least growth of a full read buffer.
const BODY_GROW_MIN_BYTES: usize = 16 * 1024;

/// Which of a shard's pools a guard holds bytes of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Requests: bodies and their records (`http.max_buffered_bytes_per_shard`).
    Requests,
    /// Large answers being written: a quarter of the requests' bound.
    Answers,
}

/// A shard's held bytes, in all and per client, per pool.
#[derive(Debug, Default)]
pub struct Budget {
    held: Cell<usize>,
    by_client: RefCell<HashMap<IpAddr, usize>>,
    answers: Cell<usize>,
    answers_by_client: RefCell<HashMap<IpAddr, usize>>,
}

impl Budget {
    fn pool(&self, pool: Pool) -> (&Cell<usize>, &RefCell<HashMap<IpAddr, usize>>) {
        match pool {
            Pool::Requests => (&self.held, &self.by_client),
            Pool::Answers => (&self.answers, &self.answers_by_client),
        }
    }
}

/// The bounds of `pool` in `http`: the shard's, and one client's.
pub fn bounds(http: &engine_core::config::HttpConfig, pool: Pool) -> (usize, usize) {
    let shard = match pool {
        Pool::Requests => http.max_buffered_bytes_per_shard,
        Pool::Answers => http.max_buffered_bytes_per_shard / 4,
    };
    (shard, http.max_buffered_bytes_per_client.min(shard))
}

impl Budget {
    /// Request bytes held now, in all.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Answer bytes held now, in all.
    pub fn answers_held(&self) -> usize {
        self.answers.get()
    }

    /// Bytes `client` holds now.
    pub fn held_by(&self, client: IpAddr) -> usize {
        self.by_client.borrow().get(&client).copied().unwrap_or(0)
    }
}

/// Bytes of a shard's budget held for one client, given back on drop.
#[derive(Debug)]
pub struct Held<'s> {
    shard: &'s Shard,
    pool: Pool,
    client: IpAddr,
    bytes: usize,
}

impl Shard {
    /// An empty guard of request bytes for `client`, to grow as its
    /// request's bytes arrive.
    pub fn hold(&self, client: IpAddr) -> Held<'_> {
        Held {
            shard: self,
            pool: Pool::Requests,
            client,
            bytes: 0,
        }
    }

    /// `bytes` of `pool` for `client` until the guard drops; `None`
    /// (counted) when the shard or the client has no room for them.
    pub fn reserve_in(&self, pool: Pool, client: IpAddr, bytes: usize) -> Option<Held<'_>> {
        let mut h = Held {
            pool,
            ..self.hold(client)
        };
        h.grow_to(bytes).then_some(h)
    }

    /// `bytes` of request budget for `client` (records, until acknowledged).
    pub fn reserve(&self, client: IpAddr, bytes: usize) -> Option<Held<'_>> {
        self.reserve_in(Pool::Requests, client, bytes)
    }

    /// The answer when the budget said no.
    pub fn busy(&self) -> Response {
        Response::error(
            503,
            ErrorCode::ServerBusy,
            "this server holds as many requests as it may; retry later",
        )
        .retry_after(self.state.config.http.retry_after_secs)
    }

    /// The gauge: both pools (what the shard holds for clients).
    fn publish_held(&self) {
        let held = self.budget.held() + self.budget.answers_held();
        self.state
            .metrics
            .shard(self.index)
            .buffered_bytes
            .store(held as i64, Ordering::Relaxed);
    }
}

impl Held<'_> {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the guard to `bytes` in all (a smaller number changes nothing);
    /// false (counted as a busy refusal), and nothing taken, when the shard
    /// or the client would pass its bound.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&m| m > 0) else {
            return true;
        };
        let s = self.shard;
        let (max_shard, max_client) = bounds(&s.state.config.http, self.pool);
        let (total_cell, clients) = s.budget.pool(self.pool);
        let mut clients = clients.borrow_mut();
        let mine = clients.get(&self.client).copied().unwrap_or(0);
        let total = total_cell.get().checked_add(more);
        let client_total = mine.checked_add(more);
        match (total, client_total) {
            (Some(t), Some(c)) if t <= max_shard && c <= max_client => {
                total_cell.set(t);
                clients.insert(self.client, c);
                self.bytes = bytes;
                drop(clients);
                s.publish_held();
                true
            }
            _ => {
                s.state
                    .metrics
                    .shard(s.index)
                    .busy_refusals
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let s = self.shard;
        let (total, clients) = s.budget.pool(self.pool);
        total.set(total.get().saturating_sub(self.bytes));
        let mut clients = clients.borrow_mut();
        if let Some(c) = clients.get_mut(&self.client) {
            *c = c.saturating_sub(self.bytes);
            if *c == 0 {
                clients.remove(&self.client);
            }
        }
        drop(clients);
        s.publish_held();
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
pub fn before_read(
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
pub fn request_bytes(cap: usize, pieces: Option<&Vec<u8>>, pooled: usize) -> usize {
    let decoded = pieces.map_or(0, |p| p.len().max(p.capacity().saturating_sub(pooled)));
    cap.saturating_add(decoded)
        .saturating_sub(FREE_BUFFER_BYTES)
}
