//! The sink thread: consume, batch, insert, commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse_client::native::{EventsBlock, RowSource};
use clickhouse_client::schema::migrate;
use clickhouse_client::Client;
use engine_core::config::Config;
use engine_core::record::decode_record;
use engine_core::Tier;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};
use uuid::Uuid;

use crate::dedup::{DedupWindow, EventKey, KeySet};
use crate::{dlq, Error};

/// First wait between retries; doubles up to `sink.retry_backoff_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest single poll, so stop requests and batch age are noticed.
const POLL_MAX: Duration = Duration::from_millis(100);

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
fn retention_loop(cfg: &Config, stop: &AtomicBool) {
    let every = Duration::from_secs(cfg.sink.retention_interval_secs);
    let ch = Client::new(
        &cfg.clickhouse.url,
        Duration::from_millis(cfg.sink.clickhouse_timeout_ms),
    );
    loop {
        let deadline = Instant::now() + every;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::park_timeout(deadline - Instant::now());
        }
        let today = time::OffsetDateTime::now_utc().date();
        if let Err(e) = crate::retention::run_once(&ch, &cfg.clickhouse.database, today) {
            warn!(%e, "retention run failed; next run retries");
        }
    }
}

/// Starts the sink (and its retention job) on their own threads.
pub fn start(config: Config) -> Result<SinkHandle, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    if config.sink.retention_interval_secs > 0 {
        let (stop, config) = (stop.clone(), config.clone());
        threads.push(
            thread::Builder::new()
                .name("retention".into())
                .spawn(move || retention_loop(&config, &stop))
                .map_err(Error::Thread)?,
        );
    }
    let stop_sink = stop.clone();
    threads.push(
        thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                if let Err(e) = run(&config, &stop_sink) {
                    warn!(%e, "sink stopped with an error");
                }
            })
            .map_err(Error::Thread)?,
    );
    Ok(SinkHandle { stop, threads })
}

struct Context {
    rebalanced: AtomicBool,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.rebalanced.store(true, Ordering::SeqCst);
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
    /// Highest offset ClickHouse holds for this partition (-1: none).
    stored: i64,
    dedup: DedupWindow,
}

struct Sink<'c> {
    cfg: &'c Config,
    ch: Client,
    table: String,
    tenants: HashMap<Uuid, (Tier, u16)>,
    partitions: HashMap<i32, PartitionState>,
    block: EventsBlock,
    /// Keys in `block`, with their receive time and partition.
    block_keys: Vec<(i32, EventKey, i64)>,
    block_set: KeySet,
    /// Highest offset handled per partition since the last commit.
    offsets: BTreeMap<i32, i64>,
    /// (partition, offset) of the last row in `block`, to check an unknown outcome.
    last_row: Option<(i32, i64)>,
    oldest: Option<Instant>,
    backoff_max: Duration,
    /// The encoded block, reused across batches.
    encoded: Vec<u8>,
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

    fn load_partition(&self, p: i32) -> Result<PartitionState, Error> {
        let t = &self.table;
        let row = self
            .ch
            .query(&format!("SELECT max(broker_offset), count() FROM {t} WHERE broker_partition = {p} FORMAT TabSeparated"))?;
        let mut cols = row.trim().split('\t');
        let max: i64 = cols.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
        let count: u64 = cols.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let stored = if count == 0 { -1 } else { max };
        let k = &self.cfg.sink;
        let mut dedup = DedupWindow::new(k.dedup_window_secs, k.dedup_max_ids);
        let since = (now_us() / 1_000_000).saturating_sub(k.dedup_window_secs as i64);
        let recent = self.ch.query(&format!(
            "SELECT toString(tenant_id), toString(event_id), received_at_us FROM {t} \
             WHERE broker_partition = {p} AND received_at >= toDateTime({since}) \
             ORDER BY received_at_us LIMIT {} FORMAT TabSeparated",
            k.dedup_max_ids
        ))?;
        for line in recent.lines() {
            let mut c = line.split('\t');
            let (Some(tn), Some(ev), Some(at)) = (c.next(), c.next(), c.next()) else {
                continue;
            };
            if let (Ok(tn), Ok(ev), Ok(at)) =
                (Uuid::parse_str(tn), Uuid::parse_str(ev), at.parse::<i64>())
            {
                dedup.insert((tn.into_bytes(), ev.into_bytes()), at);
            }
        }
        info!(
            partition = p,
            stored_offset = stored,
            dedup_ids = dedup.len(),
            "partition resumed from ClickHouse"
        );
        Ok(PartitionState { stored, dedup })
    }

    fn reset_block(&mut self) {
        // Keeps the columns' capacity: the next batch writes into warm memory.
        self.block.clear();
        self.block_keys.clear();
        self.block_set.clear();
        self.last_row = None;
        self.oldest = None;
    }

    fn due(&self) -> bool {
        let k = &self.cfg.sink;
        self.block.rows() >= k.batch_max_rows
            || self.block.bytes() >= k.batch_max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(k.batch_max_age_ms))
    }

    fn insert_block(&mut self, stop: &AtomicBool) -> bool {
        // Reused across batches, like the block's columns.
        let mut bytes = std::mem::take(&mut self.encoded);
        bytes.clear();
        self.block.encode(&mut bytes);
        let started = Instant::now();
        let done = with_backoff(
            "insert into ClickHouse",
            self.backoff_max,
            stop,
            |attempt| {
                if attempt > 0 {
                    // The previous attempt may have landed (e.g. timed out after the write).
                    if let Some((p, o)) = self.last_row {
                        let n = self.ch.query(&format!(
                        "SELECT count() FROM {} WHERE broker_partition = {p} AND broker_offset = {o} FORMAT TabSeparated",
                        self.table
                    ))?;
                        if n.trim() != "0" {
                            return Ok(());
                        }
                    }
                }
                Ok(self.ch.insert_native(&self.table, &bytes)?)
            },
        );
        let len = bytes.len();
        self.encoded = bytes;
        if done.is_some() {
            info!(
                rows = self.block.rows(),
                bytes = len,
                ms = started.elapsed().as_millis() as u64,
                "batch inserted"
            );
        }
        done.is_some()
    }

    /// Inserts the batch, then commits offsets. False if stopped before the insert.
    fn flush(&mut self, consumer: &BaseConsumer<Context>, stop: &AtomicBool) -> bool {
        if self.block.rows() > 0 && !self.insert_block(stop) {
            return false;
        }
        for (p, key, at) in std::mem::take(&mut self.block_keys) {
            if let Some(s) = self.partitions.get_mut(&p) {
                s.dedup.insert(key, at);
            }
        }
        let now = now_us();
        for s in self.partitions.values_mut() {
            s.dedup.expire(now);
        }
        if !self.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &self.offsets {
                if let Some(s) = self.partitions.get_mut(&p) {
                    s.stored = s.stored.max(o);
                }
                let _ =
                    tpl.add_partition_offset(&self.cfg.redpanda.topic, p, Offset::Offset(o + 1));
            }
            // A failed commit is safe: on restart the offsets ClickHouse holds are skipped.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                warn!(%e, "offset commit failed; ClickHouse offsets cover it");
            }
            self.offsets.clear();
        }
        self.reset_block();
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
            let Some(state) =
                with_backoff("resume from ClickHouse", self.backoff_max, stop, |_| {
                    self.load_partition(p)
                })
            else {
                return false;
            };
            self.partitions.insert(p, state);
        }
        self.oldest.get_or_insert_with(Instant::now);
        let prev = self.offsets.entry(p).or_insert(off);
        *prev = (*prev).max(off);
        if off <= self.partitions[&p].stored {
            return true;
        }
        let payload = m.payload().unwrap_or_default();
        let batch = match decode_record(payload) {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                warn!(partition = p, offset = off, %reason, "undecodable record sent to the dead-letter topic");
                let topic = &self.cfg.sink.dlq_topic;
                return with_backoff("dead-letter produce", self.backoff_max, stop, |_| {
                    dlq::send(dlq, topic, m.key(), payload, &reason, p, off)
                })
                .is_some();
            }
        };
        let (tier, retention_days) = self.tenant_class(&batch.tenant_id);
        let received = batch.received_at_us.to_native();
        for e in batch.events.iter() {
            let key = (batch.tenant_id, e.id);
            if self.partitions[&p].dedup.contains(&key) || !self.block_set.insert(key) {
                continue;
            }
            self.block.push(
                batch,
                e,
                RowSource {
                    partition: p,
                    offset: off,
                    tier,
                    retention_days,
                },
            );
            self.block_keys.push((p, key, received));
            self.last_row = Some((p, off));
        }
        true
    }
}

fn run(cfg: &Config, stop: &AtomicBool) -> Result<(), Error> {
    let k = &cfg.sink;
    let backoff_max = Duration::from_millis(k.retry_backoff_max_ms.max(100));
    let ch = Client::new(
        &cfg.clickhouse.url,
        Duration::from_millis(k.clickhouse_timeout_ms),
    );
    let db = &cfg.clickhouse.database;
    if k.migrate_on_start
        && with_backoff("ClickHouse migration", backoff_max, stop, |_| {
            Ok(migrate(&ch, db)?)
        })
        .is_none()
    {
        return Ok(());
    }
    if with_backoff("dead-letter topic", backoff_max, stop, |_| {
        Ok(redpanda::admin::ensure_topic(
            &cfg.redpanda,
            &k.dlq_topic,
            Duration::from_secs(10),
        )?)
    })
    .is_none()
    {
        return Ok(());
    }
    let consumer: BaseConsumer<Context> = redpanda::base_config(&cfg.redpanda)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // While ClickHouse is down the sink stops polling; stay in the group.
        .set("max.poll.interval.ms", "86400000")
        .create_with_context(Context {
            rebalanced: AtomicBool::new(false),
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
        block: EventsBlock::new(),
        block_keys: Vec::new(),
        block_set: KeySet::default(),
        offsets: BTreeMap::new(),
        last_row: None,
        oldest: None,
        backoff_max,
        encoded: Vec::new(),
    };
    info!(topic = %cfg.redpanda.topic, group = %k.consumer_group, "sink consuming");
    while !stop.load(Ordering::SeqCst) {
        let msg = consumer.poll(POLL_MAX);
        if consumer.context().rebalanced.swap(false, Ordering::SeqCst) {
            // Partitions moved: what is not committed will be consumed again
            // by whoever owns them now; drop it here and reload state.
            sink.partitions.clear();
            sink.offsets.clear();
            sink.reset_block();
        }
        match msg {
            Some(Ok(m)) if !sink.handle(&m, &dlq, stop) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!(%e, "consumer error"),
            None => {}
        }
        if sink.due() && !sink.flush(&consumer, stop) {
            return Ok(());
        }
    }
    sink.flush(&consumer, stop);
    Ok(())
}
