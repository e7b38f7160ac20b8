//! The sink thread: consume, batch, insert, commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse_client::native::{get_uuid, EventsBlock, RowSource};
use clickhouse_client::schema::migrate;
use clickhouse_client::Client;
use engine_core::config::Config;
use engine_core::record::decode_record;
use engine_core::Tier;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use telemetry::Metrics;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::dedup::DedupWindow;
use crate::{dlq, Error};

/// First wait between retries; doubles up to `sink.retry_backoff_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest single poll, so stop requests and batch age are noticed.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Bytes of one row of the dedup reload: tenant id, event id, receive time.
const RECENT_ROW_BYTES: usize = 16 + 16 + 8;
/// How often librdkafka reports consumer statistics (consumer lag).
const STATS_INTERVAL_MS: &str = "1000";

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SinkHandle {
    /// Flushes the current batch and stops.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Runs the retention job every `sink.retention_interval_secs`.
fn retention_loop(cfg: &Config, stop: &AtomicBool, metrics: &Metrics) {
    let every = Duration::from_secs(cfg.sink.retention_interval_secs);
    let ch = Client::new(
        &cfg.clickhouse.url,
        Duration::from_millis(cfg.sink.clickhouse_timeout_ms),
    );
    let m = &metrics.sink;
    loop {
        let deadline = Instant::now() + every;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::park_timeout(deadline - Instant::now());
        }
        let today = time::OffsetDateTime::now_utc().date();
        m.retention_runs.fetch_add(1, Ordering::Relaxed);
        match crate::retention::run_once(&ch, &cfg.clickhouse.database, today) {
            Ok(r) => {
                m.retention_partitions_dropped
                    .fetch_add(r.dropped.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                m.retention_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%e, "retention run failed; next run retries");
            }
        }
    }
}

/// Starts the sink (and its retention job) on their own threads; it reports
/// into `metrics.sink`.
pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<SinkHandle, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    metrics.sink.running.store(true, Ordering::Relaxed);
    if config.sink.retention_interval_secs > 0 {
        let (stop, config, metrics) = (stop.clone(), config.clone(), metrics.clone());
        threads.push(
            thread::Builder::new()
                .name("retention".into())
                .spawn(move || retention_loop(&config, &stop, &metrics))
                .map_err(Error::Thread)?,
        );
    }
    let stop_sink = stop.clone();
    threads.push(
        thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                if let Err(e) = run(&config, &stop_sink, metrics) {
                    warn!(%e, "sink stopped with an error");
                }
            })
            .map_err(Error::Thread)?,
    );
    Ok(SinkHandle { stop, threads })
}

/// Batches handed to the inserter and not yet committed (0 or 1).
#[derive(Debug, Default)]
struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Inflight {
    fn begin(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn end(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Context {
    rebalanced: AtomicBool,
    inflight: Arc<Inflight>,
    metrics: Arc<Metrics>,
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        // Partition -1 is librdkafka's internal one; unassigned ones report -1.
        let lag: i64 = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.metrics.sink.consumer_lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.rebalanced.store(true, Ordering::SeqCst);
        // The batch in flight must land and commit before these partitions
        // move: their next owner resumes from what ClickHouse holds.
        self.inflight.wait_idle();
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let n = match r {
            Rebalance::Assign(tpl) => tpl.count() as i64,
            _ => 0,
        };
        self.metrics
            .sink
            .assigned_partitions
            .store(n, Ordering::Relaxed);
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Retries `f` with exponential backoff until it succeeds or `stop` is set.
fn with_backoff<T>(
    what: &str,
    max: Duration,
    stop: &AtomicBool,
    mut f: impl FnMut(u32) -> Result<T, Error>,
) -> Option<T> {
    let mut wait = BACKOFF_START;
    let mut attempt = 0;
    loop {
        match f(attempt) {
            Ok(v) => return Some(v),
            Err(e) => {
                if attempt == 0 || attempt % 10 == 0 {
                    warn!(%e, attempt, "{what} failed; retrying");
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        thread::sleep(wait);
        wait = (wait * 2).min(max);
        attempt += 1;
    }
}

/// Per-partition state, loaded from ClickHouse when the partition is first seen.
struct PartitionState {
    /// Highest offset ClickHouse holds, or will hold once the batch in flight
    /// lands, for this partition (-1: none).
    stored: i64,
}

/// A closed batch on its way to ClickHouse. Its buffers come back to the
/// consumer thread for the next batch.
struct Batch {
    block: EventsBlock,
    /// (partition, offset) of the last row, to check an unknown outcome.
    last_row: Option<(i32, i64)>,
    /// Next offset to commit per partition.
    commit: Vec<(i32, i64)>,
    /// When the first record of the batch was consumed.
    opened: Instant,
    /// Edge receive time (µs) and row count of each record in the block.
    received: Vec<(i64, u64)>,
}

impl Batch {
    fn new() -> Self {
        Self {
            block: EventsBlock::new(),
            last_row: None,
            commit: Vec::new(),
            opened: Instant::now(),
            received: Vec::new(),
        }
    }

    fn clear(&mut self) {
        // Keeps the columns' capacity: the next batch writes into warm memory.
        self.block.clear();
        self.last_row = None;
        self.commit.clear();
        self.received.clear();
    }
}

/// The consumer side: decode, dedup, fill the block.
struct Sink<'c> {
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

impl Sink<'_> {
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
    fn hand_off(
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

/// The insert side: encode, insert (retrying), commit, return the buffers.
struct Inserter<'c> {
    ch: Client,
    table: String,
    topic: &'c str,
    backoff_max: Duration,
    metrics: Arc<Metrics>,
    /// The encoded block, reused across batches.
    encoded: Vec<u8>,
}

impl Inserter<'_> {
    /// Inserts `batch`; false if stopped before it landed.
    fn insert(&mut self, batch: &Batch, stop: &AtomicBool) -> bool {
        if batch.block.rows() == 0 {
            return true;
        }
        let sink = &self.metrics.sink;
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
        let done = with_backoff("insert into ClickHouse", self.backoff_max, stop, |attempt| {
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
            self.metrics.record_sink_batch(
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

    fn run(
        &mut self,
        batches: Receiver<Batch>,
        spare: SyncSender<Batch>,
        consumer: &BaseConsumer<Context>,
        inflight: &Inflight,
        stop: &AtomicBool,
    ) {
        for batch in batches {
            if self.insert(&batch, stop) {
                self.commit(&batch, consumer);
            }
            inflight.end();
            // The consumer may already hold a spare; then this one is freed.
            let _ = spare.try_send(batch);
        }
    }
}

fn run(cfg: &Config, stop: &AtomicBool, metrics: Arc<Metrics>) -> Result<(), Error> {
    let k = &cfg.sink;
    let backoff_max = Duration::from_millis(k.retry_backoff_max_ms.max(100));
    let timeout = Duration::from_millis(k.clickhouse_timeout_ms);
    let ch = Client::new(&cfg.clickhouse.url, timeout);
    let db = &cfg.clickhouse.database;
    let what = if k.migrate_on_start {
        "ClickHouse migration"
    } else {
        "ClickHouse connection"
    };
    let reached = with_backoff(what, backoff_max, stop, |_| {
        let r = if k.migrate_on_start {
            migrate(&ch, db).map(drop)
        } else {
            ch.version().map(drop)
        };
        let sink = &metrics.sink;
        sink.clickhouse_up.store(r.is_ok(), Ordering::Release);
        Ok(r?)
    });
    if reached.is_none() {
        return Ok(());
    }
    // The events topic too: a sink started before any edge would otherwise
    // subscribe to nothing until librdkafka's next metadata refresh.
    for topic in [&cfg.redpanda.topic, &k.dlq_topic] {
        if with_backoff("topic creation", backoff_max, stop, |_| {
            Ok(redpanda::admin::ensure_topic(
                &cfg.redpanda,
                topic,
                Duration::from_secs(10),
            )?)
        })
        .is_none()
        {
            return Ok(());
        }
    }
    let inflight = Arc::new(Inflight::default());
    let consumer: BaseConsumer<Context> = redpanda::base_config(&cfg.redpanda)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        // While ClickHouse is down the sink stops polling; stay in the group.
        .set("max.poll.interval.ms", "86400000")
        .create_with_context(Context {
            rebalanced: AtomicBool::new(false),
            inflight: inflight.clone(),
            metrics: metrics.clone(),
        })?;
    consumer.subscribe(&[&cfg.redpanda.topic])?;
    let dlq = dlq::producer(cfg)?;
    let tenants = cfg
        .tenants()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t.id,
                (t.tier, u16::try_from(t.retention_days).unwrap_or(u16::MAX)),
            )
        })
        .collect();
    let mut sink = Sink {
        cfg,
        ch,
        table: format!("{db}.events"),
        tenants,
        partitions: HashMap::new(),
        batch: Batch::new(),
        assigned: Vec::new(),
        dedup: DedupWindow::new(k.dedup_window_secs, k.dedup_max_ids),
        offsets: BTreeMap::new(),
        oldest: None,
        backoff_max,
        metrics: metrics.clone(),
    };
    let mut inserter = Inserter {
        ch: Client::new(&cfg.clickhouse.url, timeout),
        table: format!("{db}.events"),
        topic: &cfg.redpanda.topic,
        backoff_max,
        metrics,
        encoded: Vec::new(),
    };
    // Rendezvous: one batch is inserted while the next one fills; the
    // consumer blocks at hand-off until the inserter is free.
    let (to_inserter, batches) = sync_channel::<Batch>(0);
    let (spare_tx, spare) = sync_channel::<Batch>(1);
    info!(topic = %cfg.redpanda.topic, group = %k.consumer_group, "sink consuming");
    thread::scope(|scope| {
        let consumer = &consumer;
        let inflight_ref = &*inflight;
        thread::Builder::new()
            .name("sink-insert".into())
            .spawn_scoped(scope, move || {
                inserter.run(batches, spare_tx, consumer, inflight_ref, stop)
            })
            .map_err(Error::Thread)?;
        let result = consume(
            &mut sink,
            consumer,
            &dlq,
            &to_inserter,
            &spare,
            &inflight,
            stop,
        );
        if result {
            sink.hand_off(&to_inserter, &spare, &inflight);
        }
        // Closing the channel ends the inserter once it has drained.
        drop(to_inserter);
        Ok(())
    })
}

/// The consumer loop; false when stopped mid-way (nothing more to hand off).
fn consume(
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
