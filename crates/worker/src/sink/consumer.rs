//! The consumer side: resume partitions from ClickHouse, decode, dedup, fill
//! the block, hand it off.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use clickhouse_client::native::{get_uuid, AgentColumns, RowSource};
use clickhouse_client::receipts::{self, LoadedReceipt, Receipt, RECEIPT_TENANT};
use clickhouse_client::Client;
use engine_core::config::Config;
use engine_core::record::decode_record;
use engine_core::Tier;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::agent::AgentCache;
use super::batch::Batch;
use super::calendar::Calendar;
use super::lag::Stalls;
use super::land::{Lander, NotLanded, Progress, Rows, Stages};
use super::now_us;
use super::rebalance::{Context, Inflight, PollWaker, Watchdog};
use crate::dedup::DedupWindow;
use crate::topic_reset::{self, Probe};
use crate::{dlq, Error};

/// Longest single poll, so stop requests and batch age are noticed.
const POLL_MAX: Duration = Duration::from_millis(100);
/// First wait before a held record is tried again; doubles up to
/// `sink.retry_backoff_max_ms`.
const HELD_RETRY_START: Duration = Duration::from_millis(200);
/// Between leaving the group and joining it again (watchdog).
const REJOIN_PAUSE: Duration = Duration::from_millis(500);
/// How long the old assignment may outlive a leave before it is logged
/// (its records are ignored for as long as it lasts).
const LEAVE_SLOW: Duration = Duration::from_secs(30);
/// How long the old assignment may outlive a leave before the sink
/// unassigns it itself (librdkafka always revokes it on an unsubscribe
/// with the classic protocol; a `group.protocol` set through
/// `redpanda.librdkafka` may not).
const LEAVE_MAX: Duration = Duration::from_secs(120);
/// Timeout of a seek back to a record fetched while paused.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of one row of the dedup reload: tenant id, event id, receive time.
const RECENT_ROW_BYTES: usize = 16 + 16 + 8;
/// How long a record of a tenant the registry does not list waits for it
/// (held, the registry read again at each retry) before it goes to the
/// dead-letter topic: a tenant created a moment ago, or a replica of the
/// registry that is behind, shows up within it.
const UNKNOWN_TENANT_GRACE: Duration = Duration::from_secs(60);
/// How often the registry is read again for a tenant past its grace, at
/// most; its records go to the dead-letter topic in between.
const UNKNOWN_TENANT_RECHECK: Duration = Duration::from_secs(30);
/// Tenants the registry did not list, remembered at once (beyond, the
/// oldest are forgotten and wait their grace again).
const MAX_UNKNOWN_TENANTS: usize = 1024;

/// A tenant the registry did not list.
#[derive(Debug, Clone, Copy)]
struct Unknown {
    /// When the registry first did not list it.
    since: Instant,
    /// When the registry was last read for it.
    checked: Instant,
}

/// The retention class (tier, days) of each tenant's rows, as the registry
/// says. Only what the registry (or the config file) says is kept: a tenant
/// it cannot tell about now is asked about again, never given a default,
/// since its rows' retention is a privacy promise.
#[derive(Debug, Default)]
pub(super) struct TenantClasses {
    known: HashMap<Uuid, (Tier, u16)>,
    unknown: HashMap<Uuid, Unknown>,
}

/// A tenant's rows cannot be classed yet: the record waits (see
/// [`TenantClasses::class`]).
fn not_listed(id: Uuid) -> Error {
    Error::ClickHouse(clickhouse_client::Error::Protocol(format!(
        "tenant {id} is not in the tenant registry (yet); its records wait up to {}s for it, then go to the dead-letter topic",
        UNKNOWN_TENANT_GRACE.as_secs()
    )))
}

impl TenantClasses {
    pub(super) fn new(known: HashMap<Uuid, (Tier, u16)>) -> Self {
        Self {
            known,
            unknown: HashMap::new(),
        }
    }

    /// The class of `id`'s rows at `now`: cached, else from `read` (the
    /// whole registry, read again). `Err`: not known now (the registry could
    /// not be read, or does not list the tenant and has not for less than
    /// [`UNKNOWN_TENANT_GRACE`]): the record waits and is tried again, and
    /// nothing is cached. `Ok(None)`: the registry has not listed it for the
    /// grace: the record goes to the dead-letter topic (`dlq replay` once
    /// the tenant is registered), never stored under a guessed retention.
    pub(super) fn class<E>(
        &mut self,
        id: Uuid,
        now: Instant,
        read: impl FnOnce() -> Result<Vec<(Uuid, Tier, u16)>, E>,
    ) -> Result<Option<(Tier, u16)>, Error>
    where
        Error: From<E>,
    {
        if let Some(c) = self.known.get(&id) {
            return Ok(Some(*c));
        }
        if let Some(u) = self.unknown.get(&id) {
            let past_grace = now.saturating_duration_since(u.since) >= UNKNOWN_TENANT_GRACE;
            let checked_lately = now.saturating_duration_since(u.checked) < UNKNOWN_TENANT_RECHECK;
            if past_grace && checked_lately {
                return Ok(None);
            }
        }
        // A tenant created since the last look: read the registry again.
        let rows = read()?;
        for (tenant, tier, days) in rows {
            self.known.insert(tenant, (tier, days));
            self.unknown.remove(&tenant);
        }
        if let Some(c) = self.known.get(&id) {
            return Ok(Some(*c));
        }
        if !self.unknown.contains_key(&id) && self.unknown.len() >= MAX_UNKNOWN_TENANTS {
            let oldest = self
                .unknown
                .iter()
                .min_by_key(|(_, u)| u.since)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.unknown.remove(&k);
            }
        }
        let u = self.unknown.entry(id).or_insert(Unknown {
            since: now,
            checked: now,
        });
        u.checked = now;
        if now.saturating_duration_since(u.since) >= UNKNOWN_TENANT_GRACE {
            Ok(None)
        } else {
            Err(not_listed(id))
        }
    }
}

/// Most receipts read when a partition is resumed: the inserts since its
/// last commit (normally a batch or two). More means commits failed for a
/// long time; the partition then waits with this error in the log.
const MAX_RESUME_RECEIPTS: usize = 10_000;

/// Inserts named in one read of what a partial batch stored (about 150
/// bytes of SQL each).
const STORED_EVENTS_IDS_PER_QUERY: usize = 200;
/// The `(offset, event id)` pairs of partly landed batches a resume keeps
/// in memory (24 bytes each and the set's overhead), at most, in units of
/// `sink.batch_max_rows`: normally one batch is partial (the one its owner
/// was writing when it stopped).
const MAX_PARTIAL_BATCH_ROWS_FACTOR: u64 = 4;

/// Per-partition state, loaded from ClickHouse when the partition is first
/// seen (after taking it over: no earlier owner can write it any more).
struct PartitionState {
    /// Records at or below are fully stored: a sink from before receipts
    /// stored up to there (migration 8), or -1.
    legacy: i64,
    /// `(first, last)` of every batch (on this partition) since the offset
    /// the partition resumed at whose inserts all landed: every event of
    /// those records is stored (docs/guarantees.md, "Broker → ClickHouse: exactly once").
    complete: Vec<(i64, i64)>,
    /// `(first, last)` of the batches only some of whose inserts landed
    /// (the owner stopped in between), and the `(offset, event id)` of every
    /// event those inserts stored: exactly these are stored, whatever
    /// retention class or day the events would be given now.
    partial: Vec<(i64, i64)>,
    partial_events: HashSet<(i64, [u8; 16])>,
    /// The highest `last` of both (-1: none): past it nothing is.
    covered_until: i64,
    /// Receipts written here get at least this time (µs): after the
    /// partition's accepted reset, whatever this sink's clock says, so
    /// that they count (`topic_reset`).
    written_floor: i64,
    /// The offset the next record should have (after the first one seen).
    next: Option<i64>,
}

impl PartitionState {
    /// Whether event `id` of record `offset` is stored already.
    fn covers(&self, offset: i64, id: &[u8; 16]) -> bool {
        let within = |&(f, l): &(i64, i64)| f <= offset && offset <= l;
        offset <= self.covered_until
            && (self.complete.iter().any(within)
                || (self.partial.iter().any(within)
                    && self.partial_events.contains(&(offset, *id))))
    }
}

/// Records `first..=last` of one broker partition in one batch.
type Range = (i64, i64);
/// An insert that landed: its id, retention class and day.
type Landed = (Uuid, u16, u16);

/// Splits receipts into the ranges of complete batches and, per partial
/// batch, its range and the inserts that landed. A batch is named by its
/// range and the time it was closed (two owners may each write a batch of
/// the same records). Its inserts land in order (`index` 0, 1, …), so it
/// is complete iff its receipts are exactly indices `0..inserts`.
fn batches(loaded: &[LoadedReceipt]) -> (Vec<Range>, Vec<(Range, Vec<Landed>)>) {
    struct Seen {
        inserts: BTreeSet<u32>,
        indices: BTreeSet<u32>,
        landed: Vec<Landed>,
    }
    let mut by_batch: BTreeMap<(Range, i64), Seen> = BTreeMap::new();
    for r in loaded {
        let e = by_batch
            .entry(((r.first_offset, r.last_offset), r.written_at_us))
            .or_insert_with(|| Seen {
                inserts: BTreeSet::new(),
                indices: BTreeSet::new(),
                landed: Vec::new(),
            });
        e.inserts.insert(r.inserts);
        e.indices.insert(r.index);
        e.landed.push((r.insert_id, r.retention_days, r.day));
    }
    let (mut complete, mut partial) = (Vec::new(), Vec::new());
    for ((range, _), seen) in by_batch {
        let whole = match (seen.inserts.len(), seen.inserts.first()) {
            (1, Some(&n)) => seen.indices.iter().copied().eq(0..n),
            _ => false,
        };
        if whole {
            complete.push(range);
        } else {
            partial.push((range, seen.landed));
        }
    }
    (complete, partial)
}

/// The consumer side: decode, dedup, fill the block.
pub(super) struct Sink<'c> {
    cfg: &'c Config,
    ch: Client,
    lander: Lander,
    tenants: TenantClasses,
    calendar: Calendar,
    partitions: HashMap<i32, PartitionState>,
    /// The batch being filled for each shard (`land::shard_of`; one on a
    /// single server): each goes to its shard's inserter on its own.
    batches: Vec<Batch>,
    /// Partitions of the topic assigned to this sink (after the last rebalance).
    assigned: Vec<i32>,
    /// Ids handed to ClickHouse recently, over all assigned partitions
    /// (those in `batch` included).
    dedup: DedupWindow,
    /// Per shard, set when the first record of its current batch arrived.
    oldest: Vec<Option<Instant>>,
    /// Browser, OS and device of the user agents seen lately.
    agents: AgentCache,
    /// Partitions held because ClickHouse stores offsets past the broker's end.
    reset: BTreeSet<i32>,
    /// The ClickHouse day of each event of the record being handled.
    days: Vec<u16>,
    /// Reads watermarks and the record a partition's newest receipt ends
    /// at, outside the group.
    probe: Probe,
    /// Partitions whose last dead letter the broker refused.
    dlq_failing: BTreeSet<i32>,
    backoff_max: Duration,
    metrics: Arc<SinkMetrics>,
}

impl<'c> Sink<'c> {
    pub(super) fn new(
        cfg: &'c Config,
        ch: Client,
        lander: Lander,
        tenants: HashMap<Uuid, (Tier, u16)>,
        backoff_max: Duration,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        let k = &cfg.sink;
        let shards = lander.shard_count();
        Self {
            cfg,
            ch,
            lander,
            tenants: TenantClasses::new(tenants),
            calendar: Calendar::default(),
            partitions: HashMap::new(),
            batches: (0..shards).map(|_| Batch::new()).collect(),
            assigned: Vec::new(),
            dedup: DedupWindow::new(k.dedup_window_secs.as_secs(), k.dedup_max_ids),
            oldest: vec![None; shards],
            agents: AgentCache::new(),
            reset: BTreeSet::new(),
            days: Vec::new(),
            probe: Probe::new(),
            dlq_failing: BTreeSet::new(),
            backoff_max,
            metrics,
        }
    }

    /// The class of `tenant`'s rows (see [`TenantClasses::class`]).
    fn tenant_class(&mut self, tenant: &[u8; 16]) -> Result<Option<(Tier, u16)>, Error> {
        let id = Uuid::from_bytes(*tenant);
        let (ch, db) = (&self.ch, &self.cfg.clickhouse.database);
        self.tenants.class(id, Instant::now(), || {
            clickhouse_client::tenants::list(ch, db).map(|rows| {
                rows.into_iter()
                    .map(|r| {
                        let days = u16::try_from(r.retention_days).unwrap_or(u16::MAX);
                        (r.id, r.tier, days)
                    })
                    .collect()
            })
        })
    }

    /// Takes partition `p` over and reads where it stands in ClickHouse,
    /// its first record here being `from` (the group's committed offset):
    /// the receipts of every insert since, repairing roll-ups an earlier
    /// owner left short, and its recent ids for the dedup window.
    fn load_partition(&mut self, p: i32, from: i64) -> Result<(), Error> {
        let topic = &self.cfg.redpanda.topic;
        let db = &self.cfg.clickhouse.database;
        let read = self.lander.take_over(p)?;
        // The partition's rows, on the replica of its shard the take-over
        // brought up to date (on one server: the server).
        let (rc, tables) = self.lander.reader(p, read)?;
        let epoch = topic_reset::epoch(&self.ch, db, topic, p)?;
        let answer = rc.query(&receipts::load_sql(
            &tables,
            topic,
            p,
            topic_reset::counted_after(epoch),
            from,
            MAX_RESUME_RECEIPTS,
        ))?;
        let loaded: Vec<LoadedReceipt> = answer.lines().filter_map(LoadedReceipt::parse).collect();
        if loaded.len() > MAX_RESUME_RECEIPTS {
            return Err(Error::ClickHouse(clickhouse_client::Error::Protocol(format!(
                "partition {p}: more than {MAX_RESUME_RECEIPTS} inserts since offset {from}, the group's committed offset: \
                 offsets have not been committed for long; commit them past what ClickHouse holds, or raise the limit"
            ))));
        }
        // Inserts an earlier owner landed in `events` whose roll-up push failed.
        for r in &loaded {
            if r.copies > 1 {
                self.metrics
                    .receipts_duplicated
                    .fetch_add(1, Ordering::Relaxed);
                warn!(partition = p, insert = %r.insert_id, copies = r.copies, "an insert is stored more than once");
            }
            let l = self
                .lander
                .landing_on(p, read, r.insert_id, r.retention_days, r.day)?;
            if l.rollups.contains(&0) {
                let receipt = Receipt {
                    insert_id: r.insert_id,
                    topic: topic.clone(),
                    partition: p,
                    first_offset: r.first_offset,
                    last_offset: r.last_offset,
                    index: r.index,
                    inserts: r.inserts,
                    rows: r.rows,
                    retention_days: r.retention_days,
                    day: r.day,
                    event_time: 0,
                    tier: Tier::Free,
                    written_at_us: 0,
                    last_hash: 0,
                };
                let mut progress = Progress::new(1, true);
                match self
                    .lander
                    .land_on(p, read, &[receipt], Rows::Events, &mut progress)
                {
                    Ok(()) => {}
                    Err(NotLanded::Fenced) => return Err(Error::Fenced(p)),
                    Err(NotLanded::Failed(e)) => return Err(e),
                }
            }
        }
        let legacy = topic_reset::legacy_offset(&self.ch, db, p, epoch)?;
        let (complete, partial_batches) = batches(&loaded);
        let mut partial = Vec::new();
        let mut partial_events = HashSet::new();
        let most =
            (self.cfg.sink.batch_max_rows as u64).saturating_mul(MAX_PARTIAL_BATCH_ROWS_FACTOR);
        for (range, ids) in partial_batches {
            let rows = loaded
                .iter()
                .filter(|r| ids.iter().any(|l| l.0 == r.insert_id))
                .fold(0u64, |n, r| n.saturating_add(r.rows));
            if rows.saturating_add(partial_events.len() as u64) > most {
                return Err(Error::Refused(format!(
                    "partition {p}: the partly landed batches since offset {from} hold more than {most} events \
                     ({MAX_PARTIAL_BATCH_ROWS_FACTOR} × sink.batch_max_rows); raise sink.batch_max_rows to resume"
                )));
            }
            // A few inserts per query: the statement stays far below
            // ClickHouse's `max_query_size` however many days a batch spans.
            for some in ids.chunks(STORED_EVENTS_IDS_PER_QUERY) {
                let answer = rc.query_binary(
                    &receipts::stored_events_sql(&tables, p, some),
                    (rows + 1).saturating_mul(receipts::STORED_EVENT_ROW_BYTES as u64),
                )?;
                for row in answer.chunks_exact(receipts::STORED_EVENT_ROW_BYTES) {
                    let offset = i64::from_le_bytes(row[..8].try_into().unwrap_or_default());
                    let id: [u8; 16] = row[8..].try_into().unwrap_or_default();
                    partial_events.insert((offset, get_uuid(&id)));
                }
            }
            partial.push(range);
        }
        let covered_until = complete
            .iter()
            .chain(&partial)
            .map(|c| c.1)
            .max()
            .unwrap_or(-1);
        // A topic recreated, or a broker that lost its data, starts its
        // offsets again: what ClickHouse holds for them is another record.
        let changed = self
            .probe
            .check(self.cfg, (&rc, &tables), p, epoch, legacy)?
            .error(p);
        if let Some(e) = changed {
            if self.reset.insert(p) {
                self.metrics
                    .topic_resets
                    .store(self.reset.len() as i64, Ordering::Relaxed);
            }
            return Err(e);
        }
        if self.reset.remove(&p) {
            self.metrics
                .topic_resets
                .store(self.reset.len() as i64, Ordering::Relaxed);
        }
        // The newest ids of the window, oldest first, as 40-byte binary rows.
        let t = tables.events();
        let unrecorded = tables.unrecorded("events");
        let k = &self.cfg.sink;
        let since = (now_us() / 1_000_000).saturating_sub(k.dedup_window_secs.as_secs() as i64);
        let recent = rc.query_binary(
            &format!(
                "SELECT tenant_id, event_id, received_at_us FROM \
                 (SELECT tenant_id, event_id, received_at_us FROM {t} \
                  WHERE broker_partition = {p} AND received_at >= toDateTime({since}) \
                  AND tenant_id != toUUID('{RECEIPT_TENANT}'){unrecorded} \
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
            partition = p,
            from,
            receipts = loaded.len(),
            legacy,
            dedup_ids = self.dedup.len(),
            "partition taken over and resumed from ClickHouse"
        );
        self.partitions.insert(
            p,
            PartitionState {
                legacy,
                complete,
                partial,
                partial_events,
                covered_until,
                written_floor: epoch.map_or(i64::MIN, |e| e.after_us.saturating_add(1)),
                next: None,
            },
        );
        Ok(())
    }

    /// Drops the batch being built and all partition state: partitions moved,
    /// and each is reloaded from ClickHouse when its records come again.
    fn discard(&mut self) {
        for b in &mut self.batches {
            b.clear();
        }
        self.partitions.clear();
        self.dedup.clear();
        self.oldest.fill(None);
        // Held records are dropped with the rest: whoever owns them now
        // writes their dead letters.
        self.dlq_failing.clear();
        self.metrics
            .dead_letters_failing
            .store(0, Ordering::Relaxed);
    }

    /// How many shards' batches there are.
    fn shards(&self) -> usize {
        self.batches.len()
    }

    fn shard_of(&self, p: i32) -> usize {
        super::land::shard_of(p, self.batches.len())
    }

    /// Whether shard `s`'s batch is to close.
    fn due(&self, s: usize) -> bool {
        let k = &self.cfg.sink;
        let batch = &self.batches[s];
        batch.rows() >= k.batch_max_rows
            || batch.bytes() >= k.batch_max_bytes
            || self.oldest[s].is_some_and(|t| t.elapsed() >= k.batch_max_age_ms)
    }

    /// Closes the batch being filled, for the inserter: each insert gets
    /// its receipt row. Its ids are in the dedup window already: the
    /// inserter retries until they land, and a rebalance waits for it (or
    /// drops it with the rest of the partition state).
    fn close(&mut self, s: usize, spare: &Receiver<Batch>) -> Option<Batch> {
        self.oldest[s]?;
        self.dedup.expire(now_us());
        let mut next = spare.try_recv().unwrap_or_else(|_| Batch::new());
        next.clear();
        let mut batch = std::mem::replace(&mut self.batches[s], next);
        let now = now_us();
        for part in &mut batch.parts {
            let k = u32::try_from(part.inserts.len()).unwrap_or(u32::MAX);
            let floor = self
                .partitions
                .get(&part.partition)
                .map_or(i64::MIN, |s| s.written_floor);
            let now = now.max(floor);
            for (j, r) in part.inserts.iter_mut().enumerate() {
                r.first_offset = part.first;
                r.last_offset = part.last;
                r.index = u32::try_from(j).unwrap_or(u32::MAX);
                r.inserts = k;
                r.written_at_us = now;
                r.last_hash = part.last_hash;
                part.block.push_receipt(r);
            }
        }
        batch.opened = self.oldest[s].take().unwrap_or_else(Instant::now);
        Some(batch)
    }

    /// Counts record `off` of `p` (fingerprint `hash`) as handled: the
    /// batch commits past it.
    fn handled(&mut self, p: i32, off: i64, hash: u64) {
        let s = self.shard_of(p);
        self.oldest[s].get_or_insert_with(Instant::now);
        self.batches[s].handled(p, off, hash);
    }

    /// Counts a gap when `off` is past the offset expected next on `p`. Our
    /// topic has neither transactions nor compaction, so every offset holds a
    /// record: a gap is a broker that did not deliver some (tansu's
    /// `memory://` storage does this when a fetch starts inside a record
    /// batch). Nothing can be done here but say so loudly.
    fn check_contiguous(&mut self, p: i32, off: i64) {
        let Some(state) = self.partitions.get_mut(&p) else {
            return;
        };
        if let Some(next) = state.next.filter(|&n| off > n) {
            let sink = &*self.metrics;
            sink.offset_gaps.fetch_add(1, Ordering::Relaxed);
            sink.offset_gap_records
                .fetch_add((off - next) as u64, Ordering::Relaxed);
            warn!(
                partition = p,
                expected = next,
                got = off,
                "the broker skipped offsets: the records in between were not delivered"
            );
        }
        state.next = Some(off + 1);
    }

    /// Writes `m` to the dead-letter topic with `reason` and waits for the
    /// broker to confirm it. An error: the broker did not take it (the
    /// caller holds the record; nothing is committed past it).
    fn dead_letter(
        &mut self,
        dlq: &dlq::Producer,
        m: &impl Message,
        reason: &str,
    ) -> Result<(), Error> {
        let topic = &self.cfg.sink.dlq_topic;
        let value = m.payload().unwrap_or_default();
        let source = &self.cfg.redpanda.topic;
        let sent = dlq.send(
            topic,
            m.key(),
            value,
            reason,
            source,
            m.partition(),
            m.offset(),
        );
        let sink = &*self.metrics;
        match &sent {
            Ok(()) => {
                self.dlq_failing.remove(&m.partition());
                sink.dead_letters.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => {
                self.dlq_failing.insert(m.partition());
                sink.dead_letter_failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        sink.dead_letters_failing
            .store(self.dlq_failing.len() as i64, Ordering::Relaxed);
        sent
    }

    /// Handles one record. An error means it could not be handled now
    /// (ClickHouse or the broker unreachable) and nothing of it was kept:
    /// the caller holds it and tries again later.
    fn handle(&mut self, m: &impl Message, dlq: &dlq::Producer) -> Result<(), Error> {
        let (p, off) = (m.partition(), m.offset());
        let rewound = self
            .partitions
            .get(&p)
            .and_then(|s| s.next)
            .is_some_and(|next| off < next - 1);
        if rewound {
            // The log went back under us (the broker lost its data and the
            // consumer's position was reset): what this sink holds of every
            // partition means nothing now. Drop it all and rejoin, so each
            // partition starts again from its committed offset and the
            // receipts (which then show the reset).
            warn!(
                partition = p,
                offset = off,
                "the partition's offsets went back; dropping what is held and rejoining"
            );
            self.lander.stages().request_rejoin();
            return Err(Error::ClickHouse(clickhouse_client::Error::Protocol(
                format!("partition {p} went back to offset {off}"),
            )));
        }
        if !self.partitions.contains_key(&p) {
            self.load_partition(p, off)?;
        }
        self.check_contiguous(p, off);
        let payload = m.payload().unwrap_or_default();
        let hash = receipts::record_hash(payload);
        if off <= self.partitions[&p].legacy {
            let sink = &*self.metrics;
            sink.records_already_stored.fetch_add(1, Ordering::Relaxed);
            self.handled(p, off, hash);
            return Ok(());
        }
        let batch = match decode_record(payload) {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                self.dead_letter(dlq, m, &reason)?;
                warn!(partition = p, offset = off, %reason, "undecodable record sent to the dead-letter topic");
                self.handled(p, off, hash);
                return Ok(());
            }
        };
        // Not known yet: the record waits (`Err`), nothing of it kept.
        let Some((tier, retention_days)) = self.tenant_class(&batch.tenant_id)? else {
            let tenant = Uuid::from_bytes(batch.tenant_id);
            let reason = format!("unknown tenant {tenant}: not in the tenant registry");
            self.dead_letter(dlq, m, &reason)?;
            warn!(partition = p, offset = off, %tenant, "record of a tenant the registry does not list sent to the dead-letter topic");
            self.handled(p, off, hash);
            return Ok(());
        };
        // Every event's ClickHouse day first: a failure here keeps nothing.
        self.days.clear();
        for e in batch.events.iter() {
            let secs = u32::try_from(e.timestamp_us.to_native().div_euclid(1_000_000)).unwrap_or(0);
            let day = self.calendar.day(&self.ch, secs)?;
            self.days.push(day);
        }
        let received = batch.received_at_us.to_native();
        let (mut rows, mut dups, mut stored) = (0, 0, 0);
        let topic = &self.cfg.redpanda.topic;
        let state = &self.partitions[&p];
        let s = self.shard_of(p);
        self.oldest[s].get_or_insert_with(Instant::now);
        let part = self.batches[s].handled(p, off, hash);
        for (e, &day) in batch.events.iter().zip(&self.days) {
            if state.covers(off, &e.id) {
                // Stored: a later copy of it (a client retry) is a duplicate.
                self.dedup.insert((batch.tenant_id, e.id), received);
                stored += 1;
                continue;
            }
            if !self.dedup.insert((batch.tenant_id, e.id), received) {
                dups += 1;
                continue;
            }
            let at = match part
                .inserts
                .iter()
                .position(|r| r.retention_days == retention_days && r.day == day)
            {
                Some(i) => i,
                None => {
                    part.inserts.push(Receipt {
                        insert_id: Uuid::new_v4(),
                        topic: topic.clone(),
                        partition: p,
                        first_offset: part.first,
                        last_offset: off,
                        index: 0,
                        inserts: 0,
                        rows: 0,
                        retention_days,
                        day,
                        event_time: u32::try_from(e.timestamp_us.to_native().div_euclid(1_000_000))
                            .unwrap_or(0),
                        tier,
                        written_at_us: 0,
                        last_hash: 0,
                    });
                    part.inserts.len() - 1
                }
            };
            let insert = &mut part.inserts[at];
            insert.rows += 1;
            let src = RowSource {
                partition: p,
                offset: off,
                tier,
                retention_days,
                insert_id: *insert.insert_id.as_bytes(),
            };
            let ua = e.user_agent.as_ref().map_or("", |s| s);
            let agent = self.agents.get(ua);
            let agent = AgentColumns {
                browser: &agent.browser,
                os: &agent.os,
                device: agent.device,
            };
            part.block.push(batch, e, src, agent);
            rows += 1;
        }
        if rows > 0 {
            self.batches[s].received.push((received, rows));
        }
        let sink = &*self.metrics;
        if dups > 0 {
            sink.duplicates_skipped.fetch_add(dups, Ordering::Relaxed);
        }
        if stored > 0 && rows == 0 && dups == 0 {
            sink.records_already_stored.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The consumer loop's state besides the batch: what waits, what is paused.
///
/// The loop never blocks on ClickHouse: a closed batch its shard's inserter
/// cannot take yet pauses this sink's partitions of that shard (the other
/// shards' go on), a record that cannot be handled
/// yet pauses its own partition (the others go on), and the loop goes on
/// polling (so the group sees a live member within `max.poll.interval.ms`)
/// until it can resume them.
struct Flow {
    /// Per shard, a closed batch waiting for its inserter.
    ready: Vec<Option<Batch>>,
    /// Per partition, the record that could not be handled yet (its
    /// partition paused until it is).
    held: BTreeMap<i32, Held>,
    /// The partitions paused now.
    paused: BTreeSet<i32>,
    watchdog: Watchdog,
    /// When to subscribe again after the watchdog left the group.
    resubscribe_at: Option<Instant>,
    /// Since when this sink has been leaving the group: it dropped what it
    /// held and unsubscribed, and librdkafka has not revoked the old
    /// assignment yet. Records polled meanwhile were fetched for that
    /// assignment, from positions past what was dropped: handling one would
    /// start its partition's batch past records nobody stores, and a commit
    /// after it would skip them for good. So they are ignored (nothing is
    /// committed for them; whoever owns their partition next reads them from
    /// the committed offset), and the sink subscribes again only once the
    /// assignment is gone.
    leaving: Option<Instant>,
    /// Whether a slow leave was logged (once per leave).
    slow_leave_logged: bool,
}

/// A record that could not be handled yet.
struct Held {
    m: OwnedMessage,
    /// When to try it again.
    at: Instant,
    /// The wait before `at`; doubles at each failure.
    wait: Duration,
}

/// This sink's partitions of `topic`, as a list for pause and resume.
fn assignment(consumer: &BaseConsumer<Context>) -> TopicPartitionList {
    consumer.assignment().unwrap_or_default()
}

impl Flow {
    /// Pauses or resumes partitions of `topic` so that exactly `want` are
    /// paused.
    fn set_paused(
        &mut self,
        want: BTreeSet<i32>,
        topic: &str,
        consumer: &BaseConsumer<Context>,
        metrics: &SinkMetrics,
    ) {
        if want == self.paused {
            return;
        }
        let list = |ps: &mut dyn Iterator<Item = &i32>| {
            let mut tpl = TopicPartitionList::new();
            for &p in ps {
                tpl.add_partition(topic, p);
            }
            tpl
        };
        let pause = list(&mut want.difference(&self.paused));
        let resume = list(&mut self.paused.difference(&want));
        for (tpl, paused) in [(pause, true), (resume, false)] {
            if tpl.count() == 0 {
                continue;
            }
            let r = if paused {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
            if let Err(e) = r {
                warn!(%e, paused, "cannot pause or resume partitions");
            }
        }
        metrics.paused.store(!want.is_empty(), Ordering::Relaxed);
        self.paused = want;
    }

    /// Leaves the group, to join it again after [`REJOIN_PAUSE`] once the
    /// old assignment is revoked. Until then polled records are ignored (a
    /// fence has dropped what they follow; after a watchdog rejoin what is
    /// held goes on landing, and the ignored records come after it).
    /// Called again while leaving, it unsubscribes again (harmless) and
    /// starts the pause over.
    fn leave(&mut self, consumer: &BaseConsumer<Context>, now: Instant) {
        consumer.unsubscribe();
        self.resubscribe_at = Some(now + REJOIN_PAUSE);
        self.leaving.get_or_insert(now);
    }

    /// Ends [`Flow::leaving`] once librdkafka holds no assignment for this
    /// sink any more (the revoke was served in a poll; records fetched for
    /// the old assignment are purged with it).
    fn check_left(&mut self, consumer: &BaseConsumer<Context>, now: Instant) {
        let Some(since) = self.leaving else {
            return;
        };
        // An error is not "no assignment": the old one may still be live.
        if matches!(consumer.assignment(), Ok(a) if a.count() == 0) {
            self.leaving = None;
            self.slow_leave_logged = false;
            return;
        }
        let waited = now.duration_since(since);
        if waited >= LEAVE_MAX {
            warn!(
                waited_s = waited.as_secs(),
                "the old assignment was not revoked; unassigning it"
            );
            // Unassigning bumps each partition's fetch version, so what was
            // fetched for it is purged as well.
            if let Err(e) = consumer.unassign() {
                warn!(%e, "cannot unassign; still ignoring the old assignment's records");
            }
            // Tried once per LEAVE_MAX, not at every poll.
            self.leaving = Some(now);
        } else if waited >= LEAVE_SLOW && !self.slow_leave_logged {
            warn!(
                waited_s = waited.as_secs(),
                "the old assignment is not revoked yet; its records are still ignored"
            );
            self.slow_leave_logged = true;
        }
    }

    /// Forgets every held record (partitions moved or the sink rejoins).
    fn drop_held(&mut self) {
        self.ready.iter_mut().for_each(|r| *r = None);
        self.held.clear();
    }

    /// Holds `m` (it could not be handled) until its retry time, `wait`
    /// after its last one (the first: [`HELD_RETRY_START`]). Pausing its
    /// partition (below) keeps what follows it from being consumed first,
    /// and resuming fetches from just after it.
    fn hold(&mut self, m: OwnedMessage, wait: Duration, backoff_max: Duration) {
        let wait = (wait * 2).clamp(HELD_RETRY_START, backoff_max);
        let at = Instant::now() + wait;
        self.held.insert(m.partition(), Held { m, at, wait });
    }
}

/// The way to the inserter: the rendezvous, the buffers coming back, and the
/// count of batches it holds.
pub(super) struct ToInserter<'a> {
    /// One rendezvous per shard's inserter.
    pub(super) batches: &'a [SyncSender<Batch>],
    pub(super) spare: &'a Receiver<Batch>,
    pub(super) inflight: &'a Inflight,
    pub(super) stages: &'a Stages,
    /// Marks each poll, for the thread that cuts a stalled one short.
    pub(super) waker: &'a PollWaker,
}

/// The consumer loop. Returns once `stop` is set, after handing the last
/// batches to the inserter.
pub(super) fn consume(
    sink: &mut Sink<'_>,
    consumer: &BaseConsumer<Context>,
    dlq: &dlq::Producer,
    inserter: ToInserter<'_>,
    times: super::GroupTimes,
    stalls: &Stalls,
    stop: &AtomicBool,
) {
    let ToInserter {
        batches: to_inserter,
        spare,
        inflight,
        stages,
        waker,
    } = inserter;
    let topic = sink.cfg.redpanda.topic.clone();
    let metrics = sink.metrics.clone();
    let backoff_max = sink.backoff_max;
    let mut flow = Flow {
        ready: (0..sink.shards()).map(|_| None).collect(),
        held: BTreeMap::new(),
        paused: BTreeSet::new(),
        watchdog: Watchdog::new(times.stall_after, times.quiet_after, Instant::now()),
        resubscribe_at: None,
        leaving: None,
        slow_leave_logged: false,
    };
    while !stop.load(Ordering::SeqCst) {
        let was_leaving = flow.leaving.is_some();
        waker.polling();
        let msg = consumer.poll(POLL_MAX);
        waker.polled();
        let now = Instant::now();
        if inserter_fenced(sink, consumer, &mut flow, stages, now) {
            continue;
        }
        flow.check_left(consumer, now);
        if consumer.context().rebalanced.swap(false, Ordering::SeqCst) {
            // Partitions moved: what is not with the inserter will be
            // consumed again by whoever owns them now; drop it here and
            // reload state.
            sink.discard();
            flow.drop_held();
            sink.assigned = assignment(consumer)
                .elements_for_topic(&topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            // A new assignment starts unpaused (resume is a no-op on
            // partitions that are not paused).
            flow.paused = sink.assigned.iter().copied().collect();
            flow.set_paused(BTreeSet::new(), &topic, consumer, &metrics);
            flow.watchdog.group_changed(now);
        }
        match msg {
            Some(Ok(m)) if was_leaving || flow.leaving.is_some() => {
                // Fetched for the assignment being left (see `Flow::leaving`).
                debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "record of the assignment being left ignored"
                );
            }
            Some(Ok(m)) if flow.held.contains_key(&m.partition()) => {
                // Fetched before the pause took hold: read again after the
                // held record.
                let (p, off) = (m.partition(), m.offset());
                if let Err(e) = consumer.seek(&topic, p, Offset::Offset(off), SEEK_TIMEOUT) {
                    // The position is past a record not handled: start over.
                    warn!(%e, partition = p, offset = off, "cannot rewind a paused partition; rejoining");
                    stages.request_rejoin();
                }
            }
            Some(Ok(m)) => {
                if let Err(e) = sink.handle(&m, dlq) {
                    warn!(%e, partition = m.partition(), offset = m.offset(), "record held; retrying");
                    flow.hold(m.detach(), Duration::ZERO, backoff_max);
                }
            }
            Some(Err(e)) => warn!(%e, "consumer error"),
            None => {}
        }
        let due: Vec<i32> = flow
            .held
            .iter()
            .filter(|(_, h)| now >= h.at)
            .map(|(&p, _)| p)
            .collect();
        for p in due {
            let Some(h) = flow.held.remove(&p) else {
                continue;
            };
            if let Err(e) = sink.handle(&h.m, dlq) {
                if h.wait >= backoff_max {
                    warn!(%e, partition = p, offset = h.m.offset(), "held record still fails");
                }
                flow.hold(h.m, h.wait, backoff_max);
            }
        }
        for (s, to_inserter) in to_inserter.iter().enumerate() {
            if flow.ready[s].is_none() && sink.due(s) {
                flow.ready[s] = sink.close(s, spare);
            }
            if let Some(batch) = flow.ready[s].take() {
                // Counted first: the inserter may finish it before send returns.
                inflight.begin();
                match to_inserter.try_send(batch) {
                    Ok(()) => {}
                    Err(TrySendError::Full(batch)) => {
                        inflight.end();
                        flow.ready[s] = Some(batch);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        inflight.end();
                        return;
                    }
                }
            }
        }
        // A shard whose inserter is busy has its partitions paused; so
        // has a partition with a held record.
        let wait = sink
            .assigned
            .iter()
            .copied()
            .filter(|&p| flow.ready[sink.shard_of(p)].is_some())
            .chain(flow.held.keys().copied())
            .collect();
        // While leaving, pauses stay as they are: the records resumed
        // partitions would fetch are ignored, and the next assignment starts
        // unpaused.
        if flow.leaving.is_none() {
            flow.set_paused(wait, &topic, consumer, &metrics);
        }
        rejoin_if_stalled(sink, consumer, &mut flow, stalls, &topic, now);
    }
    // Stopping: the last batches go to the inserters, which make one more
    // attempt each.
    for (s, to_inserter) in to_inserter.iter().enumerate() {
        for batch in flow.ready[s].take().into_iter().chain(sink.close(s, spare)) {
            inflight.begin();
            if to_inserter.send(batch).is_err() {
                inflight.end();
            }
        }
    }
}

/// A newer owner dropped one of this sink's staging tables (see
/// [`super::land`]): the group moved a partition without this sink noticing
/// (or both think they own it). Everything held is dropped and the sink
/// rejoins the group, so that it works from an assignment it shares with
/// the others.
fn inserter_fenced(
    sink: &mut Sink<'_>,
    consumer: &BaseConsumer<Context>,
    flow: &mut Flow,
    stages: &Stages,
    now: Instant,
) -> bool {
    let fenced = stages.fenced.swap(false, Ordering::SeqCst);
    let rejoin = stages.rejoin.swap(false, Ordering::SeqCst);
    if !fenced && !rejoin {
        return false;
    }
    if fenced {
        sink.metrics.fenced.fetch_add(1, Ordering::Relaxed);
        warn!("another sink took over a partition of this one; dropping what is held and rejoining the group");
    }
    sink.discard();
    flow.drop_held();
    // Always, even while a rejoin is pending: an assignment that came
    // after the last leave ended holds records past what was just dropped.
    flow.leave(consumer, now);
    true
}

/// Leaves and rejoins the group when the watchdog says so (see [`Watchdog`]).
fn rejoin_if_stalled(
    sink: &mut Sink<'_>,
    consumer: &BaseConsumer<Context>,
    flow: &mut Flow,
    stalls: &Stalls,
    topic: &str,
    now: Instant,
) {
    if let Some(at) = flow.resubscribe_at {
        if now >= at && flow.leaving.is_none() {
            flow.resubscribe_at = None;
            if let Err(e) = consumer.subscribe(&[topic]) {
                warn!(%e, "cannot subscribe again; retrying");
                flow.resubscribe_at = Some(now + REJOIN_PAUSE);
            }
            flow.watchdog.group_changed(now);
        }
        return;
    }
    if sink.assigned.is_empty() && flow.watchdog.quick_due(now) {
        let quiet = stalls
            .quiet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !quiet.is_empty() && sink.ch.ping() && !sink.lander.anyone_writing(&quiet) {
            flow.watchdog.backed_off(now, quiet.len() as i64);
            warn!(
                partitions = ?quiet,
                "this sink owns nothing while partitions nobody writes wait; rejoining the group"
            );
            sink.metrics.rejoins.fetch_add(1, Ordering::Relaxed);
            flow.leave(consumer, now);
            return;
        }
    }
    let elsewhere = stalls.elsewhere.load(Ordering::Relaxed);
    let here = stalls.here.load(Ordering::Relaxed);
    if !flow.watchdog.due(now, elsewhere, here) {
        return;
    }
    flow.watchdog.backed_off(now, elsewhere);
    // Rebalancing is of no use while nobody can insert, nor for partitions
    // whose shard is down (they stall wherever they are): only a stall on a
    // shard that answers is the group's to fix. A sink that owns none of a
    // stopped shard's partitions has not seen it fail, so it asks.
    let stalled = stalls
        .stalled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !sink.ch.ping() || !sink.lander.any_shard_reachable(&stalled) {
        return;
    }
    warn!(
        stalled = elsewhere,
        "partitions this sink does not own make no progress; rejoining the group"
    );
    sink.metrics.rejoins.fetch_add(1, Ordering::Relaxed);
    flow.leave(consumer, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    type Rows = Vec<(Uuid, Tier, u16)>;

    fn receipt(
        first: i64,
        last: i64,
        index: u32,
        inserts: u32,
        rd: u16,
        day: u16,
    ) -> LoadedReceipt {
        receipt_at(first, last, index, inserts, rd, day, 1)
    }

    fn receipt_at(
        first: i64,
        last: i64,
        index: u32,
        inserts: u32,
        rd: u16,
        day: u16,
        written_at_us: i64,
    ) -> LoadedReceipt {
        LoadedReceipt {
            insert_id: Uuid::from_u128(
                u128::from(index) + 1 + (first as u128) * 100 + (written_at_us as u128) * 10_000,
            ),
            retention_days: rd,
            day,
            first_offset: first,
            last_offset: last,
            index,
            inserts,
            rows: 3,
            written_at_us,
            copies: 1,
        }
    }

    #[test]
    fn coverage_does_not_depend_on_the_class_an_event_would_get_now() {
        // Batch 10..=19: both inserts landed. Batch 20..=29: the first of
        // three landed (its owner stopped), holding event A of record 21.
        let loaded = [
            receipt(10, 19, 0, 2, 30, 100),
            receipt(10, 19, 1, 2, 90, 101),
            receipt(20, 29, 0, 3, 30, 100),
        ];
        let (complete, partial) = batches(&loaded);
        assert_eq!(complete, [(10, 19)]);
        assert_eq!(partial.len(), 1);
        assert_eq!(partial[0].0, (20, 29));
        assert_eq!(partial[0].1, [(loaded[2].insert_id, 30, 100)]);
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let state = PartitionState {
            legacy: -1,
            complete,
            partial: vec![(20, 29)],
            partial_events: [(21, a)].into_iter().collect(),
            covered_until: 29,
            written_floor: i64::MIN,
            next: None,
        };
        // Every event of a complete batch, whatever its class now.
        assert!(state.covers(10, &b) && state.covers(19, &a));
        // Of a partial batch, exactly the events its landed inserts hold.
        assert!(state.covers(21, &a));
        assert!(!state.covers(21, &b));
        assert!(!state.covers(22, &a));
        // Past every batch: nothing.
        assert!(!state.covers(30, &a) && !state.covers(9, &a));
    }

    #[test]
    fn two_owners_batches_of_the_same_records_are_told_apart() {
        // Owner A's batch of 20..=29 had 4 inserts and landed 0 and 1;
        // owner B's batch of the same records had 2 and landed only 0.
        // Together indices {0, 1} are there, yet neither batch is whole.
        let loaded = [
            receipt_at(20, 29, 0, 4, 30, 100, 1_000),
            receipt_at(20, 29, 1, 4, 30, 101, 1_000),
            receipt_at(20, 29, 0, 2, 30, 102, 2_000),
        ];
        let (complete, partial) = batches(&loaded);
        assert!(complete.is_empty(), "{complete:?}");
        assert_eq!(partial.len(), 2);
        // A batch with a gap in its indices is not whole either.
        let gap = [
            receipt_at(0, 9, 0, 2, 30, 100, 5),
            receipt_at(0, 9, 2, 2, 30, 100, 5),
        ];
        assert!(batches(&gap).0.is_empty());
    }

    fn down() -> Result<Rows, Error> {
        Err(Error::ClickHouse(clickhouse_client::Error::Connection {
            url: "http://ch".into(),
            message: "refused".into(),
        }))
    }

    #[test]
    fn a_failed_registry_read_is_not_cached_as_a_guess() {
        let free = Uuid::from_u128(7);
        let mut t = TenantClasses::default();
        let now = Instant::now();
        // ClickHouse cannot be asked: the record waits, nothing is cached.
        for i in 0..3 {
            let at = now + UNKNOWN_TENANT_GRACE * i;
            assert!(t.class(free, at, down).is_err());
        }
        assert!(t.known.is_empty() && t.unknown.is_empty());
        // Once it answers, the tenant's own class, whenever that is.
        let later = now + UNKNOWN_TENANT_GRACE * 5;
        let rows = || Ok::<_, Error>(vec![(free, Tier::Free, 1)]);
        assert_eq!(t.class(free, later, rows).unwrap(), Some((Tier::Free, 1)));
        // And from the cache from then on.
        assert_eq!(
            t.class(free, later, || -> Result<Rows, Error> {
                panic!("read again")
            })
            .unwrap(),
            Some((Tier::Free, 1))
        );
    }

    #[test]
    fn a_tenant_the_registry_does_not_list_waits_then_goes_to_the_dead_letters() {
        let new = Uuid::from_u128(9);
        let other = Uuid::from_u128(10);
        let mut t = TenantClasses::default();
        let reads = Cell::new(0);
        let listing = |rows: Rows| {
            reads.set(reads.get() + 1);
            Ok::<_, Error>(rows)
        };
        let now = Instant::now();
        // Within the grace: every try reads the registry again, and waits.
        assert!(t
            .class(new, now, || listing(vec![(other, Tier::Paid, 90)]))
            .is_err());
        let half = now + UNKNOWN_TENANT_GRACE / 2;
        assert!(t.class(new, half, || listing(vec![])).is_err());
        assert_eq!(reads.get(), 2);
        // A registry that fails meanwhile changes nothing.
        assert!(t.class(new, half, down).is_err());
        // Past the grace: dead letters, the registry read at most once per
        // recheck interval.
        let past = now + UNKNOWN_TENANT_GRACE;
        assert_eq!(t.class(new, past, || listing(vec![])).unwrap(), None);
        assert_eq!(reads.get(), 3);
        let soon = past + UNKNOWN_TENANT_RECHECK / 2;
        assert_eq!(t.class(new, soon, || listing(vec![])).unwrap(), None);
        assert_eq!(reads.get(), 3, "not read again so soon");
        // Registered at last: its class, no guess ever cached.
        let then = past + UNKNOWN_TENANT_RECHECK;
        let rows = vec![(new, Tier::Free, 1)];
        assert_eq!(
            t.class(new, then, || listing(rows)).unwrap(),
            Some((Tier::Free, 1))
        );
        assert!(t.unknown.is_empty());
        assert_eq!(t.known.get(&other), Some(&(Tier::Paid, 90)));
    }

    #[test]
    fn unknown_tenants_are_bounded() {
        let mut t = TenantClasses::default();
        let now = Instant::now();
        for i in 0..(MAX_UNKNOWN_TENANTS as u128 + 10) {
            let at = now + Duration::from_millis(i as u64);
            let _ = t.class(Uuid::from_u128(i), at, || Ok::<_, Error>(Vec::new()));
        }
        assert_eq!(t.unknown.len(), MAX_UNKNOWN_TENANTS);
        assert!(
            !t.unknown.contains_key(&Uuid::from_u128(0)),
            "oldest forgotten"
        );
    }
}
