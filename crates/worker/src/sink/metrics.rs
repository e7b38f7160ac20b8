//! The sink's metrics, declared here once and rendered by telemetry through
//! [`Collector`], and its health ([`SinkProblem`]), which the node asks
//! through [`HealthCheck`]. Rendered only by a process that runs the sink:
//! the binary registers it when it starts one.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use telemetry::{clamp_us, Collector, Exposition, HealthCheck, SharedHistograms};

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

    /// The metric's name.
    pub fn metric(self) -> &'static str {
        match self {
            SinkStage::BatchAge => "sink_batch_age_seconds",
            SinkStage::InsertDuration => "sink_insert_duration_seconds",
            SinkStage::EventLag => "sink_event_lag_seconds",
        }
    }
}

/// Why a running sink is not making progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkProblem {
    /// Migrating the schema at start, or waiting for another migrator.
    Migrating,
    /// The last ClickHouse call failed (on a cluster: every replica of
    /// every shard failed its last call).
    ClickHouseUnreachable,
    /// Every replica of one shard failed its last call: that shard's
    /// partitions wait (paused, the broker holds them); the others flow.
    ShardDown,
    /// Partitions have records waiting and no commit for the stall time,
    /// e.g. nobody in the group owns them.
    PartitionsStalled,
    /// The broker's log of a partition is not the one ClickHouse stored
    /// from (the topic was recreated, or the broker lost its data): the
    /// sink holds those partitions rather than skip records as stored.
    TopicReset,
    /// The last dead letter could not be written: its record is held (its
    /// partition waits) until the dead-letter topic takes it.
    DeadLettersFailing,
}

impl SinkProblem {
    /// The `reason` word of `/health/ready` and the sink's `state` in `/health`.
    pub fn reason(self) -> &'static str {
        match self {
            SinkProblem::Migrating => "migrating",
            SinkProblem::ClickHouseUnreachable => "clickhouse_unreachable",
            SinkProblem::ShardDown => "clickhouse_shard_down",
            SinkProblem::PartitionsStalled => "sink_stalled",
            SinkProblem::TopicReset => "topic_reset",
            SinkProblem::DeadLettersFailing => "dead_letters_failing",
        }
    }
}

/// Sink counters, state and histograms.
#[derive(Debug)]
pub struct SinkMetrics {
    pub(crate) rows_inserted: AtomicU64,
    pub(crate) batches_inserted: AtomicU64,
    pub(crate) bytes_inserted: AtomicU64,
    /// Insert attempts (and landed-checks) that failed; each is retried.
    pub(crate) insert_failures: AtomicU64,
    /// Events dropped by the dedup window (client retries).
    pub(crate) duplicates_skipped: AtomicU64,
    /// Records skipped because ClickHouse already held their offset.
    pub(crate) records_already_stored: AtomicU64,
    /// Times a partition's next record came with a higher offset than the
    /// one expected: the broker did not deliver the records in between.
    pub(crate) offset_gaps: AtomicU64,
    /// Offsets skipped by those gaps.
    pub(crate) offset_gap_records: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    /// Dead letters the broker did not take (each record held and tried again).
    pub(crate) dead_letter_failures: AtomicU64,
    /// Partitions whose last dead letter the broker refused.
    pub(crate) dead_letters_failing: AtomicI64,
    pub(crate) retention_runs: AtomicU64,
    pub(crate) retention_failures: AtomicU64,
    pub(crate) retention_partitions_dropped: AtomicU64,
    /// True while the last ClickHouse call succeeded.
    pub(crate) clickhouse_up: AtomicBool,
    /// True while the start-up migration runs (or waits for the lease).
    pub(crate) migrating: AtomicBool,
    /// Records not yet committed by the group over the partitions this sink
    /// owns (-1: unknown).
    pub(crate) consumer_lag: AtomicI64,
    /// Records not yet committed by the group over every partition of the
    /// topic, owned or not (-1: unknown).
    pub(crate) group_lag: AtomicI64,
    /// Partitions with records waiting and no commit for the sink's stall
    /// time: nobody is making progress on them.
    pub(crate) stalled_partitions: AtomicI64,
    pub(crate) assigned_partitions: AtomicI64,
    /// True while this sink's partitions are paused: a batch waits for the
    /// inserter, or a record for ClickHouse or the broker.
    pub(crate) paused: AtomicBool,
    /// Times the sink left and rejoined its group because it owned no
    /// partition while partitions stalled.
    pub(crate) rejoins: AtomicU64,
    /// Partitions this sink took over from earlier owners' staging tables
    /// (each dropped, after the queries reading it ended).
    pub(crate) fences: AtomicU64,
    /// Times the sink replaced its own staging table after an attempt whose
    /// outcome it could not learn, so that the attempt cannot land later.
    pub(crate) self_fences: AtomicU64,
    /// Times this sink found its staging table dropped by a newer owner:
    /// it dropped its batch for that partition and rejoined the group.
    pub(crate) fenced: AtomicU64,
    /// Roll-up parts written for an insert whose view push had failed.
    pub(crate) rollup_repairs: AtomicU64,
    /// Inserts found stored more than once in a table: must stay 0.
    pub(crate) receipts_duplicated: AtomicU64,
    /// Partitions whose stored offsets are at or past the broker's end: the
    /// topic was recreated or the broker's data reset.
    pub(crate) topic_resets: AtomicI64,
    /// Times an insert moved to another replica of its shard after the
    /// one it wrote failed or did not answer.
    pub(crate) replica_failovers: AtomicU64,
    /// Each ClickHouse shard's replicas as the sink last found them (one
    /// shard of one server outside cluster mode); set once at start.
    pub(crate) shards: OnceLock<Vec<ShardHealth>>,
    /// One slot: the inserter records once per batch, under the lock.
    histograms: SharedHistograms<3>,
}

/// What the sink knows of one replica: not asked yet, or whether its last
/// query answered.
const REPLICA_UNKNOWN: u8 = 0;
const REPLICA_UP: u8 = 1;
const REPLICA_DOWN: u8 = 2;

/// One ClickHouse shard as the sink sees it: its replicas (URL and
/// state) and the one its partitions are written to now.
#[derive(Debug)]
pub struct ShardHealth {
    replicas: Vec<(String, AtomicU8)>,
    /// Index into `replicas` of the replica written now.
    pub(crate) active: AtomicUsize,
}

impl ShardHealth {
    pub(crate) fn new(urls: impl IntoIterator<Item = String>) -> Self {
        Self {
            replicas: urls
                .into_iter()
                .map(|u| (u, AtomicU8::new(REPLICA_UNKNOWN)))
                .collect(),
            active: AtomicUsize::new(0),
        }
    }

    /// Records whether replica `r`'s last query answered.
    pub(crate) fn seen(&self, r: usize, up: bool) {
        if let Some((_, s)) = self.replicas.get(r) {
            s.store(
                if up { REPLICA_UP } else { REPLICA_DOWN },
                Ordering::Release,
            );
        }
    }

    /// True when every replica's last query failed: nothing of the shard
    /// can be written.
    pub(crate) fn down(&self) -> bool {
        self.replicas
            .iter()
            .all(|(_, s)| s.load(Ordering::Acquire) == REPLICA_DOWN)
    }

    /// `ok` (every replica answered), `degraded` (some did not), `down`
    /// (none did), `unknown` (none asked yet).
    fn state(&self) -> &'static str {
        let states: Vec<u8> = self
            .replicas
            .iter()
            .map(|(_, s)| s.load(Ordering::Acquire))
            .collect();
        if states.iter().all(|&s| s == REPLICA_DOWN) {
            "down"
        } else if states.contains(&REPLICA_DOWN) {
            "degraded"
        } else if states.iter().all(|&s| s == REPLICA_UNKNOWN) {
            "unknown"
        } else {
            "ok"
        }
    }

    fn json(&self, index: usize) -> String {
        let active = self.active.load(Ordering::Relaxed);
        let replicas: Vec<String> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, (url, s))| {
                let state = match s.load(Ordering::Acquire) {
                    REPLICA_UP => "up",
                    REPLICA_DOWN => "down",
                    _ => "unknown",
                };
                let mut quoted = String::with_capacity(url.len() + 2);
                telemetry::push_json_str(&mut quoted, url);
                format!(
                    "{{\"url\":{quoted},\"state\":\"{state}\",\"written\":{}}}",
                    i == active
                )
            })
            .collect();
        format!(
            "{{\"shard\":{},\"state\":\"{}\",\"replicas\":[{}]}}",
            index + 1,
            self.state(),
            replicas.join(",")
        )
    }
}

impl Default for SinkMetrics {
    fn default() -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            rows_inserted: zero(),
            batches_inserted: zero(),
            bytes_inserted: zero(),
            insert_failures: zero(),
            duplicates_skipped: zero(),
            records_already_stored: zero(),
            offset_gaps: zero(),
            offset_gap_records: zero(),
            dead_letters: zero(),
            dead_letter_failures: zero(),
            dead_letters_failing: AtomicI64::new(0),
            retention_runs: zero(),
            retention_failures: zero(),
            retention_partitions_dropped: zero(),
            clickhouse_up: AtomicBool::new(false),
            migrating: AtomicBool::new(false),
            consumer_lag: AtomicI64::new(-1),
            group_lag: AtomicI64::new(-1),
            stalled_partitions: AtomicI64::new(0),
            assigned_partitions: AtomicI64::new(0),
            paused: AtomicBool::new(false),
            rejoins: zero(),
            fences: zero(),
            self_fences: zero(),
            fenced: zero(),
            rollup_repairs: zero(),
            receipts_duplicated: zero(),
            topic_resets: AtomicI64::new(0),
            replica_failovers: zero(),
            shards: OnceLock::new(),
            histograms: SharedHistograms::new(1),
        }
    }
}

impl SinkMetrics {
    /// Records one inserted batch: its age, its insert time, and the lag of
    /// its events as `(lag_us, events)` pairs. One lock per batch.
    pub fn record_batch(
        &self,
        batch_age_us: u64,
        insert_us: u64,
        lags: impl IntoIterator<Item = (u64, u64)>,
    ) {
        self.histograms.with_slot(0, |h| {
            h[SinkStage::BatchAge as usize].saturating_record(clamp_us(batch_age_us));
            h[SinkStage::InsertDuration as usize].saturating_record(clamp_us(insert_us));
            for (lag, n) in lags {
                let _ = h[SinkStage::EventLag as usize].record_n(clamp_us(lag), n);
            }
        });
    }

    /// A copy of one stage's histogram.
    pub fn histogram(&self, stage: SinkStage) -> Histogram<u64> {
        self.histograms.merged(stage as usize)
    }

    /// Whether some shard has every replica failing (a cluster shard down).
    pub(crate) fn any_shard_down(&self) -> bool {
        self.shards
            .get()
            .is_some_and(|s| s.iter().any(ShardHealth::down))
    }

    /// Rows ClickHouse confirmed.
    pub fn rows_inserted(&self) -> u64 {
        self.rows_inserted.load(Ordering::Relaxed)
    }

    /// What keeps the sink from making progress, if anything.
    pub fn sink_problem(&self) -> Option<SinkProblem> {
        if self.migrating.load(Ordering::Acquire) {
            Some(SinkProblem::Migrating)
        } else if !self.clickhouse_up.load(Ordering::Acquire) {
            Some(SinkProblem::ClickHouseUnreachable)
        } else if self.any_shard_down() {
            Some(SinkProblem::ShardDown)
        } else if self.topic_resets.load(Ordering::Relaxed) > 0 {
            Some(SinkProblem::TopicReset)
        } else if self.dead_letters_failing.load(Ordering::Relaxed) > 0 {
            Some(SinkProblem::DeadLettersFailing)
        } else if self.stalled_partitions.load(Ordering::Relaxed) > 0 {
            Some(SinkProblem::PartitionsStalled)
        } else {
            None
        }
    }
}

impl HealthCheck for SinkMetrics {
    fn name(&self) -> &'static str {
        "sink"
    }

    fn problem(&self) -> Option<&'static str> {
        self.sink_problem().map(SinkProblem::reason)
    }

    /// `state` is `ok`, or the problem's reason.
    fn state_json(&self) -> String {
        let lag = self.histogram(SinkStage::EventLag);
        // Per shard, on a cluster only.
        let shards = match self.shards.get() {
            Some(s) if s.len() > 1 || s.iter().any(|s| s.replicas.len() > 1) => {
                let each: Vec<String> = s.iter().enumerate().map(|(i, s)| s.json(i)).collect();
                format!(",\"shards\":[{}]", each.join(","))
            }
            _ => String::new(),
        };
        format!(
            "{{\"state\":\"{}\",\"running\":true,\"clickhouse_up\":{},\"assigned_partitions\":{},\"stalled_partitions\":{},\"paused\":{},\"consumer_lag\":{},\"group_lag\":{},\"rows_inserted\":{},\"event_lag_p99_ms\":{:.1}{shards}}}",
            self.problem().unwrap_or("ok"),
            self.clickhouse_up.load(Ordering::Acquire),
            self.assigned_partitions.load(Ordering::Relaxed),
            self.stalled_partitions.load(Ordering::Relaxed),
            self.paused.load(Ordering::Relaxed),
            self.consumer_lag.load(Ordering::Relaxed),
            self.group_lag.load(Ordering::Relaxed),
            self.rows_inserted(),
            lag.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }
}

impl Collector for SinkMetrics {
    fn part(&self) -> &'static str {
        "sink"
    }

    fn collect(&self, out: &mut Exposition<'_>) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, v) in [
            ("sink_rows_inserted_total", "Rows ClickHouse confirmed.", &self.rows_inserted),
            ("sink_batches_inserted_total", "Inserts ClickHouse confirmed.", &self.batches_inserted),
            ("sink_bytes_inserted_total", "Native block bytes inserted.", &self.bytes_inserted),
            (
                "sink_insert_failures_total",
                "Insert attempts that failed (each is retried).",
                &self.insert_failures,
            ),
            (
                "sink_duplicates_skipped_total",
                "Events dropped by the dedup window (client retries).",
                &self.duplicates_skipped,
            ),
            (
                "sink_records_already_stored_total",
                "Records skipped because ClickHouse already held their offset.",
                &self.records_already_stored,
            ),
            (
                "sink_offset_gaps_total",
                "Times the broker delivered a partition's records with offsets missing in between.",
                &self.offset_gaps,
            ),
            (
                "sink_offset_gap_records_total",
                "Offsets the broker skipped in those gaps (records never delivered).",
                &self.offset_gap_records,
            ),
            (
                "sink_dead_letters_total",
                "Undecodable records sent to the dead-letter topic.",
                &self.dead_letters,
            ),
            (
                "sink_dead_letter_failures_total",
                "Dead letters the broker did not take (the record is held and tried again; nothing is committed past it).",
                &self.dead_letter_failures,
            ),
            ("sink_retention_runs_total", "Retention job runs.", &self.retention_runs),
            (
                "sink_retention_failures_total",
                "Retention job runs that failed.",
                &self.retention_failures,
            ),
            (
                "sink_retention_partitions_dropped_total",
                "Expired partitions dropped by the retention job.",
                &self.retention_partitions_dropped,
            ),
            (
                "sink_rejoins_total",
                "Times the sink rejoined its group because it owned nothing while partitions stalled.",
                &self.rejoins,
            ),
            (
                "sink_partition_fences_total",
                "Partitions taken over: earlier owners' staging tables dropped after their queries ended.",
                &self.fences,
            ),
            (
                "sink_self_fences_total",
                "Own staging table replaced after an attempt with an unknown outcome.",
                &self.self_fences,
            ),
            (
                "sink_fenced_total",
                "Times a newer owner had dropped this sink's staging table (batch part dropped, group rejoined).",
                &self.fenced,
            ),
            (
                "sink_rollup_repairs_total",
                "Roll-up parts written for an insert whose view had failed.",
                &self.rollup_repairs,
            ),
            (
                "sink_receipts_duplicated_total",
                "Inserts found stored more than once in events or a roll-up (must stay 0).",
                &self.receipts_duplicated,
            ),
            (
                "sink_replica_failovers_total",
                "Times an insert moved to another replica of its shard after the one written failed or did not answer.",
                &self.replica_failovers,
            ),
        ] {
            out.counter(name, help, load(v));
        }
        if let Some(shards) = self.shards.get() {
            let up: Vec<(String, i64)> = shards
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    // Replicas not asked yet are left out.
                    s.replicas.iter().filter_map(move |(url, st)| {
                        let st = st.load(Ordering::Acquire);
                        (st != REPLICA_UNKNOWN)
                            .then(|| (format!("{}/{url}", i + 1), i64::from(st == REPLICA_UP)))
                    })
                })
                .collect();
            out.labeled_gauge(
                "sink_clickhouse_replica_up",
                "1 while the replica's last call succeeded, 0 after it failed (absent until asked); label: shard number/replica URL.",
                "replica",
                &up,
            );
        }
        let flag = |a: &AtomicBool| i64::from(a.load(Ordering::Acquire));
        for (name, help, v) in [
            (
                "sink_clickhouse_up",
                "1 while the last ClickHouse call succeeded.",
                flag(&self.clickhouse_up),
            ),
            (
                "sink_consumer_lag",
                "Records not yet committed by the group on the partitions this sink owns (-1: unknown).",
                self.consumer_lag.load(Ordering::Relaxed),
            ),
            (
                "sink_group_lag",
                "Records not yet committed by the group on every partition of the topic (-1: unknown).",
                self.group_lag.load(Ordering::Relaxed),
            ),
            (
                "sink_stalled_partitions",
                "Partitions with records waiting and no commit for the stall time.",
                self.stalled_partitions.load(Ordering::Relaxed),
            ),
            (
                "sink_assigned_partitions",
                "Topic partitions assigned to this sink.",
                self.assigned_partitions.load(Ordering::Relaxed),
            ),
            (
                "sink_paused",
                "1 while this sink's partitions are paused (a batch waits for the inserter, or a record for ClickHouse).",
                flag(&self.paused),
            ),
            (
                "sink_topic_reset_partitions",
                "Partitions held because the broker's log is not the one ClickHouse stored from (topic recreated or broker reset).",
                self.topic_resets.load(Ordering::Relaxed),
            ),
            ("sink_running", "1 when this process runs the sink role.", 1),
        ] {
            out.gauge(name, help, v);
        }
        for stage in SinkStage::ALL {
            out.latency(stage.metric(), &self.histogram(stage));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_replica_reaches_health_metrics_and_the_oncall_snapshot() {
        let m = Arc::new(SinkMetrics::default());
        let shard = |urls: [&str; 2]| ShardHealth::new(urls.map(String::from));
        m.shards
            .set(vec![
                shard(["http://a:1", "http://b:1"]),
                shard(["http://c:1", "http://d:1"]),
            ])
            .unwrap();
        let s = m.shards.get().unwrap();
        s[0].seen(0, true);
        s[0].seen(1, true);
        s[1].seen(0, false);
        s[1].seen(1, false);
        assert_eq!(m.problem(), Some("clickhouse_unreachable"));
        m.clickhouse_up.store(true, Ordering::Release);
        assert_eq!(m.problem(), Some("clickhouse_shard_down"));
        use sonic_rs::JsonValueTrait;
        let health: sonic_rs::Value = sonic_rs::from_str(&m.state_json()).unwrap();
        assert_eq!(health["shards"][1]["state"].as_str(), Some("down"));
        assert_eq!(health["shards"][0]["state"].as_str(), Some("ok"));
        let r = telemetry::Registry::new();
        r.register(m.clone());
        let text = r.render_prometheus();
        assert!(
            text.contains("sink_clickhouse_replica_up{replica=\"2/http://d:1\"} 0"),
            "{text}"
        );
        let stats: sonic_rs::Value = sonic_rs::from_str(&r.render_stats_json(0)).unwrap();
        assert_eq!(
            stats["labeled"]["sink_clickhouse_replica_up"]["1/http://a:1"].as_i64(),
            Some(1),
            "{}",
            r.render_stats_json(0)
        );
    }

    #[test]
    fn batches_reach_the_exposition() {
        let m = Arc::new(SinkMetrics::default());
        m.rows_inserted.fetch_add(300, Ordering::Relaxed);
        m.record_batch(1_000, 20_000, [(2_000_000, 200), (4_000_000, 100)]);
        let r = telemetry::Registry::new();
        r.register(m.clone());
        let text = r.render_prometheus();
        for line in [
            "sink_rows_inserted_total 300",
            "sink_consumer_lag -1",
            "sink_event_lag_seconds_count 300",
            "sink_insert_duration_seconds_count 1",
            "sink_event_lag_hist_seconds_count 300",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let lag = m.histogram(SinkStage::EventLag);
        assert!((1_990_000..=2_010_000).contains(&lag.value_at_quantile(0.5)));
        assert!((3_990_000..=4_010_000).contains(&lag.value_at_quantile(0.99)));
        assert!(m.state_json().contains("\"rows_inserted\":300"));
        assert!(r
            .render_latency_table()
            .contains("# stage: sink_event_lag_seconds"));
    }

    #[test]
    fn the_state_names_what_stops_the_sink() {
        let m = SinkMetrics::default();
        m.clickhouse_up.store(true, Ordering::Release);
        assert_eq!(m.sink_problem(), None);
        assert!(m.state_json().starts_with("{\"state\":\"ok\","));
        assert!(m.state_json().contains("\"group_lag\":-1,"));
        m.stalled_partitions.store(2, Ordering::Relaxed);
        m.group_lag.store(120, Ordering::Relaxed);
        assert_eq!(m.sink_problem(), Some(SinkProblem::PartitionsStalled));
        let j = m.state_json();
        assert!(j.contains("\"state\":\"sink_stalled\""), "{j}");
        assert!(j.contains("\"stalled_partitions\":2,"), "{j}");
        assert!(j.contains("\"group_lag\":120,"), "{j}");
        // ClickHouse down explains the stall: it is named first.
        m.clickhouse_up.store(false, Ordering::Release);
        assert_eq!(m.problem(), Some("clickhouse_unreachable"));
        assert!(m
            .state_json()
            .contains("\"state\":\"clickhouse_unreachable\""));
        // A migration in progress (or waiting for another's) is not an outage.
        m.migrating.store(true, Ordering::Release);
        assert_eq!(m.problem(), Some("migrating"));
    }
}
