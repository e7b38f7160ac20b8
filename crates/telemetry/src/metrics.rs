//! The declaration of every metric: counters with their labels resolved up
//! front, and the histograms.

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

/// HTTP statuses the engine answers with: always exposed, zero or not. Any
/// other status is counted too and exposed once seen.
pub const STATUSES: [u16; 17] = [
    100, 200, 400, 401, 403, 404, 405, 408, 411, 413, 415, 417, 429, 431, 500, 501, 503,
];

/// Lowest valid HTTP status; `requests` holds one slot per status from here.
const FIRST_STATUS: u16 = 100;
/// Slots: one per status 100..=599, then one for anything outside that range.
pub(crate) const STATUS_SLOTS: usize = 501;

/// The slot of `status` in `requests`: its own for 100..=599, else the last.
fn status_slot(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status - FIRST_STATUS),
        _ => STATUS_SLOTS - 1,
    }
}

/// The status of slot `i` (`None`: the slot of invalid statuses).
pub(crate) fn slot_status(i: usize) -> Option<u16> {
    (i < STATUS_SLOTS - 1).then(|| FIRST_STATUS + i as u16)
}

/// Highest latency a histogram tracks: 60 s in µs (larger values are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Counters of one shard, padded so shards never share a cache line.
#[derive(Debug)]
pub struct ShardCounters {
    /// Responses by status, one slot per status (see `status_slot`): a
    /// relaxed add on a fixed index, no search and no lock.
    pub requests: [AtomicU64; STATUS_SLOTS],
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
        self.requests[status_slot(status)].fetch_add(1, Ordering::Relaxed);
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
    /// Times a partition's next record came with a higher offset than the
    /// one expected: the broker did not deliver the records in between.
    pub offset_gaps: AtomicU64,
    /// Offsets skipped by those gaps.
    pub offset_gap_records: AtomicU64,
    pub dead_letters: AtomicU64,
    pub retention_runs: AtomicU64,
    pub retention_failures: AtomicU64,
    pub retention_partitions_dropped: AtomicU64,
    /// 1 while the last ClickHouse call succeeded.
    pub clickhouse_up: AtomicBool,
    /// Records not yet committed by the group over the partitions this sink
    /// owns (-1: unknown).
    pub consumer_lag: AtomicI64,
    /// Records not yet committed by the group over every partition of the
    /// topic, owned or not (-1: unknown).
    pub group_lag: AtomicI64,
    /// Partitions with records waiting and no commit for the sink's stall
    /// time: nobody is making progress on them.
    pub stalled_partitions: AtomicI64,
    pub assigned_partitions: AtomicI64,
    /// 1 while this sink's partitions are paused: a batch waits for the
    /// inserter, or a record for ClickHouse or the broker.
    pub paused: AtomicBool,
    /// Times the sink left and rejoined its group because it owned no
    /// partition while partitions stalled.
    pub rejoins: AtomicU64,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) reasons: &'static [&'static str],
    pub(crate) shards: Vec<CachePadded<ShardCounters>>,
    /// Published histograms: `[shard][stage]`.
    pub(crate) histograms: Vec<Mutex<[Histogram<u64>; 3]>>,
    pub producer: ProducerCounters,
    pub(crate) ring_depth: Vec<CachePadded<AtomicU64>>,
    pub(crate) ring_capacity: AtomicU64,
    pub sink: SinkCounters,
    /// Sink histograms, `[stage]`; the sink records once per batch.
    sink_histograms: Mutex<[Histogram<u64>; 3]>,
    /// Metrics other crates declare and keep themselves.
    collectors: Mutex<Vec<std::sync::Arc<dyn crate::Collector>>>,
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
                group_lag: AtomicI64::new(-1),
                ..SinkCounters::default()
            },
            sink_histograms: Mutex::new(std::array::from_fn(|_| new_histogram())),
            collectors: Mutex::new(Vec::new()),
        }
    }

    /// Adds a crate's own metrics to every exposition.
    pub fn register(&self, c: std::sync::Arc<dyn crate::Collector>) {
        if let Ok(mut all) = self.collectors.lock() {
            all.push(c);
        }
    }

    /// The registered collectors.
    pub(crate) fn collectors(&self) -> Vec<std::sync::Arc<dyn crate::Collector>> {
        self.collectors
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
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
        let slot = status_slot(status);
        self.sum(|s| s.requests[slot].load(Ordering::Relaxed))
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
