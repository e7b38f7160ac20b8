//! Latency histograms: recorded per thread, merged on exposition.
//!
//! Every histogram of the engine counts microseconds from 1 µs to
//! [`MAX_LATENCY_US`] with 3 significant digits, so any two can be added.

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks: 60 s in µs (larger values are clamped).
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty histogram with the engine's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// `us` within the tracked range.
pub fn clamp_us(us: u64) -> u64 {
    us.clamp(1, MAX_LATENCY_US)
}

/// `N` stages of histograms per slot (one slot per recording thread), shared
/// with exposition. A slot's lock is taken by its thread a few times a second
/// (publish) and by a scrape, so it is never contended on the hot path.
#[derive(Debug)]
pub struct SharedHistograms<const N: usize> {
    slots: Vec<Mutex<[Histogram<u64>; N]>>,
}

impl<const N: usize> SharedHistograms<N> {
    /// `slots` slots of `N` empty histograms.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots)
                .map(|_| Mutex::new(std::array::from_fn(|_| new_histogram())))
                .collect(),
        }
    }

    /// Runs `f` on slot `slot`'s histograms under its lock: for a thread that
    /// records rarely (once per batch) and needs no local copy.
    pub fn with_slot(&self, slot: usize, f: impl FnOnce(&mut [Histogram<u64>; N])) {
        let mut h = self.slots[slot].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
    }

    /// Stage `stage` merged over every slot.
    pub fn merged(&self, stage: usize) -> Histogram<u64> {
        let mut out = new_histogram();
        for slot in &self.slots {
            let h = slot.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere, so `add` cannot fail.
            let _ = out.add(&h[stage]);
        }
        out
    }
}

/// Histograms owned by one thread: recorded without synchronisation, merged
/// into its slot of a [`SharedHistograms`] by [`LocalHistograms::publish`].
#[derive(Debug)]
pub struct LocalHistograms<const N: usize> {
    slot: usize,
    stages: [Histogram<u64>; N],
}

impl<const N: usize> LocalHistograms<N> {
    /// Histograms that publish into slot `slot`.
    pub fn new(slot: usize) -> Self {
        Self {
            slot,
            stages: std::array::from_fn(|_| new_histogram()),
        }
    }

    /// Records a latency in µs (clamped to the tracked range).
    pub fn record(&mut self, stage: usize, micros: u64) {
        self.stages[stage].saturating_record(clamp_us(micros));
    }

    /// Adds what was recorded since the last publish into the shared slot.
    pub fn publish(&mut self, shared: &SharedHistograms<N>) {
        if self.stages.iter().all(Histogram::is_empty) {
            return;
        }
        shared.with_slot(self.slot, |dst| {
            for (dst, src) in dst.iter_mut().zip(self.stages.iter_mut()) {
                let _ = dst.add(&*src);
                src.reset();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_values_merge_over_slots_and_locals_restart_empty() {
        let shared = SharedHistograms::<2>::new(2);
        let mut a = LocalHistograms::new(0);
        let mut b = LocalHistograms::new(1);
        for v in 1..=100 {
            a.record(0, v);
            b.record(0, v * 1000);
        }
        b.record(1, u64::MAX);
        assert_eq!(shared.merged(0).len(), 0);
        a.publish(&shared);
        b.publish(&shared);
        assert_eq!(shared.merged(0).len(), 200);
        assert_eq!(
            shared.merged(1).max(),
            shared.merged(1).highest_equivalent(MAX_LATENCY_US)
        );
        a.publish(&shared);
        assert_eq!(
            shared.merged(0).len(),
            200,
            "a publish adds only what is new"
        );
        shared.with_slot(1, |h| h[0].saturating_record(5));
        assert_eq!(shared.merged(0).len(), 201);
    }
}
