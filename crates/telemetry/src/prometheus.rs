//! Prometheus text exposition (format 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::metrics::{slot_status, STATUS_SLOTS};
use crate::{Metrics, SinkStage, Stage, STATUSES};

impl Metrics {
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
        for c in self.collectors() {
            c.collect(&mut crate::Exposition { text: &mut o });
        }
        o
    }

    fn render_sink(&self, o: &mut String) {
        let s = &self.sink;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let values: [(&str, &str, &str, i64); 20] = [
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
                "sink_offset_gaps_total",
                "Times the broker delivered a partition's records with offsets missing in between.",
                "counter",
                load(&s.offset_gaps),
            ),
            (
                "sink_offset_gap_records_total",
                "Offsets the broker skipped in those gaps (records never delivered).",
                "counter",
                load(&s.offset_gap_records),
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
                "Records not yet committed by the group on the partitions this sink owns (-1: unknown).",
                "gauge",
                s.consumer_lag.load(Ordering::Relaxed),
            ),
            (
                "sink_group_lag",
                "Records not yet committed by the group on every partition of the topic (-1: unknown).",
                "gauge",
                s.group_lag.load(Ordering::Relaxed),
            ),
            (
                "sink_stalled_partitions",
                "Partitions with records waiting and no commit for the stall time.",
                "gauge",
                s.stalled_partitions.load(Ordering::Relaxed),
            ),
            (
                "sink_assigned_partitions",
                "Topic partitions assigned to this sink.",
                "gauge",
                s.assigned_partitions.load(Ordering::Relaxed),
            ),
            (
                "sink_paused",
                "1 while this sink's partitions are paused (a batch waits for the inserter, or a record for ClickHouse).",
                "gauge",
                i64::from(s.paused.load(Ordering::Relaxed)),
            ),
            (
                "sink_rejoins_total",
                "Times the sink rejoined its group because it owned nothing while partitions stalled.",
                "counter",
                load(&s.rejoins),
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
            let h = self.sink_histogram(stage);
            summary(o, &name, &h);
            histogram(o, &name, &h);
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
        for slot in 0..STATUS_SLOTS {
            let n = self.sum(|s| s.requests[slot].load(Ordering::Relaxed));
            let status = slot_status(slot);
            // The usual statuses always; any other once it was answered.
            if n == 0 && !status.is_some_and(|s| STATUSES.contains(&s)) {
                continue;
            }
            match status {
                Some(status) => {
                    let _ = writeln!(o, "ingest_http_responses_total{{status=\"{status}\"}} {n}");
                }
                None => {
                    let _ = writeln!(o, "ingest_http_responses_total{{status=\"other\"}} {n}");
                }
            }
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
            let h = self.merged(stage);
            summary(o, &name, &h);
            histogram(o, &name, &h);
        }
    }
}

/// `# HELP` and `# TYPE` lines of one metric.
pub(crate) fn header(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Metrics without labels, each as `(name, help, type, value)`.
fn unlabelled<V: std::fmt::Display>(o: &mut String, rows: &[(&str, &str, &str, V)]) {
    for (name, help, kind, v) in rows {
        header(o, name, help, kind);
        let _ = writeln!(o, "{name} {v}");
    }
}

/// One sample line: `name{labels} value`.
pub(crate) fn line<V: std::fmt::Display>(o: &mut String, name: &str, labels: &str, v: V) {
    let _ = writeln!(o, "{name}{labels} {v}");
}

/// A Prometheus summary (quantiles in seconds) of a µs histogram.
pub(crate) fn summary(o: &mut String, name: &str, h: &Histogram<u64>) {
    header(o, name, "Latency summary from the HdrHistogram.", "summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
}

/// Upper bounds of the Prometheus histogram buckets, in µs: log-spaced
/// (1, 2.5, 5 per decade) from 50 µs to 60 s.
pub const BUCKET_BOUNDS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The histogram's name beside a summary's: `…_seconds` becomes
/// `…_hist_seconds` (a summary and a histogram cannot share `_sum` and
/// `_count`).
pub fn histogram_name(summary: &str) -> String {
    match summary.strip_suffix("_seconds") {
        Some(base) => format!("{base}_hist_seconds"),
        None => format!("{summary}_hist"),
    }
}

/// A Prometheus histogram (cumulative `_bucket{le}`, `_sum`, `_count`, in
/// seconds) of a µs HdrHistogram: unlike quantiles, buckets sum across
/// nodes, so `histogram_quantile` works over a fleet.
pub(crate) fn histogram(o: &mut String, summary: &str, h: &Histogram<u64>) {
    let name = histogram_name(summary);
    header(
        o,
        &name,
        "Latency histogram from the HdrHistogram (aggregatable across nodes).",
        "histogram",
    );
    for le in BUCKET_BOUNDS_US {
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(0, le)
        };
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {n}", le as f64 / 1e6);
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
}

#[cfg(test)]
mod tests {
    use crate::Metrics;

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [40, 90, 900, 1_200, 80_000, 70_000_000] {
            h.record(v).unwrap();
        }
        let mut o = String::new();
        super::histogram(&mut o, "x_latency_seconds", &h);
        let buckets: Vec<(String, u64)> = o
            .lines()
            .filter_map(|l| l.strip_prefix("x_latency_hist_seconds_bucket{le=\""))
            .map(|l| {
                let (le, n) = l.split_once("\"} ").unwrap();
                (le.to_string(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), super::BUCKET_BOUNDS_US.len() + 1, "{o}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{o}");
        let at = |le: &str| buckets.iter().find(|(l, _)| l == le).unwrap().1;
        assert_eq!(at("0.00005"), 1);
        assert_eq!(at("0.001"), 3);
        assert_eq!(at("0.1"), 5);
        assert_eq!(at("60"), 5, "70 s is past the last bound");
        assert_eq!(at("+Inf"), 6);
        assert!(o.contains("# TYPE x_latency_hist_seconds histogram"), "{o}");
        assert!(o.contains("x_latency_hist_seconds_count 6"), "{o}");
    }

    fn responses_line(text: &str, status: &str) -> Option<String> {
        let prefix = format!("ingest_http_responses_total{{status=\"{status}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    #[test]
    fn every_status_is_counted_under_its_own_label() {
        let m = Metrics::new(2, &["bad"]);
        for s in [417, 417, 501, 505, 500] {
            m.shard(0).count_status(s);
        }
        m.shard(1).count_status(417);
        m.shard(1).count_status(999);
        m.shard(1).count_status(42);
        assert_eq!(m.responses(417), 3);
        assert_eq!(m.responses(501), 1);
        assert_eq!(m.responses(500), 1);
        let text = m.render_prometheus();
        assert_eq!(responses_line(&text, "417").as_deref(), Some("3"), "{text}");
        assert_eq!(responses_line(&text, "501").as_deref(), Some("1"), "{text}");
        assert_eq!(responses_line(&text, "505").as_deref(), Some("1"), "{text}");
        assert_eq!(responses_line(&text, "500").as_deref(), Some("1"), "{text}");
        assert_eq!(
            responses_line(&text, "other").as_deref(),
            Some("2"),
            "{text}"
        );
        // The usual statuses are always there; unusual ones only once seen.
        assert_eq!(responses_line(&text, "429").as_deref(), Some("0"), "{text}");
        assert_eq!(responses_line(&text, "502"), None, "{text}");
        let lines = text
            .lines()
            .filter(|l| l.starts_with("ingest_http_responses_total{"))
            .count();
        assert_eq!(lines, crate::STATUSES.len() + 2, "{text}");
    }
}
