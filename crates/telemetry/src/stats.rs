//! The on-call page's data (`GET /debug/stats`): one JSON snapshot of every
//! counter, gauge and latency histogram, for a page that polls it every
//! second and draws rates (from counter deltas) and latency by percentile.
//!
//! Each histogram comes twice: exact percentiles since start (from the
//! HdrHistogram, at [`PERCENTILES`]), and cumulative counts at fixed
//! log-spaced bounds ([`stats_bounds_us`], 20 per decade), so the page can
//! subtract two snapshots and draw the last seconds alone.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use crate::metrics::{slot_status, STATUS_SLOTS};
use crate::{Metrics, SinkStage, Stage};

/// Percentiles of the since-start curves: the "nines" from 50% to 99.999%.
pub const PERCENTILES: [f64; 12] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// Bucket bounds of the windowed histograms, in µs: 20 per decade from
/// 10 µs to 60 s (12% apart, so a windowed percentile is within 12%).
pub fn stats_bounds_us() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out: Vec<u64> = (0..)
            .map(|i| (10.0 * 10f64.powf(f64::from(i) / 20.0)).round() as u64)
            .take_while(|&b| b < 60_000_000)
            .collect();
        out.dedup();
        out.push(60_000_000);
        out
    })
}

fn histogram_json(o: &mut String, name: &str, h: &Histogram<u64>) {
    let bounds = stats_bounds_us();
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let i = bounds.partition_point(|&b| b < value);
        counts[i] += v.count_since_last_iteration();
    }
    let _ = write!(o, "\"{name}\":{{\"count\":{},\"percentiles_us\":[", h.len());
    for (i, p) in PERCENTILES.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let v = if h.is_empty() {
            0
        } else {
            h.value_at_percentile(*p)
        };
        let _ = write!(o, "{sep}{v}");
    }
    let _ = write!(o, "],\"cumulative\":[");
    let mut total = 0;
    for (i, c) in counts.iter().take(bounds.len()).enumerate() {
        total += c;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(o, "{sep}{total}");
    }
    let _ = write!(o, "]}}");
}

fn pairs<V: std::fmt::Display>(o: &mut String, rows: &[(&str, V)]) {
    for (i, (k, v)) in rows.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(o, "{sep}\"{k}\":{v}");
    }
}

impl Metrics {
    /// The snapshot `GET /debug/stats` answers; `now_ms` is the wall clock.
    pub fn render_stats_json(&self, now_ms: u64) -> String {
        let mut o = String::with_capacity(16 * 1024);
        let edge = !self.shards.is_empty();
        let sink = self.sink.running.load(Ordering::Relaxed);
        let _ = write!(
            o,
            "{{\"time_ms\":{now_ms},\"edge\":{edge},\"sink\":{sink},\"bounds_us\":["
        );
        for (i, b) in stats_bounds_us().iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}{b}");
        }
        let _ = write!(o, "],\"percentiles\":[");
        for (i, p) in PERCENTILES.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}{p}");
        }
        o.push_str("],\"counters\":{");
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let p = &self.producer;
        let s = &self.sink;
        pairs(
            &mut o,
            &[
                ("events_accepted", self.events_accepted()),
                (
                    "rate_limited_events",
                    self.sum(|s| load(&s.rate_limited_events)),
                ),
                ("bytes_received", self.sum(|s| load(&s.bytes_received))),
                ("connections", self.sum(|s| load(&s.connections_total))),
                (
                    "connections_refused",
                    self.sum(|s| load(&s.connections_refused)),
                ),
                ("broker_records_produced", load(&p.records_produced)),
                ("broker_records_failed", load(&p.records_failed)),
                ("broker_errors", load(&p.broker_errors)),
                ("sink_rows_inserted", load(&s.rows_inserted)),
                ("sink_batches_inserted", load(&s.batches_inserted)),
                ("sink_insert_failures", load(&s.insert_failures)),
                ("sink_duplicates_skipped", load(&s.duplicates_skipped)),
                ("sink_dead_letters", load(&s.dead_letters)),
                ("sink_offset_gap_records", load(&s.offset_gap_records)),
            ],
        );
        o.push_str("},\"rejected\":{");
        let rejected: Vec<(&str, u64)> = self
            .reasons
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, self.sum(|s| load(&s.events_rejected[i]))))
            .collect();
        pairs(&mut o, &rejected);
        o.push_str("},\"responses\":{");
        let mut first = true;
        for slot in 0..STATUS_SLOTS {
            let n = self.sum(|s| load(&s.requests[slot]));
            if n == 0 {
                continue;
            }
            let status = slot_status(slot).map_or("other".to_string(), |s| s.to_string());
            let sep = if first { "" } else { "," };
            first = false;
            let _ = write!(o, "{sep}\"{status}\":{n}");
        }
        o.push_str("},\"gauges\":{");
        let open: i64 = self
            .shards
            .iter()
            .map(|s| s.connections_open.load(Ordering::Relaxed).max(0))
            .sum();
        pairs(
            &mut o,
            &[
                ("connections_open", open),
                (
                    "ring_capacity",
                    self.ring_capacity.load(Ordering::Relaxed) as i64,
                ),
                ("broker_up", i64::from(p.broker_up.load(Ordering::Relaxed))),
                (
                    "broker_inflight_records",
                    p.inflight_records.load(Ordering::Relaxed),
                ),
                ("sink_consumer_lag", s.consumer_lag.load(Ordering::Relaxed)),
                ("sink_group_lag", s.group_lag.load(Ordering::Relaxed)),
                (
                    "sink_clickhouse_up",
                    i64::from(s.clickhouse_up.load(Ordering::Relaxed)),
                ),
                ("sink_paused", i64::from(s.paused.load(Ordering::Relaxed))),
                (
                    "sink_assigned_partitions",
                    s.assigned_partitions.load(Ordering::Relaxed),
                ),
            ],
        );
        o.push_str("},\"ring_depth\":[");
        for (i, d) in self.ring_depth.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}{}", d.load(Ordering::Relaxed));
        }
        o.push_str("],\"latency\":{");
        let mut first = true;
        let mut stage = |o: &mut String, name: &str, h: Histogram<u64>| {
            if !first {
                o.push(',');
            }
            first = false;
            histogram_json(o, name, &h);
        };
        if edge {
            for st in Stage::ALL {
                stage(&mut o, &format!("ingest_{}", st.name()), self.merged(st));
            }
        }
        if sink {
            for st in SinkStage::ALL {
                stage(
                    &mut o,
                    &format!("sink_{}", st.name()),
                    self.sink_histogram(st),
                );
            }
        }
        o.push_str("}}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalHistograms;

    #[test]
    fn the_snapshot_is_json_with_exact_and_bucketed_latencies() {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        let m = Metrics::new(2, &["bad"]);
        m.shard(0).count_status(200);
        m.shard(1).events_accepted.fetch_add(7, Ordering::Relaxed);
        let mut local = LocalHistograms::new(0);
        for v in 1..=1000u64 {
            local.record(Stage::Request, v * 100);
        }
        local.publish(&m);
        let v: sonic_rs::Value = sonic_rs::from_str(&m.render_stats_json(1234)).unwrap();
        assert_eq!(v["time_ms"].as_u64(), Some(1234));
        assert_eq!(v["counters"]["events_accepted"].as_u64(), Some(7));
        assert_eq!(v["responses"]["200"].as_u64(), Some(1));
        assert_eq!(v["ring_depth"].as_array().unwrap().len(), 2);
        let req = &v["latency"]["ingest_request"];
        assert_eq!(req["count"].as_u64(), Some(1000));
        // Exact since-start percentiles: p50 of 100..=100,000 µs.
        let p50 = req["percentiles_us"][0].as_u64().unwrap();
        assert!((49_900..=50_100).contains(&p50), "{p50}");
        // Cumulative bucket counts, one per bound, ending at the total.
        let cum: Vec<u64> = req["cumulative"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        let bounds = stats_bounds_us();
        assert_eq!(cum.len(), bounds.len());
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cum.last(), Some(&1000));
        // Half the values are at most 50 ms: the bucket holding 50 ms says so.
        let i = bounds.partition_point(|&b| b < 50_000);
        assert!((450..=560).contains(&cum[i]), "{} at {}", cum[i], bounds[i]);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((bounds[0], *bounds.last().unwrap()), (10, 60_000_000));
        // No sink on this process: no sink stages.
        assert!(v["latency"].get("sink_event_lag").is_none());
    }
}
