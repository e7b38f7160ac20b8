//! The sink's state as JSON, for `/health`, and the one-word verdict a
//! readiness probe can use.

use std::sync::atomic::Ordering;

use crate::{Metrics, SinkStage};

/// Why a running sink is not making progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkProblem {
    /// The last ClickHouse call failed.
    ClickHouseUnreachable,
    /// Partitions have records waiting and no commit for the stall time,
    /// e.g. nobody in the group owns them.
    PartitionsStalled,
}

impl SinkProblem {
    /// The `reason` word of `/health/ready` and the sink's `state` in `/health`.
    pub fn reason(self) -> &'static str {
        match self {
            SinkProblem::ClickHouseUnreachable => "clickhouse_unreachable",
            SinkProblem::PartitionsStalled => "sink_stalled",
        }
    }
}

impl Metrics {
    /// What keeps the sink from making progress, if anything.
    pub fn sink_problem(&self) -> Option<SinkProblem> {
        let s = &self.sink;
        if !s.clickhouse_up.load(Ordering::Acquire) {
            Some(SinkProblem::ClickHouseUnreachable)
        } else if s.stalled_partitions.load(Ordering::Relaxed) > 0 {
            Some(SinkProblem::PartitionsStalled)
        } else {
            None
        }
    }

    /// The sink's state as a JSON object, for `/health`: `state` is `ok`, or
    /// the problem's reason.
    pub fn sink_health_json(&self) -> String {
        let s = &self.sink;
        let lag = self.sink_histogram(SinkStage::EventLag);
        format!(
            "{{\"state\":\"{}\",\"running\":{},\"clickhouse_up\":{},\"assigned_partitions\":{},\"stalled_partitions\":{},\"paused\":{},\"consumer_lag\":{},\"group_lag\":{},\"rows_inserted\":{},\"event_lag_p99_ms\":{:.1}}}",
            self.sink_problem().map_or("ok", SinkProblem::reason),
            s.running.load(Ordering::Relaxed),
            s.clickhouse_up.load(Ordering::Acquire),
            s.assigned_partitions.load(Ordering::Relaxed),
            s.stalled_partitions.load(Ordering::Relaxed),
            s.paused.load(Ordering::Relaxed),
            s.consumer_lag.load(Ordering::Relaxed),
            s.group_lag.load(Ordering::Relaxed),
            s.rows_inserted.load(Ordering::Relaxed),
            lag.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn the_state_names_what_stops_the_sink() {
        let m = Metrics::new(0, &[]);
        let s = &m.sink;
        s.running.store(true, Ordering::Relaxed);
        s.clickhouse_up.store(true, Ordering::Release);
        assert_eq!(m.sink_problem(), None);
        assert!(m.sink_health_json().starts_with("{\"state\":\"ok\","));
        assert!(m.sink_health_json().contains("\"group_lag\":-1,"));
        s.stalled_partitions.store(2, Ordering::Relaxed);
        s.group_lag.store(120, Ordering::Relaxed);
        assert_eq!(m.sink_problem(), Some(SinkProblem::PartitionsStalled));
        let j = m.sink_health_json();
        assert!(j.contains("\"state\":\"sink_stalled\""), "{j}");
        assert!(j.contains("\"stalled_partitions\":2,"), "{j}");
        assert!(j.contains("\"group_lag\":120,"), "{j}");
        // ClickHouse down explains the stall: it is named first.
        s.clickhouse_up.store(false, Ordering::Release);
        assert_eq!(m.sink_problem(), Some(SinkProblem::ClickHouseUnreachable));
        assert!(m
            .sink_health_json()
            .contains("\"state\":\"clickhouse_unreachable\""));
    }
}
