//! The sink's state as JSON, for `/health`.

use std::sync::atomic::Ordering;

use crate::{Metrics, SinkStage};

impl Metrics {
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
}
