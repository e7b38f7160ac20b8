//! The dedup window: (tenant, event id) pairs seen in the last
//! `sink.dedup_window_secs`, at most `sink.dedup_max_ids` of them.
//!
//! A client that retries a batch (after a 503 or a lost answer) sends the same
//! event ids under the same tenant and session, so the retry lands on the same
//! partition, hence the same worker. The worker drops ids it has already
//! handed to ClickHouse within the window, before they reach `events` or any
//! view. One window per worker, over all its partitions, so `max_ids` bounds
//! its memory. On partition assignment the window is reloaded from ClickHouse,
//! so a restart or a move to another node keeps the guarantee.

use std::collections::{HashSet, VecDeque};

/// Tenant id and event id.
pub type EventKey = ([u8; 16], [u8; 16]);

/// A set of event keys. foldhash, randomly seeded per process: several times
/// cheaper than SipHash on 32-byte keys (it was a third of the sink's CPU),
/// and seeded so clients cannot choose colliding ids.
pub type KeySet = HashSet<EventKey, foldhash::fast::RandomState>;

/// A bounded, time-ordered set of recently inserted events.
#[derive(Debug)]
pub struct DedupWindow {
    window_us: i64,
    max_ids: usize,
    seen: KeySet,
    order: VecDeque<(i64, EventKey)>,
}

impl DedupWindow {
    /// A window of `window_secs` holding at most `max_ids` ids.
    pub fn new(window_secs: u64, max_ids: usize) -> Self {
        Self {
            window_us: i64::try_from(window_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            max_ids,
            seen: KeySet::default(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` was inserted within the window.
    pub fn contains(&self, key: &EventKey) -> bool {
        self.seen.contains(key)
    }

    /// Records `key` as inserted at `at_us` (the edge's receive time); false
    /// if it was already there (a duplicate). One hash lookup either way.
    pub fn insert(&mut self, key: EventKey, at_us: i64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((at_us, key));
        while self.order.len() > self.max_ids {
            self.evict_front();
        }
        true
    }

    /// Forgets ids older than the window, relative to `now_us`.
    pub fn expire(&mut self, now_us: i64) {
        let oldest = now_us.saturating_sub(self.window_us);
        while self.order.front().is_some_and(|(t, _)| *t < oldest) {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some((_, k)) = self.order.pop_front() {
            self.seen.remove(&k);
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> EventKey {
        ([0; 16], [n; 16])
    }

    #[test]
    fn remembers_within_the_window_and_the_bound() {
        let mut d = DedupWindow::new(10, 3);
        assert!(d.insert(k(1), 0));
        assert!(d.insert(k(2), 5_000_000));
        assert!(!d.insert(k(2), 5_000_001), "a repeat is reported");
        assert!(d.contains(&k(1)) && d.contains(&k(2)));
        d.expire(10_500_000);
        assert!(!d.contains(&k(1)) && d.contains(&k(2)));
        d.insert(k(3), 6_000_000);
        d.insert(k(4), 7_000_000);
        d.insert(k(5), 8_000_000);
        assert_eq!(d.len(), 3);
        assert!(!d.contains(&k(2)));
    }

    #[test]
    fn the_same_event_id_under_another_tenant_is_not_a_duplicate() {
        let (a, b) = ([0xa; 16], [0xb; 16]);
        let id = [7; 16];
        let mut d = DedupWindow::new(10, 100);
        assert!(d.insert((a, id), 0), "tenant A's first insert is new");
        assert!(d.contains(&(a, id)));
        // B's event with A's id: not seen, and its insert is new, not a repeat.
        assert!(!d.contains(&(b, id)), "tenant B sees tenant A's id");
        assert!(
            d.insert((b, id), 1),
            "tenant B's event taken for A's repeat"
        );
        assert_eq!(d.len(), 2);
        // Each tenant's own retry is still a duplicate.
        assert!(!d.insert((a, id), 2), "tenant A's retry not caught");
        assert!(!d.insert((b, id), 3), "tenant B's retry not caught");
        // And forgetting one tenant's key forgets only that one.
        d.expire(10_000_001);
        assert!(!d.contains(&(a, id)) && d.contains(&(b, id)));
    }
}
