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

mod collector;
mod health;
mod latency_table;
mod metrics;
mod prometheus;
mod stats;

pub use collector::{Collector, Exposition};
pub use health::SinkProblem;
pub use latency_table::percentile_table;
pub use metrics::{
    LocalHistograms, Metrics, ProducerCounters, ShardCounters, SinkCounters, SinkStage, Stage,
    STATUSES,
};

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
    use std::sync::atomic::Ordering;

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
