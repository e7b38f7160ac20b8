//! `[redpanda]`: the broker, the topic, and the producer that writes to it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{millis, Brokers};
use super::{invalid, ConfigError};

/// When `POST /ingest` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the broker acknowledged every accepted event (`acks=all`). Default.
    Broker,
    /// Opt-in: after the events were handed to the producer, before the broker
    /// acknowledged them. Faster; events in flight are lost if the process dies.
    Received,
}

/// Record compression used by the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

/// Broker and producer settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedpandaConfig {
    /// Bootstrap brokers: `"host:port,host:port"` or an array of them.
    pub brokers: Brokers,
    /// Topic accepted events are written to.
    pub topic: String,
    /// Partitions when the engine creates the topic.
    pub partitions: i32,
    /// Replication factor when the engine creates the topic.
    pub replication_factor: i32,
    /// Most records per produce batch (librdkafka `batch.num.messages`).
    pub batch_size: u32,
    /// Most bytes per produce batch (librdkafka `batch.size`).
    pub batch_bytes: u32,
    /// Time the producer waits to fill a batch (librdkafka `linger.ms`).
    #[serde(with = "millis")]
    pub linger_ms: Duration,
    pub compression: Compression,
    /// Records each shard may have queued for the producer thread; full = 503.
    pub ring_capacity: usize,
    /// Bound on librdkafka's own send queue, in KiB (`queue.buffering.max.kbytes`).
    pub queue_max_kbytes: u32,
    /// `broker` (default) or `received`.
    pub ack_mode: AckMode,
    /// How often broker health is probed, in ms.
    #[serde(with = "millis")]
    pub health_interval_ms: Duration,
    /// Extra librdkafka properties (e.g. `security.protocol`), passed through.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for RedpandaConfig {
    fn default() -> Self {
        Self {
            brokers: Brokers::parse(["localhost:9092"]).unwrap_or_else(|_| unreachable!()),
            topic: "events".into(),
            partitions: 6,
            replication_factor: 1,
            batch_size: 1000,
            batch_bytes: 1024 * 1024,
            linger_ms: Duration::from_millis(2),
            compression: Compression::Lz4,
            ring_capacity: 1024,
            queue_max_kbytes: 256 * 1024,
            ack_mode: AckMode::Broker,
            health_interval_ms: Duration::from_secs(1),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl RedpandaConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.topic.trim().is_empty() {
            return Err(invalid("redpanda.topic", "must not be empty"));
        }
        if self.partitions < 1 {
            return Err(invalid("redpanda.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(invalid("redpanda.replication_factor", "must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            return Err(invalid("redpanda.batch_size", "must be 1..=1000000"));
        }
        if self.ring_capacity == 0 {
            return Err(invalid("redpanda.ring_capacity", "must be greater than 0"));
        }
        Ok(())
    }
}
