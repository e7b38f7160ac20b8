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

/// Sink-side latency stages, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStage {
    /// First record of a batch consumed until its insert started.
    BatchAge = 0,
    /// One insert into ClickHouse, retries and backoff included.
    InsertDuration = 1,
    /// The edge's receive time of an event until ClickHouse confirmed its row.
    EventLag = 2,
}

impl SinkStage {
    /// All stages, in slot order.
    pub const ALL: [SinkStage; 3] = [
        SinkStage::BatchAge,
        SinkStage::InsertDuration,
        SinkStage::EventLag,
    ];

    /// Metric-name form.
    pub fn name(self) -> &'static str {
        match self {
            SinkStage::BatchAge => "batch_age",
            SinkStage::InsertDuration => "insert_duration",
            SinkStage::EventLag => "event_lag",
        }
    }
}

/// Sink counters and state. Rendered only once `running` is set.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Set when this process runs the sink role.
    pub running: AtomicBool,
    pub rows_inserted: AtomicU64,
    pub batches_inserted: AtomicU64,
    pub bytes_inserted: AtomicU64,
    /// Insert attempts (and landed-checks) that failed; each is retried.
    pub insert_failures: AtomicU64,
    /// Events dropped by the dedup window (client retries).
    pub duplicates_skipped: AtomicU64,
    /// Records skipped because ClickHouse already held their offset.
    pub records_already_stored: AtomicU64,
    pub dead_letters: AtomicU64,
    pub retention_runs: AtomicU64,
    pub retention_failures: AtomicU64,
    pub retention_partitions_dropped: AtomicU64,
    /// 1 while the last ClickHouse call succeeded.
    pub clickhouse_up: AtomicBool,
    /// Records in the topic not yet consumed, over assigned partitions (-1: unknown).
    pub consumer_lag: AtomicI64,
    pub assigned_partitions: AtomicI64,
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
    pub sink: SinkCounters,
    /// Sink histograms, `[stage]`; the sink records once per batch.
    sink_histograms: Mutex<[Histogram<u64>; 3]>,
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
            sink: SinkCounters {
                consumer_lag: AtomicI64::new(-1),
                ..SinkCounters::default()
            },
            sink_histograms: Mutex::new(std::array::from_fn(|_| new_histogram())),
        }
    }

    /// Records one inserted batch: its age, its insert time, and the lag of
    /// its events as `(lag_us, events)` pairs. One lock per batch.
    pub fn record_sink_batch(
        &self,
        batch_age_us: u64,
        insert_us: u64,
        lags: impl IntoIterator<Item = (u64, u64)>,
    ) {
        let mut h = self
            .sink_histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let clamp = |v: u64| v.clamp(1, MAX_LATENCY_US);
        h[SinkStage::BatchAge as usize].saturating_record(clamp(batch_age_us));
        h[SinkStage::InsertDuration as usize].saturating_record(clamp(insert_us));
        for (lag, n) in lags {
            let _ = h[SinkStage::EventLag as usize].record_n(clamp(lag), n);
        }
    }

    /// A copy of one sink histogram.
    pub fn sink_histogram(&self, stage: SinkStage) -> Histogram<u64> {
        self.sink_histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())[stage as usize]
            .clone()
    }

    /// The sink's state as a JSON object, for `/health`.
    pub fn sink_health_json(&self) -> String {
        let s = &self.sink;
        let lag = self.sink_histogram(SinkStage::EventLag);
        format!(
            "{{\"running\":{},\"clickhouse_up\":{},\"assigned_partitions\":{},\"consumer_lag\":{},\"rows_inserted\":{},\"event_lag_p99_ms\":{:.1}}}",
            s.running.load(Ordering::Relaxed),
            s.clickhouse_up.load(Ordering::Acquire),
            s.assigned_partitions.load(Ordering::Relaxed),
            s.consumer_lag.load(Ordering::Relaxed),
            s.rows_inserted.load(Ordering::Relaxed),
            lag.value_at_quantile(0.99) as f64 / 1000.0,
        )
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

    /// Prometheus text exposition (format 0.0.4): the edge's metrics when
    /// this process has shards, the sink's when it runs the sink.
    pub fn render_prometheus(&self) -> String {
        let mut o = String::with_capacity(8192);
        if !self.shards.is_empty() {
            self.render_edge(&mut o);
        }
        if self.sink.running.load(Ordering::Relaxed) {
            self.render_sink(&mut o);
        }
        o
    }

    fn render_sink(&self, o: &mut String) {
        let s = &self.sink;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let values: [(&str, &str, &str, i64); 14] = [
            (
                "sink_rows_inserted_total",
                "Rows ClickHouse confirmed.",
                "counter",
                load(&s.rows_inserted),
            ),
            (
                "sink_batches_inserted_total",
                "Inserts ClickHouse confirmed.",
                "counter",
                load(&s.batches_inserted),
            ),
            (
                "sink_bytes_inserted_total",
                "Native block bytes inserted.",
                "counter",
                load(&s.bytes_inserted),
            ),
            (
                "sink_insert_failures_total",
                "Insert attempts that failed (each is retried).",
                "counter",
                load(&s.insert_failures),
            ),
            (
                "sink_duplicates_skipped_total",
                "Events dropped by the dedup window (client retries).",
                "counter",
                load(&s.duplicates_skipped),
            ),
            (
                "sink_records_already_stored_total",
                "Records skipped because ClickHouse already held their offset.",
                "counter",
                load(&s.records_already_stored),
            ),
            (
                "sink_dead_letters_total",
                "Undecodable records sent to the dead-letter topic.",
                "counter",
                load(&s.dead_letters),
            ),
            (
                "sink_retention_runs_total",
                "Retention job runs.",
                "counter",
                load(&s.retention_runs),
            ),
            (
                "sink_retention_failures_total",
                "Retention job runs that failed.",
                "counter",
                load(&s.retention_failures),
            ),
            (
                "sink_retention_partitions_dropped_total",
                "Expired partitions dropped by the retention job.",
                "counter",
                load(&s.retention_partitions_dropped),
            ),
            (
                "sink_clickhouse_up",
                "1 while the last ClickHouse call succeeded.",
                "gauge",
                i64::from(s.clickhouse_up.load(Ordering::Acquire)),
            ),
            (
                "sink_consumer_lag",
                "Records in the topic not yet consumed by this sink (-1: unknown).",
                "gauge",
                s.consumer_lag.load(Ordering::Relaxed),
            ),
            (
                "sink_assigned_partitions",
                "Topic partitions assigned to this sink.",
                "gauge",
                s.assigned_partitions.load(Ordering::Relaxed),
            ),
            (
                "sink_running",
                "1 when this process runs the sink role.",
                "gauge",
                1,
            ),
        ];
        unlabelled(o, &values);
        for stage in SinkStage::ALL {
            let name = format!("sink_{}_seconds", stage.name());
            summary(o, &name, &self.sink_histogram(stage));
        }
    }

    fn render_edge(&self, o: &mut String) {
        let o = &mut *o;
        let counter = header;
        counter(
            o,
            "ingest_http_responses_total",
            "HTTP responses by status code.",
            "counter",
        );
        for (slot, status) in STATUSES.iter().enumerate() {
            let n = self.sum(|s| s.requests[slot].load(Ordering::Relaxed));
            let _ = writeln!(o, "ingest_http_responses_total{{status=\"{status}\"}} {n}");
        }
        counter(
            o,
            "ingest_events_accepted_total",
            "Events acknowledged by the broker.",
            "counter",
        );
        let _ = writeln!(o, "ingest_events_accepted_total {}", self.events_accepted());
        counter(
            o,
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
        unlabelled(o, &simple);
        counter(
            o,
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
        unlabelled(o, &producer);
        for stage in Stage::ALL {
            let name = format!("ingest_{}_latency_seconds", stage.name());
            summary(o, &name, &self.merged(stage));
        }
    }

    /// The classic HdrHistogram percentile table per stage, values in ms.
    pub fn render_latency_table(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        if !self.shards.is_empty() {
            for stage in Stage::ALL {
                let h = self.merged(stage);
                let _ = writeln!(o, "# stage: {} (milliseconds)", stage.name());
                percentile_table(&h, &mut o);
                o.push('\n');
            }
        }
        if self.sink.running.load(Ordering::Relaxed) {
            for stage in SinkStage::ALL {
                let h = self.sink_histogram(stage);
                let _ = writeln!(o, "# stage: sink_{} (milliseconds)", stage.name());
                percentile_table(&h, &mut o);
                o.push('\n');
            }
        }
        o
    }
}

/// `# HELP` and `# TYPE` lines of one metric.
fn header(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Metrics without labels, each as `(name, help, type, value)`.
fn unlabelled<V: std::fmt::Display>(o: &mut String, rows: &[(&str, &str, &str, V)]) {
    for (name, help, kind, v) in rows {
        header(o, name, help, kind);
        let _ = writeln!(o, "{name} {v}");
    }
}

/// A Prometheus summary (quantiles in seconds) of a µs histogram.
fn summary(o: &mut String, name: &str, h: &Histogram<u64>) {
    header(o, name, "Latency summary from the HdrHistogram.", "summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
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

    #[test]
    fn sink_metrics_appear_only_on_a_sink_and_edge_metrics_only_with_shards() {
        let m = Metrics::new(0, &["bad"]);
        assert_eq!(m.render_prometheus(), "");
        m.sink.running.store(true, Ordering::Relaxed);
        m.sink.rows_inserted.fetch_add(300, Ordering::Relaxed);
        m.record_sink_batch(1_000, 20_000, [(2_000_000, 200), (4_000_000, 100)]);
        let text = m.render_prometheus();
        assert!(!text.contains("ingest_"), "{text}");
        assert!(text.contains("sink_rows_inserted_total 300"), "{text}");
        assert!(text.contains("sink_consumer_lag -1"), "{text}");
        assert!(text.contains("sink_event_lag_seconds_count 300"), "{text}");
        assert!(
            text.contains("sink_insert_duration_seconds_count 1"),
            "{text}"
        );
        let lag = m.sink_histogram(SinkStage::EventLag);
        assert!((1_990_000..=2_010_000).contains(&lag.value_at_quantile(0.5)));
        assert!((3_990_000..=4_010_000).contains(&lag.value_at_quantile(0.99)));
        assert!(m.sink_health_json().contains("\"rows_inserted\":300"));
        assert!(m.render_latency_table().contains("# stage: sink_event_lag"));
    }
}
