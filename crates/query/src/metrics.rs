//! The query service's own metrics, declared here and rendered by telemetry
//! ([`telemetry::Collector`]): answers by status, cache hits, and how long
//! ClickHouse took per query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use telemetry::{Collector, Exposition};

/// Statuses the service answers with, each a counter from the start.
const STATUSES: [u16; 7] = [200, 400, 422, 429, 500, 503, 504];

/// Longest latency tracked: the per-query time limit and then some, in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug)]
pub struct QueryMetrics {
    /// In [`STATUSES`] order, then one for any other status.
    answers: [AtomicU64; STATUSES.len() + 1],
    cache_hits: AtomicU64,
    /// ClickHouse's time per query run by a worker, in µs.
    latency: Mutex<Histogram<u64>>,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        Self {
            answers: std::array::from_fn(|_| AtomicU64::new(0)),
            cache_hits: AtomicU64::new(0),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .expect("static histogram bounds are valid"),
            ),
        }
    }
}

impl QueryMetrics {
    /// Counts one answer.
    pub fn answered(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.answers[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one query's run, in µs.
    pub fn ran(&self, us: u64) {
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }
}

impl Collector for QueryMetrics {
    fn collect(&self, out: &mut Exposition<'_>) {
        let statuses: Vec<String> = STATUSES.iter().map(u16::to_string).collect();
        let values: Vec<(&str, u64)> = statuses
            .iter()
            .map(String::as_str)
            .chain(["other"])
            .zip(&self.answers)
            .map(|(s, n)| (s, n.load(Ordering::Relaxed)))
            .collect();
        out.labeled_counter(
            "query_answers_total",
            "Answers of POST /api/v1/query, by status.",
            "status",
            &values,
        );
        out.counter(
            "query_cache_hits_total",
            "Answers served from the cache of identical queries.",
            self.cache_hits.load(Ordering::Relaxed),
        );
        if let Ok(h) = self.latency.lock() {
            out.latency("query_clickhouse_seconds", &h);
        }
    }
}
