//! `worker`: the sink. A consumer group on the events topic; records become
//! rows of one `Native` block per batch; one insert per batch; offsets
//! committed only after ClickHouse confirmed the insert.
//!
//! Exactly once across crashes: every row carries the broker partition and
//! offset it came from. When a partition is (re)assigned, the worker asks
//! ClickHouse for the highest offset it holds for that partition and skips
//! records at or below it, so a crash between insert and commit writes nothing
//! twice. An insert whose outcome is unknown (timeout) is checked the same way
//! before it is retried.
//!
//! Client retries: see [`dedup`]. Records that cannot be decoded go to the
//! dead-letter topic with the reason ([`dlq`]), never silently dropped.
//! Three threads per sink: the consumer decodes records, drops duplicates and
//! fills a block; the inserter encodes and inserts the previous block, then
//! commits its offsets; a monitor reads the group's lag. Consumer and inserter
//! meet at a rendezvous channel, so one batch is in flight while the next
//! fills (two batches in memory at most), and a rebalance waits for the batch
//! in flight before partitions move (or, if it cannot land within the group's
//! rebalance timeout, drops it: its records are consumed again).
//!
//! ClickHouse down: the inserter retries with backoff; the consumer fills one
//! more batch, then pauses its partitions and keeps polling, so the group
//! sees a live member; both catch up when it returns.
//!
//! The group's lag is read from the broker (committed offsets against high
//! watermarks, every partition, owned or not); partitions that stall while
//! this sink's own do not make it leave and rejoin the group.
//!
//! Start with [`start`].

pub mod dedup;
pub mod dlq;
pub mod retention;
mod sink;
pub mod topic_reset;

pub use sink::metrics::{SinkMetrics, SinkProblem, SinkStage};
pub use sink::{start, SinkHandle};

/// Errors of the sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    ClickHouse(#[from] clickhouse_client::Error),
    #[error(transparent)]
    Broker(#[from] redpanda::Error),
    #[error("broker client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not start the sink thread: {0}")]
    Thread(std::io::Error),
    /// A newer owner of this broker partition dropped the sink's staging
    /// table: the partition is not this sink's any more.
    #[error("partition {0} was taken over by another sink")]
    Fenced(i32),
    /// ClickHouse holds offsets of this partition at or past the broker's
    /// end: the topic is not the one they were stored from.
    #[error(
        "partition {partition}: ClickHouse stores offsets up to {stored} but the broker's end is {end}: \
         the topic was recreated or the broker lost its data; the sink holds this partition \
         rather than skip its records as stored: once the new log is the one to keep, run \
         `ingestion-engine sink accept-reset` (see docs/guarantees.md, \"Topic reset\")"
    )]
    TopicReset {
        partition: i32,
        stored: i64,
        end: i64,
    },
    /// The broker's record at the offset this partition's newest receipt
    /// ends at is not the one stored there: the topic is another one.
    #[error(
        "partition {partition}: the broker's record at offset {offset} is not the one ClickHouse stored from there: \
         the topic was recreated (or the broker lost its data) and has grown past the old end; the sink holds \
         this partition rather than skip its records as stored: once the new log is the one to keep, run \
         `ingestion-engine sink accept-reset` (see docs/guarantees.md, \"Topic reset\")"
    )]
    TopicChanged { partition: i32, offset: i64 },
    /// An operator's command that would lose or double records if it went
    /// on (`dlq replay`, `sink accept-reset`): what and why.
    #[error("{0}")]
    Refused(String),
    /// Retention would drop data on a clock that ClickHouse's contradicts.
    #[error(
        "this node's clock is {skew_secs} s off ClickHouse's (more than {max_secs} s): \
         retention does not run until they agree"
    )]
    ClockSkew { skew_secs: i64, max_secs: i64 },
}
