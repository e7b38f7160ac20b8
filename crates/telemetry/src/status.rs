//! Responses counted by HTTP status: one slot per status, so counting is a
//! relaxed add on a fixed index, with no list of statuses to search.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lowest valid HTTP status; slot 0 counts it.
const FIRST_STATUS: u16 = 100;
/// Slots: one per status 100..=599, then one for anything outside that range.
const SLOTS: usize = 501;

/// Counts of responses by status.
#[derive(Debug)]
pub struct StatusCounts {
    slots: [AtomicU64; SLOTS],
}

impl Default for StatusCounts {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn slot(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status - FIRST_STATUS),
        _ => SLOTS - 1,
    }
}

impl StatusCounts {
    /// Counts one response with `status`.
    pub fn count(&self, status: u16) {
        self.slots[slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses with `status` counted here.
    pub fn get(&self, status: u16) -> u64 {
        self.slots[slot(status)].load(Ordering::Relaxed)
    }

    /// `(label, count)` of the sum of `counts`: every status in `always`
    /// (zero or not), any other once seen, and `other` for statuses outside
    /// 100..=599 once seen.
    pub fn labeled<'a>(
        counts: impl IntoIterator<Item = &'a StatusCounts> + Clone,
        always: &[u16],
    ) -> Vec<(String, u64)> {
        (0..SLOTS)
            .filter_map(|i| {
                let n: u64 = counts
                    .clone()
                    .into_iter()
                    .map(|c| c.slots[i].load(Ordering::Relaxed))
                    .sum();
                let status = (i < SLOTS - 1).then(|| FIRST_STATUS + i as u16);
                if n == 0 && !status.is_some_and(|s| always.contains(&s)) {
                    return None;
                }
                Some((status.map_or("other".into(), |s| s.to_string()), n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_counted_under_its_own_label() {
        let (a, b) = (StatusCounts::default(), StatusCounts::default());
        for s in [417, 417, 501, 505, 500] {
            a.count(s);
        }
        b.count(417);
        b.count(999);
        b.count(42);
        assert_eq!(a.get(417) + b.get(417), 3);
        let l = StatusCounts::labeled([&a, &b], &[200, 429]);
        let get = |k: &str| l.iter().find(|(s, _)| s == k).map(|(_, n)| *n);
        assert_eq!(get("417"), Some(3));
        assert_eq!(get("501"), Some(1));
        assert_eq!(get("505"), Some(1));
        assert_eq!(get("other"), Some(2));
        // The usual statuses are always there; unusual ones only once seen.
        assert_eq!(get("429"), Some(0));
        assert_eq!(get("502"), None);
        assert_eq!(l.len(), 7, "{l:?}");
    }
}
