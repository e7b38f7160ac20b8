//! The query service's own metrics, declared here and rendered by telemetry
//! ([`telemetry::Collector`]): answers by status, cache hits, and how long
//! ClickHouse took per query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use telemetry::{Collector, Exposition, StatusCounts};

/// Statuses the service answers with, each exposed from the start.
const STATUSES: [u16; 7] = [200, 400, 422, 429, 500, 503, 504];

#[derive(Debug)]
pub struct QueryMetrics {
    answers: StatusCounts,
    cache_hits: AtomicU64,
    /// ClickHouse's time per query run by a worker, in µs.
    latency: Mutex<Histogram<u64>>,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        Self {
            answers: StatusCounts::default(),
            cache_hits: AtomicU64::new(0),
            latency: Mutex::new(telemetry::new_histogram()),
        }
    }
}

impl QueryMetrics {
    /// Counts one answer.
    pub fn answered(&self, status: u16) {
        self.answers.count(status);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one query's run, in µs.
    pub fn ran(&self, us: u64) {
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(telemetry::clamp_us(us));
        }
    }
}

impl Collector for QueryMetrics {
    fn part(&self) -> &'static str {
        "query"
    }

    fn collect(&self, out: &mut Exposition<'_>) {
        out.labeled_counter(
            "query_answers_total",
            "Answers of POST /api/v1/query, by status.",
            "status",
            &StatusCounts::labeled([&self.answers], &STATUSES),
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
