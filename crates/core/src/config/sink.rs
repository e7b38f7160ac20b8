//! `[sink]`: the worker that moves records from the broker into ClickHouse.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{millis, secs};
use super::{invalid, ConfigError};

/// The worker: consumer group, batching, dead letters, dedup.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Consumer group of the workers.
    pub consumer_group: String,
    /// A batch is inserted when it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or this many bytes (encoded, approximate)...
    pub batch_max_bytes: usize,
    /// ...or its oldest record waited this long, in ms.
    #[serde(with = "millis")]
    pub batch_max_age_ms: Duration,
    /// Topic for records that cannot be decoded.
    pub dlq_topic: String,
    /// Longest wait between insert retries while ClickHouse is down, in ms.
    #[serde(with = "millis")]
    pub retry_backoff_max_ms: Duration,
    /// Time a retried client batch (same tenant, same event ids) is recognised, in s.
    #[serde(with = "secs")]
    pub dedup_window_secs: Duration,
    /// Most event ids remembered for dedup per worker, over all its partitions
    /// (bounds memory, ~80 B each).
    pub dedup_max_ids: usize,
    /// Timeout of one ClickHouse request, in ms.
    #[serde(with = "millis")]
    pub clickhouse_timeout_ms: Duration,
    /// Run `migrate` when the sink starts.
    pub migrate_on_start: bool,
    /// How often expired partitions are dropped, in s (`0` disables the job).
    #[serde(with = "secs")]
    pub retention_interval_secs: Duration,
    /// Longest time the broker may hold a fetch waiting for data, in ms
    /// (librdkafka's `fetch.wait.max.ms`). Short, because some brokers
    /// (tansu) wait it out even when data is there.
    #[serde(with = "millis")]
    pub fetch_wait_max_ms: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            consumer_group: "ingestion-engine-sink".into(),
            batch_max_rows: 100_000,
            batch_max_bytes: 64 << 20,
            batch_max_age_ms: Duration::from_secs(1),
            dlq_topic: "events-dlq".into(),
            retry_backoff_max_ms: Duration::from_secs(10),
            dedup_window_secs: Duration::from_secs(600),
            dedup_max_ids: 2_000_000,
            clickhouse_timeout_ms: Duration::from_secs(30),
            migrate_on_start: true,
            retention_interval_secs: Duration::from_secs(3600),
            fetch_wait_max_ms: Duration::from_millis(50),
        }
    }
}

impl SinkConfig {
    pub(super) fn check(&self, topic: &str) -> Result<(), ConfigError> {
        if self.batch_max_rows == 0 || self.batch_max_bytes == 0 || self.batch_max_age_ms.is_zero()
        {
            return Err(invalid(
                "sink.batch_max_rows",
                "batch bounds must be greater than 0",
            ));
        }
        if self.dlq_topic == topic {
            return Err(invalid("sink.dlq_topic", "must differ from redpanda.topic"));
        }
        Ok(())
    }
}
