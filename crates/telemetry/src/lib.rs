//! `telemetry`: latency histograms, counters, Prometheus text and tracing setup.
//!
//! Metrics are declared once, in [`Metrics`], with their labels resolved up
//! front (an array slot per status code, per rejection reason), so the hot path
//! is a relaxed atomic add or a histogram record, never a map lookup or a lock.
//!
//! Histograms are per thread: each shard owns a [`LocalHistograms`] it records
//! into without synchronisation, and publishes ([`LocalHistograms::publish`])
//! into its own slot of [`Metrics`] a few times a second. Exposition merges the
//! slots. Start with [`Metrics::new`] and [`Metrics::render_prometheus`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

/// Latency stages measured at the edge, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Whole `POST /ingest`: first byte of the request to response written.
    Request = 0,
    /// Decompression, envelope parse, event parse and validation.
    ParseValidate = 1,
    /// Hand-off to the producer until the broker acknowledged every record.
    BrokerAck = 2,
}

impl Stage {
    /// All stages, in slot order.
    pub const ALL: [Stage; 3] = [Stage::Request, Stage::ParseValidate, Stage::BrokerAck];

    /// Metric-name form.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::ParseValidate => "parse_validate",
            Stage::BrokerAck => "broker_ack",
        }
    }
}

/// HTTP statuses the engine answers with, each with its own counter slot.
pub const STATUSES: [u16; 15] = [
    100, 200, 400, 401, 403, 404, 405, 408, 411, 413, 415, 429, 431, 500, 503,
];

/// Highest latency a histogram tracks: 60 s in µs (larger values are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Counters of one shard, padded so shards never share a cache line.
#[derive(Debug)]
pub struct ShardCounters {
    pub requests: [AtomicU64; STATUSES.len()],
    pub events_accepted: AtomicU64,
    pub events_rejected: Vec<AtomicU64>,
    pub bytes_received: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub rate_limited_events: AtomicU64,
}

impl ShardCounters {
    fn new(reasons: usize) -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            events_accepted: AtomicU64::new(0),
            events_rejected: (0..reasons).map(|_| AtomicU64::new(0)).collect(),
            bytes_received: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            rate_limited_events: AtomicU64::new(0),
        }
    }

    /// Counts one response with `status`.
    pub fn count_status(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len() - 2);
        self.requests[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// Producer-side counters and broker state.
#[derive(Debug, Default)]
pub struct ProducerCounters {
    pub records_produced: AtomicU64,
    pub records_failed: AtomicU64,
    pub bytes_produced: AtomicU64,
    pub broker_errors: AtomicU64,
    pub broker_up: AtomicBool,
    pub inflight_records: AtomicI64,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    reasons: &'static [&'static str],
    shards: Vec<CachePadded<ShardCounters>>,
    /// Published histograms: `[shard][stage]`.
    histograms: Vec<Mutex<[Histogram<u64>; 3]>>,
    pub producer: ProducerCounters,
    ring_depth: Vec<CachePadded<AtomicU64>>,
    ring_capacity: AtomicU64,
}

impl Metrics {
    /// Metrics for `shards` shards; `reasons` names the rejection reasons in
    /// their index order.
    pub fn new(shards: usize, reasons: &'static [&'static str]) -> Self {
        Self {
            reasons,
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardCounters::new(reasons.len())))
                .collect(),
            histograms: (0..shards)
                .map(|_| Mutex::new(std::array::from_fn(|_| new_histogram())))
                .collect(),
            producer: ProducerCounters::default(),
            ring_depth: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            ring_capacity: AtomicU64::new(0),
        }
    }

    /// The counters of shard `i`.
    pub fn shard(&self, i: usize) -> &ShardCounters {
        &self.shards[i]
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Sets the sampled depth of shard `i`'s ring.
    pub fn set_ring_depth(&self, shard: usize, depth: usize, capacity: usize) {
        self.ring_depth[shard].store(depth as u64, Ordering::Relaxed);
        self.ring_capacity.store(capacity as u64, Ordering::Relaxed);
    }

    /// Sum of a counter over shards.
    pub fn sum(&self, f: impl Fn(&ShardCounters) -> u64) -> u64 {
        self.shards.iter().map(|s| f(s)).sum()
    }

    /// Total events accepted.
    pub fn events_accepted(&self) -> u64 {
        self.sum(|s| s.events_accepted.load(Ordering::Relaxed))
    }

    /// Total responses with `status`.
    pub fn responses(&self, status: u16) -> u64 {
        match STATUSES.iter().position(|&s| s == status) {
            Some(slot) => self.sum(|s| s.requests[slot].load(Ordering::Relaxed)),
            None => 0,
        }
    }

    /// Merged histogram of a stage over all shards.
    pub fn merged(&self, stage: Stage) -> Histogram<u64> {
        let mut out = new_histogram();
        for slot in &self.histograms {
            let h = slot.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere, so `add` cannot fail.
            let _ = out.add(&h[stage as usize]);
        }
        out
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut o = String::with_capacity(8192);
        let counter = |o: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        counter(
            &mut o,
            "ingest_http_responses_total",
            "HTTP responses by status code.",
            "counter",
        );
        for (slot, status) in STATUSES.iter().enumerate() {
            let n = self.sum(|s| s.requests[slot].load(Ordering::Relaxed));
            let _ = writeln!(o, "ingest_http_responses_total{{status=\"{status}\"}} {n}");
        }
        counter(
            &mut o,
            "ingest_events_accepted_total",
            "Events acknowledged by the broker.",
            "counter",
        );
        let _ = writeln!(o, "ingest_events_accepted_total {}", self.events_accepted());
        counter(
            &mut o,
            "ingest_events_rejected_total",
            "Events rejected by validation, by reason.",
            "counter",
        );
        for (i, reason) in self.reasons.iter().enumerate() {
            let n = self.sum(|s| s.events_rejected[i].load(Ordering::Relaxed));
            let _ = writeln!(o, "ingest_events_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let simple: [(&str, &str, &str, u64); 5] = [
            (
                "ingest_bytes_received_total",
                "Request body bytes received, as sent.",
                "counter",
                self.sum(|s| s.bytes_received.load(Ordering::Relaxed)),
            ),
            (
                "ingest_connections_total",
                "Connections accepted.",
                "counter",
                self.sum(|s| s.connections_total.load(Ordering::Relaxed)),
            ),
            (
                "ingest_connections_refused_total",
                "Connections closed at accept (per-shard limit).",
                "counter",
                self.sum(|s| s.connections_refused.load(Ordering::Relaxed)),
            ),
            (
                "ingest_rate_limited_events_total",
                "Events refused with 429.",
                "counter",
                self.sum(|s| s.rate_limited_events.load(Ordering::Relaxed)),
            ),
            (
                "ingest_connections_open",
                "Open connections.",
                "gauge",
                self.shards
                    .iter()
                    .map(|s| s.connections_open.load(Ordering::Relaxed).max(0) as u64)
                    .sum(),
            ),
        ];
        for (name, help, kind, v) in simple {
            counter(&mut o, name, help, kind);
            let _ = writeln!(o, "{name} {v}");
        }
        counter(
            &mut o,
            "ingest_ring_depth",
            "Records queued from a shard to the producer.",
            "gauge",
        );
        for (i, d) in self.ring_depth.iter().enumerate() {
            let _ = writeln!(
                o,
                "ingest_ring_depth{{shard=\"{i}\"}} {}",
                d.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP ingest_ring_capacity Ring capacity per shard.\n# TYPE ingest_ring_capacity gauge");
        let _ = writeln!(
            o,
            "ingest_ring_capacity {}",
            self.ring_capacity.load(Ordering::Relaxed)
        );
        let p = &self.producer;
        let producer: [(&str, &str, &str, i64); 6] = [
            (
                "broker_records_produced_total",
                "Records acknowledged by the broker.",
                "counter",
                p.records_produced.load(Ordering::Relaxed) as i64,
            ),
            (
                "broker_records_failed_total",
                "Records the broker did not acknowledge.",
                "counter",
                p.records_failed.load(Ordering::Relaxed) as i64,
            ),
            (
                "broker_bytes_produced_total",
                "Record bytes acknowledged.",
                "counter",
                p.bytes_produced.load(Ordering::Relaxed) as i64,
            ),
            (
                "broker_errors_total",
                "Client-level broker errors.",
                "counter",
                p.broker_errors.load(Ordering::Relaxed) as i64,
            ),
            (
                "broker_up",
                "1 when the broker answers.",
                "gauge",
                i64::from(p.broker_up.load(Ordering::Relaxed)),
            ),
            (
                "broker_inflight_records",
                "Records sent, not yet acknowledged.",
                "gauge",
                p.inflight_records.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, v) in producer {
            counter(&mut o, name, help, kind);
            let _ = writeln!(o, "{name} {v}");
        }
        for stage in Stage::ALL {
            let h = self.merged(stage);
            let name = format!("ingest_{}_latency_seconds", stage.name());
            counter(
                &mut o,
                &name,
                "Latency summary from the HdrHistogram.",
                "summary",
            );
            for q in [0.5, 0.9, 0.99, 0.999] {
                let v = h.value_at_quantile(q) as f64 / 1e6;
                let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
            }
            let sum = h.mean() * h.len() as f64 / 1e6;
            let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
        }
        o
    }

    /// The classic HdrHistogram percentile table per stage, values in ms.
    pub fn render_latency_table(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        for stage in Stage::ALL {
            let h = self.merged(stage);
            let _ = writeln!(o, "# stage: {} (milliseconds)", stage.name());
            percentile_table(&h, &mut o);
            o.push('\n');
        }
        o
    }
}

/// Writes `h` (recorded in µs) as the HdrHistogram percentile distribution
/// (`Value Percentile TotalCount 1/(1-Percentile)`), values in ms.
pub fn percentile_table(h: &Histogram<u64>, o: &mut String) {
    let _ = writeln!(
        o,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if h.is_empty() {
        let _ = writeln!(o, "#[Mean    = 0.000, StdDeviation   = 0.000]");
        let _ = writeln!(o, "#[Max     = 0.000, Total count    = 0]");
        return;
    }
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "{:>12.3} {:>14.12} {:>10} {}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inv
        );
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        o,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        o,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
}

/// Histograms owned by one thread: recorded without synchronisation, merged
/// into the shared slot by [`LocalHistograms::publish`].
#[derive(Debug)]
pub struct LocalHistograms {
    slot: usize,
    stages: [Histogram<u64>; 3],
}

impl LocalHistograms {
    /// Histograms that publish into slot `slot` (the shard index).
    pub fn new(slot: usize) -> Self {
        Self {
            slot,
            stages: std::array::from_fn(|_| new_histogram()),
        }
    }

    /// Records a latency in µs (clamped to the tracked range).
    pub fn record(&mut self, stage: Stage, micros: u64) {
        self.stages[stage as usize].saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    /// Adds what was recorded since the last publish into the shared slot.
    pub fn publish(&mut self, metrics: &Metrics) {
        if self.stages.iter().all(Histogram::is_empty) {
            return;
        }
        let mut shared = metrics.histograms[self.slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (dst, src) in shared.iter_mut().zip(self.stages.iter_mut()) {
            let _ = dst.add(&*src);
            src.reset();
        }
    }
}

/// Installs the global tracing subscriber; `RUST_LOG` sets filters
/// (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_reach_the_exposition() {
        let m = Metrics::new(2, &["bad", "worse"]);
        m.shard(0).count_status(200);
        m.shard(1).count_status(200);
        m.shard(1).count_status(503);
        m.shard(1).events_rejected[1].fetch_add(3, Ordering::Relaxed);
        m.shard(0).events_accepted.fetch_add(5, Ordering::Relaxed);
        let mut local = LocalHistograms::new(1);
        for v in 1..=1000 {
            local.record(Stage::Request, v);
        }
        assert_eq!(m.merged(Stage::Request).len(), 0);
        local.publish(&m);
        assert_eq!(m.merged(Stage::Request).len(), 1000);
        let text = m.render_prometheus();
        assert!(
            text.contains("ingest_http_responses_total{status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("ingest_http_responses_total{status=\"503\"} 1"));
        assert!(text.contains("ingest_events_rejected_total{reason=\"worse\"} 3"));
        assert!(text.contains("ingest_events_accepted_total 5"));
        assert!(text.contains("ingest_request_latency_seconds_count 1000"));
        let table = m.render_latency_table();
        assert!(table.contains("Value     Percentile TotalCount"), "{table}");
        assert!(table.contains("Total count    =         1000"), "{table}");
    }
}
