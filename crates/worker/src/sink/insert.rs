//! The insert side: each broker partition's part of a batch lands through
//! [`super::land`] (one insert per ClickHouse partition, retried until it
//! lands or a rebalance gives it up), then that partition's offsets commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::batch::{Batch, Part};
use super::land::{Lander, NotLanded, Progress, Rows};
use super::rebalance::{Context, Inflight};
use super::{now_us, with_backoff};

/// How one partition's part ended.
enum Outcome {
    Landed,
    /// Another sink owns the partition now: nothing of it is committed.
    Fenced,
    /// Stopping, or a rebalance dropped it: its records come again.
    GaveUp,
}

/// The insert side: encode, land (retrying), commit, return the buffers.
pub(super) struct Inserter<'c> {
    lander: Lander,
    topic: &'c str,
    backoff_max: Duration,
    metrics: Arc<SinkMetrics>,
    /// The encoded block, reused across parts.
    encoded: Vec<u8>,
}

impl<'c> Inserter<'c> {
    pub(super) fn new(
        lander: Lander,
        topic: &'c str,
        backoff_max: Duration,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        Self {
            lander,
            topic,
            backoff_max,
            metrics,
            encoded: Vec::new(),
        }
    }

    /// Lands `part`: encoded once, the same bytes on every retry.
    fn land(&mut self, part: &Part, give_up: &impl Fn() -> bool) -> Outcome {
        if part.inserts.is_empty() {
            // Nothing to write, but only an owner commits.
            return if self.lander.stages().owns(part.partition) {
                Outcome::Landed
            } else {
                Outcome::Fenced
            };
        }
        let mut bytes = std::mem::take(&mut self.encoded);
        bytes.clear();
        part.block.encode(&mut bytes);
        let mut progress = Progress::new(part.inserts.len(), false);
        let p = part.partition;
        let lander = &self.lander;
        let outcome =
            with_backoff(
                "insert into ClickHouse",
                self.backoff_max,
                give_up,
                |_| match lander.land(p, &part.inserts, Rows::Block(&bytes), &mut progress) {
                    Ok(()) => Ok(true),
                    Err(NotLanded::Fenced) => Ok(false),
                    Err(NotLanded::Failed(e)) => Err(e),
                },
            );
        let sink = &*self.metrics;
        let outcome = match outcome {
            Some(true) => {
                sink.bytes_inserted
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                sink.batches_inserted
                    .fetch_add(part.inserts.len() as u64, Ordering::Relaxed);
                sink.rows_inserted.fetch_add(part.rows(), Ordering::Relaxed);
                Outcome::Landed
            }
            Some(false) => {
                warn!(
                    partition = p,
                    rows = part.rows(),
                    "another sink took this partition over; its part of the batch is dropped (its new owner consumes it again)"
                );
                Outcome::Fenced
            }
            None => Outcome::GaveUp,
        };
        self.encoded = bytes;
        outcome
    }

    /// Lands every part of `batch`; false if `give_up()` said so first.
    fn insert(
        &mut self,
        batch: &Batch,
        consumer: &BaseConsumer<Context>,
        give_up: impl Fn() -> bool,
    ) -> bool {
        let started = Instant::now();
        for part in &batch.parts {
            match self.land(part, &give_up) {
                Outcome::Landed => self.commit(part, consumer),
                Outcome::Fenced => {}
                Outcome::GaveUp => return false,
            }
        }
        let now = now_us();
        let insert = started.elapsed();
        let age = started.saturating_duration_since(batch.opened);
        self.metrics.record_batch(
            age.as_micros() as u64,
            insert.as_micros() as u64,
            batch
                .received
                .iter()
                .map(|&(at, n)| (u64::try_from(now - at).unwrap_or(0), n)),
        );
        debug!(
            rows = batch.rows(),
            parts = batch.parts.len(),
            ms = insert.as_millis() as u64,
            "batch inserted"
        );
        true
    }

    /// Commits one part's offsets. A failed commit is safe: on restart the
    /// receipts in ClickHouse say what is stored.
    fn commit(&self, part: &Part, consumer: &BaseConsumer<Context>) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(self.topic, part.partition, Offset::Offset(part.last + 1));
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(%e, "offset commit failed; the receipts in ClickHouse cover it");
        }
    }

    pub(super) fn run(
        &mut self,
        batches: Receiver<Batch>,
        spare: SyncSender<Batch>,
        consumer: &BaseConsumer<Context>,
        inflight: &Inflight,
        stop: &AtomicBool,
    ) {
        for batch in batches {
            let give_up = || stop.load(Ordering::SeqCst) || inflight.abandoned();
            if !self.insert(&batch, consumer, give_up) && inflight.abandoned() {
                // A rebalance moved its partitions on: their next owner
                // consumes these records again from the committed offsets
                // (and skips what the receipts show landed).
                warn!(
                    rows = batch.rows(),
                    "batch dropped unlanded: its partitions were rebalanced"
                );
            }
            inflight.end();
            // The consumer may already hold a spare; then this one is freed.
            let _ = spare.try_send(batch);
        }
    }
}
