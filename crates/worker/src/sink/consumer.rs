//! The consumer side: resume partitions from ClickHouse, decode, dedup, fill
//! the block, hand it off.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse_client::native::{get_uuid, RowSource};
use clickhouse_client::Client;
use engine_core::config::Config;
use engine_core::record::decode_record;
use engine_core::Tier;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use telemetry::Metrics;
use tracing::{info, warn};
use uuid::Uuid;

use super::batch::Batch;
use super::rebalance::{Context, Inflight};
use super::{now_us, with_backoff};
use crate::dedup::DedupWindow;
use crate::{dlq, Error};

/// Longest single poll, so stop requests and batch age are noticed.
const POLL_MAX: Duration = Duration::from_millis(100);
/// Bytes of one row of the dedup reload: tenant id, event id, receive time.
const RECENT_ROW_BYTES: usize = 16 + 16 + 8;

/// Per-partition state, loaded from ClickHouse when the partition is first seen.
struct PartitionState {
    /// Highest offset ClickHouse holds, or will hold once the batch in flight
    /// lands, for this partition (-1: none).
    stored: i64,
}

/// The consumer side: decode, dedup, fill the block.
pub(super) struct Sink<'c> {
    cfg: &'c Config,
    ch: Client,
    table: String,
    tenants: HashMap<Uuid, (Tier, u16)>,
    partitions: HashMap<i32, PartitionState>,
    batch: Batch,
    /// Partitions of the topic assigned to this sink (after the last rebalance).
    assigned: Vec<i32>,
    /// Ids handed to ClickHouse recently, over all assigned partitions
    /// (those in `batch` included).
    dedup: DedupWindow,
    /// Highest offset handled per partition since the last hand-off.
    offsets: BTreeMap<i32, i64>,
    /// Set when the first record of the current batch arrived.
    oldest: Option<Instant>,
    backoff_max: Duration,
    metrics: Arc<Metrics>,
}

impl<'c> Sink<'c> {
    pub(super) fn new(
        cfg: &'c Config,
        ch: Client,
        table: String,
        tenants: HashMap<Uuid, (Tier, u16)>,
        backoff_max: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let k = &cfg.sink;
        Self {
            cfg,
            ch,
            table,
            tenants,
            partitions: HashMap::new(),
            batch: Batch::new(),
            assigned: Vec::new(),
            dedup: DedupWindow::new(k.dedup_window_secs, k.dedup_max_ids),
            offsets: BTreeMap::new(),
            oldest: None,
            backoff_max,
            metrics,
        }
    }

    fn tenant_class(&mut self, tenant: &[u8; 16]) -> (Tier, u16) {
        let id = Uuid::from_bytes(*tenant);
        if let Some(c) = self.tenants.get(&id) {
            return *c;
        }
        // A tenant created since the last look: read the registry again.
        match clickhouse_client::tenants::list(&self.ch, &self.cfg.clickhouse.database) {
            Ok(rows) => {
                for r in rows {
                    let days = u16::try_from(r.retention_days).unwrap_or(u16::MAX);
                    self.tenants.insert(r.id, (r.tier, days));
                }
                if let Some(c) = self.tenants.get(&id) {
                    return *c;
                }
            }
            Err(e) => warn!(%e, "cannot read the tenant registry"),
        }
        warn!(tenant = %id, "unknown tenant; stored with paid-tier retention");
        let class = (Tier::Paid, Tier::Paid.default_retention_days() as u16);
        self.tenants.insert(id, class);
        class
    }

    /// Reads where partitions `parts` stand in ClickHouse (two queries for
    /// all of them); their recent ids join the dedup window.
    fn load_partitions(&mut self, parts: &[i32]) -> Result<(), Error> {
        let t = &self.table;
        let list = parts
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let stored = self.ch.query(&format!(
            "SELECT broker_partition, max(broker_offset) FROM {t} \
             WHERE broker_partition IN ({list}) GROUP BY broker_partition FORMAT TabSeparated"
        ))?;
        let mut state: HashMap<i32, PartitionState> = parts
            .iter()
            .map(|&p| (p, PartitionState { stored: -1 }))
            .collect();
        for line in stored.lines() {
            if let Some((p, max)) = line.split_once('\t') {
                if let (Ok(p), Ok(max)) = (p.parse::<i32>(), max.parse::<i64>()) {
                    state.insert(p, PartitionState { stored: max });
                }
            }
        }
        // The newest ids of the window, oldest first, as 40-byte binary rows.
        let k = &self.cfg.sink;
        let since = (now_us() / 1_000_000).saturating_sub(k.dedup_window_secs as i64);
        let recent = self.ch.query_binary(
            &format!(
                "SELECT tenant_id, event_id, received_at_us FROM \
                 (SELECT tenant_id, event_id, received_at_us FROM {t} \
                  WHERE broker_partition IN ({list}) AND received_at >= toDateTime({since}) \
                  ORDER BY received_at_us DESC LIMIT {max}) \
                 ORDER BY received_at_us FORMAT RowBinary",
                max = k.dedup_max_ids
            ),
            (k.dedup_max_ids as u64 + 1) * RECENT_ROW_BYTES as u64,
        )?;
        for row in recent.chunks_exact(RECENT_ROW_BYTES) {
            // chunks_exact: every row is RECENT_ROW_BYTES long.
            let field = |at: usize| -> [u8; 16] { row[at..at + 16].try_into().unwrap_or_default() };
            let at = i64::from_le_bytes(row[32..40].try_into().unwrap_or_default());
            self.dedup
                .insert((get_uuid(&field(0)), get_uuid(&field(16))), at);
        }
        info!(
            partitions = %list,
            dedup_ids = self.dedup.len(),
            "partitions resumed from ClickHouse"
        );
        self.partitions.extend(state);
        Ok(())
    }

    /// Drops the batch being built and all partition state: partitions moved,
    /// and each is reloaded from ClickHouse when its records come again.
    fn discard(&mut self) {
        self.batch.clear();
        self.partitions.clear();
        self.dedup.clear();
        self.offsets.clear();
        self.oldest = None;
    }

    fn due(&self) -> bool {
        let k = &self.cfg.sink;
        let block = &self.batch.block;
        block.rows() >= k.batch_max_rows
            || block.bytes() >= k.batch_max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(k.batch_max_age_ms))
    }

    /// Closes the batch and hands it to the inserter; blocks while the
    /// previous one is still being inserted. Its ids are in the dedup window
    /// already and its offsets count as stored from now: the inserter retries
    /// until they land or the process stops, and a rebalance waits for it.
    pub(super) fn hand_off(
        &mut self,
        to_inserter: &SyncSender<Batch>,
        spare: &Receiver<Batch>,
        inflight: &Inflight,
    ) -> bool {
        if self.oldest.is_none() {
            return true;
        }
        self.dedup.expire(now_us());
        let mut next = spare.try_recv().unwrap_or_else(|_| Batch::new());
        next.clear();
        let mut batch = std::mem::replace(&mut self.batch, next);
        for (&p, &o) in &self.offsets {
            if let Some(s) = self.partitions.get_mut(&p) {
                s.stored = s.stored.max(o);
            }
            batch.commit.push((p, o + 1));
        }
        batch.opened = self.oldest.take().unwrap_or_else(Instant::now);
        self.offsets.clear();
        inflight.begin();
        if to_inserter.send(batch).is_err() {
            inflight.end();
            return false;
        }
        true
    }

    fn handle(
        &mut self,
        m: &BorrowedMessage<'_>,
        dlq: &ThreadedProducer<DefaultProducerContext>,
        stop: &AtomicBool,
    ) -> bool {
        let (p, off) = (m.partition(), m.offset());
        if !self.partitions.contains_key(&p) {
            // Every assigned partition not loaded yet, at once.
            let mut parts: Vec<i32> = self.assigned.iter().copied().chain([p]).collect();
            parts.retain(|q| !self.partitions.contains_key(q));
            parts.sort_unstable();
            parts.dedup();
            let backoff_max = self.backoff_max;
            if with_backoff("resume from ClickHouse", backoff_max, stop, |_| {
                self.load_partitions(&parts)
            })
            .is_none()
            {
                return false;
            }
        }
        self.oldest.get_or_insert_with(Instant::now);
        let prev = self.offsets.entry(p).or_insert(off);
        *prev = (*prev).max(off);
        if off <= self.partitions[&p].stored {
            let sink = &self.metrics.sink;
            sink.records_already_stored.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let payload = m.payload().unwrap_or_default();
        let batch = match decode_record(payload) {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                warn!(partition = p, offset = off, %reason, "undecodable record sent to the dead-letter topic");
                let topic = &self.cfg.sink.dlq_topic;
                let sent = with_backoff("dead-letter produce", self.backoff_max, stop, |_| {
                    dlq::send(dlq, topic, m.key(), payload, &reason, p, off)
                })
                .is_some();
                if sent {
                    self.metrics
                        .sink
                        .dead_letters
                        .fetch_add(1, Ordering::Relaxed);
                }
                return sent;
            }
        };
        let (tier, retention_days) = self.tenant_class(&batch.tenant_id);
        let received = batch.received_at_us.to_native();
        let src = RowSource {
            partition: p,
            offset: off,
            tier,
            retention_days,
        };
        let (mut rows, mut dups) = (0, 0);
        for e in batch.events.iter() {
            if !self.dedup.insert((batch.tenant_id, e.id), received) {
                dups += 1;
                continue;
            }
            self.batch.block.push(batch, e, src);
            rows += 1;
        }
        if rows > 0 {
            self.batch.received.push((received, rows));
            self.batch.last_row = Some((p, off));
        }
        if dups > 0 {
            let sink = &self.metrics.sink;
            sink.duplicates_skipped.fetch_add(dups, Ordering::Relaxed);
        }
        true
    }
}

/// The consumer loop; false when stopped mid-way (nothing more to hand off).
pub(super) fn consume(
    sink: &mut Sink<'_>,
    consumer: &BaseConsumer<Context>,
    dlq: &ThreadedProducer<DefaultProducerContext>,
    to_inserter: &SyncSender<Batch>,
    spare: &Receiver<Batch>,
    inflight: &Inflight,
    stop: &AtomicBool,
) -> bool {
    while !stop.load(Ordering::SeqCst) {
        let msg = consumer.poll(POLL_MAX);
        if consumer.context().rebalanced.swap(false, Ordering::SeqCst) {
            // Partitions moved: what is not handed off will be consumed again
            // by whoever owns them now; drop it here and reload state.
            sink.discard();
            sink.assigned = consumer
                .assignment()
                .map(|tpl| {
                    tpl.elements_for_topic(&sink.cfg.redpanda.topic)
                        .iter()
                        .map(|e| e.partition())
                        .collect()
                })
                .unwrap_or_default();
        }
        match msg {
            Some(Ok(m)) if !sink.handle(&m, dlq, stop) => return false,
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!(%e, "consumer error"),
            None => {}
        }
        if sink.due() && !sink.hand_off(to_inserter, spare, inflight) {
            return false;
        }
    }
    true
}
