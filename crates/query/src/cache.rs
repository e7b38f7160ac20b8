//! The cache of answers to identical queries (same tenant, same body) for
//! [`CACHE_TTL_MS`]. It is bounded three ways, so that no tenant can grow
//! the process through it: at most [`CACHE_ENTRIES`] answers, at most
//! [`CACHE_BYTES`] of them together, and no answer over
//! [`MAX_CACHED_ANSWER_BYTES`] is kept at all (it is answered, not cached).
//! Answers are [`Bytes`]: every hit shares the cached bytes with the
//! response that carries them, no copy per request.
//!
//! Keys are the tenant and the SHA-256 of the body, so a key costs 48 bytes
//! whatever the body's size, and two bodies never share an answer. Every
//! answer lives the same time, so insertion order is expiry order: a queue
//! in that order finds what to expire, and what to evict first when a new
//! answer needs room (the oldest).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How long an identical query (same tenant, same body) is answered from the
/// cache, in ms.
pub const CACHE_TTL_MS: u64 = 5_000;
/// Cached answers kept, at most.
pub const CACHE_ENTRIES: usize = 1_024;
/// Largest answer body that is cached, in bytes; a larger one is answered
/// and forgotten (a dashboard's panels are a few KiB; `limit` 10,000 rows of
/// long referrers is megabytes).
pub const MAX_CACHED_ANSWER_BYTES: usize = 1 << 20;
/// All cached answers together, in bytes (bodies, plus [`ENTRY_OVERHEAD_BYTES`]
/// per entry).
pub const CACHE_BYTES: usize = 32 << 20;
/// What an entry costs besides its body (key, map and queue slots), as
/// counted against [`CACHE_BYTES`].
pub const ENTRY_OVERHEAD_BYTES: usize = 160;

/// A cache key: the tenant and the SHA-256 of the request body.
pub type Key = (Uuid, [u8; 32]);

/// The key of `body` asked by `tenant`.
pub fn key(tenant: Uuid, body: &[u8]) -> Key {
    (tenant, Sha256::digest(body).into())
}

fn ttl() -> Duration {
    Duration::from_millis(CACHE_TTL_MS)
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    /// Which insertion made it (the queue may still hold older ones of
    /// the same key).
    id: u64,
    body: Bytes,
}

/// The bounded answer cache. Not thread-safe by itself: the service holds it
/// in a mutex.
#[derive(Debug, Default)]
pub struct Cache {
    map: HashMap<Key, Entry>,
    /// Keys in insertion order, with the insertion's id.
    order: VecDeque<(Key, u64)>,
    /// Bytes counted against [`CACHE_BYTES`].
    bytes: usize,
    next_id: u64,
}

impl Cache {
    /// The answer to `key`, when one younger than the TTL is cached.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Bytes> {
        let e = self.map.get(key)?;
        (now.saturating_duration_since(e.at) < ttl()).then(|| e.body.clone())
    }

    /// Keeps `body` as the answer to `key`; false when it is too large to
    /// be cached ([`MAX_CACHED_ANSWER_BYTES`]).
    pub fn put(&mut self, key: Key, body: Bytes, now: Instant) -> bool {
        if body.len() > MAX_CACHED_ANSWER_BYTES {
            return false;
        }
        self.expire(now);
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= cost(&old.body);
        }
        let need = cost(&body);
        while self.map.len() >= CACHE_ENTRIES
            || self.bytes + need > CACHE_BYTES
            || self.order.len() >= 2 * CACHE_ENTRIES
        {
            if !self.pop_oldest() {
                break;
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.bytes += need;
        self.order.push_back((key, id));
        self.map.insert(key, Entry { at: now, id, body });
        true
    }

    /// Answers kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes kept, as counted against [`CACHE_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every answer older than the TTL.
    fn expire(&mut self, now: Instant) {
        while let Some((key, id)) = self.order.front() {
            let expired = match self.map.get(key) {
                Some(e) if e.id == *id => now.saturating_duration_since(e.at) >= ttl(),
                // Replaced since, or gone: the queue's slot is stale.
                _ => true,
            };
            if !expired {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest queue slot (and its answer, when still current);
    /// false when the queue is empty.
    fn pop_oldest(&mut self) -> bool {
        let Some((key, id)) = self.order.pop_front() else {
            return false;
        };
        if self.map.get(&key).is_some_and(|e| e.id == id) {
            if let Some(e) = self.map.remove(&key) {
                self.bytes -= cost(&e.body);
            }
        }
        true
    }
}

fn cost(body: &Bytes) -> usize {
    body.len() + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> Key {
        key(Uuid::nil(), &i.to_le_bytes())
    }

    #[test]
    fn answers_are_shared_and_expire() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        let body = Bytes::from(vec![7u8; 100]);
        assert!(c.put(k(1), body.clone(), t0));
        let hit = c.get(&k(1), t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(hit.as_ptr(), body.as_ptr(), "a hit shares, never copies");
        assert!(c.get(&k(2), t0).is_none());
        assert!(c.get(&k(1), t0 + ttl()).is_none(), "expired");
        // Another tenant, same body: another key.
        assert_ne!(key(Uuid::nil(), b"x"), key(Uuid::max(), b"x"));
        // Expired answers leave on the next insertion, bytes with them.
        assert!(c.put(k(2), Bytes::from_static(b"x"), t0 + ttl()));
        assert_eq!((c.len(), c.bytes()), (1, 1 + ENTRY_OVERHEAD_BYTES));
    }

    #[test]
    fn an_answer_over_the_bound_is_not_cached() {
        let mut c = Cache::default();
        let now = Instant::now();
        assert!(!c.put(
            k(1),
            Bytes::from(vec![0u8; MAX_CACHED_ANSWER_BYTES + 1]),
            now
        ));
        assert!(c.is_empty() && c.bytes() == 0);
        assert!(c.put(k(1), Bytes::from(vec![0u8; MAX_CACHED_ANSWER_BYTES]), now));
    }

    #[test]
    fn the_whole_cache_stays_within_its_bytes_and_entries() {
        let mut c = Cache::default();
        let now = Instant::now();
        // Largest cacheable answers, many more than fit: the oldest go.
        let big = Bytes::from(vec![0u8; MAX_CACHED_ANSWER_BYTES]);
        for i in 0..200 {
            assert!(c.put(k(i), big.clone(), now));
            assert!(c.bytes() <= CACHE_BYTES, "{} bytes", c.bytes());
        }
        let fit = CACHE_BYTES / (MAX_CACHED_ANSWER_BYTES + ENTRY_OVERHEAD_BYTES);
        assert_eq!(c.len(), fit);
        assert!(c.get(&k(199), now).is_some() && c.get(&k(0), now).is_none());
        // Small answers: the entry bound.
        let mut c = Cache::default();
        for i in 0..(3 * CACHE_ENTRIES as u32) {
            c.put(k(i), Bytes::from_static(b"{}"), now);
            assert!(c.len() <= CACHE_ENTRIES);
        }
        // The same key again and again: one entry, the queue bounded.
        let mut c = Cache::default();
        for _ in 0..(5 * CACHE_ENTRIES) {
            c.put(k(1), Bytes::from_static(b"{}"), now);
        }
        assert_eq!((c.len(), c.bytes()), (1, 2 + ENTRY_OVERHEAD_BYTES));
        assert!(c.order.len() <= 2 * CACHE_ENTRIES);
    }
}
