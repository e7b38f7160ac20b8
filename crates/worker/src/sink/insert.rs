//! The insert side: one atomic `INSERT … FORMAT Native` per batch, retried
//! until it lands (or a rebalance gives it up), then the offsets commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use clickhouse_client::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::batch::Batch;
use super::rebalance::{Context, Inflight};
use super::{now_us, with_backoff};

/// The insert side: encode, insert (retrying), commit, return the buffers.
pub(super) struct Inserter<'c> {
    ch: Client,
    table: String,
    topic: &'c str,
    backoff_max: Duration,
    metrics: Arc<SinkMetrics>,
    /// The encoded block, reused across batches.
    encoded: Vec<u8>,
}

impl<'c> Inserter<'c> {
    pub(super) fn new(
        ch: Client,
        table: String,
        topic: &'c str,
        backoff_max: Duration,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        Self {
            ch,
            table,
            topic,
            backoff_max,
            metrics,
            encoded: Vec::new(),
        }
    }

    /// Inserts `batch`; false if `give_up()` said so before it landed.
    fn insert(&mut self, batch: &Batch, give_up: impl Fn() -> bool) -> bool {
        if batch.block.rows() == 0 {
            return true;
        }
        let sink = &*self.metrics;
        let mut bytes = std::mem::take(&mut self.encoded);
        bytes.clear();
        batch.block.encode(&mut bytes);
        let started = Instant::now();
        let (ch, table) = (&self.ch, &self.table);
        // Failures are counted before `clickhouse_up` drops, so a reader that
        // sees it down also sees the failure.
        let seen = |ok: bool| {
            if !ok {
                sink.insert_failures.fetch_add(1, Ordering::Relaxed);
            }
            sink.clickhouse_up.store(ok, Ordering::Release);
        };
        let done = with_backoff("insert into ClickHouse", self.backoff_max, give_up, |attempt| {
            if attempt > 0 {
                // The previous attempt may have landed (e.g. timed out after the write).
                if let Some((p, o)) = batch.last_row {
                    let n = ch.query(&format!(
                        "SELECT count() FROM {table} WHERE broker_partition = {p} AND broker_offset = {o} FORMAT TabSeparated"
                    ));
                    seen(n.is_ok());
                    if n?.trim() != "0" {
                        return Ok(());
                    }
                }
            }
            let r = ch.insert_native(table, &bytes);
            seen(r.is_ok());
            Ok(r?)
        })
        .is_some();
        if done {
            let now = now_us();
            let rows = batch.block.rows() as u64;
            sink.rows_inserted.fetch_add(rows, Ordering::Relaxed);
            sink.batches_inserted.fetch_add(1, Ordering::Relaxed);
            sink.bytes_inserted
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
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
                rows,
                bytes = bytes.len(),
                ms = insert.as_millis() as u64,
                "batch inserted"
            );
        }
        self.encoded = bytes;
        done
    }

    /// Commits the batch's offsets. A failed commit is safe: on restart the
    /// offsets ClickHouse holds are skipped.
    fn commit(&self, batch: &Batch, consumer: &BaseConsumer<Context>) {
        if batch.commit.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, next) in &batch.commit {
            let _ = tpl.add_partition_offset(self.topic, p, Offset::Offset(next));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(%e, "offset commit failed; ClickHouse offsets cover it");
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
            if self.insert(&batch, give_up) {
                self.commit(&batch, consumer);
            } else if inflight.abandoned() {
                // A rebalance moved its partitions on: their next owner
                // consumes these records again from the committed offsets.
                warn!(
                    rows = batch.block.rows(),
                    "batch dropped unlanded: its partitions were rebalanced"
                );
            }
            inflight.end();
            // The consumer may already hold a spare; then this one is freed.
            let _ = spare.try_send(batch);
        }
    }
}
