//! The consumer side: resume partitions from ClickHouse, decode, dedup, fill
//! the block, hand it off.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use clickhouse_client::native::{get_uuid, AgentColumns, RowSource};
use clickhouse_client::Client;
use engine_core::config::Config;
use engine_core::record::decode_record;
use engine_core::Tier;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};
use uuid::Uuid;

use super::agent::AgentCache;
use super::batch::Batch;
use super::lag::Stalls;
use super::now_us;
use super::rebalance::{Context, Inflight, Watchdog};
use crate::dedup::DedupWindow;
use crate::{dlq, Error};

/// Longest single poll, so stop requests and batch age are noticed.
const POLL_MAX: Duration = Duration::from_millis(100);
/// First wait before a held record is tried again; doubles up to
/// `sink.retry_backoff_max_ms`.
const HELD_RETRY_START: Duration = Duration::from_millis(200);
/// Between leaving the group and joining it again (watchdog).
const REJOIN_PAUSE: Duration = Duration::from_millis(500);
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

/// Per-partition state, loaded from ClickHouse when the partition is first seen.
struct PartitionState {
    /// Highest offset ClickHouse holds, or will hold once the batch in flight
    /// lands, for this partition (-1: none).
    stored: i64,
    /// The offset the next record should have (after the first one seen).
    next: Option<i64>,
}

/// The consumer side: decode, dedup, fill the block.
pub(super) struct Sink<'c> {
    cfg: &'c Config,
    ch: Client,
    table: String,
    tenants: TenantClasses,
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
    /// Browser, OS and device of the user agents seen lately.
    agents: AgentCache,
    backoff_max: Duration,
    metrics: Arc<SinkMetrics>,
}

impl<'c> Sink<'c> {
    pub(super) fn new(
        cfg: &'c Config,
        ch: Client,
        table: String,
        tenants: HashMap<Uuid, (Tier, u16)>,
        backoff_max: Duration,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        let k = &cfg.sink;
        Self {
            cfg,
            ch,
            table,
            tenants: TenantClasses::new(tenants),
            partitions: HashMap::new(),
            batch: Batch::new(),
            assigned: Vec::new(),
            dedup: DedupWindow::new(k.dedup_window_secs.as_secs(), k.dedup_max_ids),
            offsets: BTreeMap::new(),
            oldest: None,
            agents: AgentCache::new(),
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
            .map(|&p| {
                (
                    p,
                    PartitionState {
                        stored: -1,
                        next: None,
                    },
                )
            })
            .collect();
        for line in stored.lines() {
            if let Some((p, max)) = line.split_once('\t') {
                if let (Ok(p), Ok(max)) = (p.parse::<i32>(), max.parse::<i64>()) {
                    state.insert(
                        p,
                        PartitionState {
                            stored: max,
                            next: None,
                        },
                    );
                }
            }
        }
        // The newest ids of the window, oldest first, as 40-byte binary rows.
        let k = &self.cfg.sink;
        let since = (now_us() / 1_000_000).saturating_sub(k.dedup_window_secs.as_secs() as i64);
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
                .is_some_and(|t| t.elapsed() >= k.batch_max_age_ms)
    }

    /// Closes the batch being filled, for the inserter. Its ids are in the
    /// dedup window already and its offsets count as stored from now: the
    /// inserter retries until they land, and a rebalance waits for it (or
    /// drops it with the rest of the partition state).
    fn close(&mut self, spare: &Receiver<Batch>) -> Option<Batch> {
        self.oldest?;
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
        Some(batch)
    }

    /// Counts record `off` of `p` as handled: the batch commits past it.
    fn handled(&mut self, p: i32, off: i64) {
        self.oldest.get_or_insert_with(Instant::now);
        let prev = self.offsets.entry(p).or_insert(off);
        *prev = (*prev).max(off);
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

    /// Handles one record. An error means it could not be handled now
    /// (ClickHouse or the broker unreachable) and nothing of it was kept:
    /// the caller holds it and tries again later.
    fn handle(
        &mut self,
        m: &impl Message,
        dlq: &ThreadedProducer<DefaultProducerContext>,
    ) -> Result<(), Error> {
        let (p, off) = (m.partition(), m.offset());
        if !self.partitions.contains_key(&p) {
            // Every assigned partition not loaded yet, at once.
            let mut parts: Vec<i32> = self.assigned.iter().copied().chain([p]).collect();
            parts.retain(|q| !self.partitions.contains_key(q));
            parts.sort_unstable();
            parts.dedup();
            self.load_partitions(&parts)?;
        }
        self.check_contiguous(p, off);
        if off <= self.partitions[&p].stored {
            let sink = &*self.metrics;
            sink.records_already_stored.fetch_add(1, Ordering::Relaxed);
            self.handled(p, off);
            return Ok(());
        }
        let payload = m.payload().unwrap_or_default();
        let batch = match decode_record(payload) {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                let topic = &self.cfg.sink.dlq_topic;
                dlq::send(dlq, topic, m.key(), payload, &reason, p, off)?;
                warn!(partition = p, offset = off, %reason, "undecodable record sent to the dead-letter topic");
                self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
                self.handled(p, off);
                return Ok(());
            }
        };
        // Not known yet: the record waits (`Err`), nothing of it kept.
        let Some((tier, retention_days)) = self.tenant_class(&batch.tenant_id)? else {
            let tenant = Uuid::from_bytes(batch.tenant_id);
            let reason = format!("unknown tenant {tenant}: not in the tenant registry");
            let topic = &self.cfg.sink.dlq_topic;
            dlq::send(dlq, topic, m.key(), payload, &reason, p, off)?;
            warn!(partition = p, offset = off, %tenant, "record of a tenant the registry does not list sent to the dead-letter topic");
            self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
            self.handled(p, off);
            return Ok(());
        };
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
            let ua = e.user_agent.as_ref().map_or("", |s| s);
            let agent = self.agents.get(ua);
            let agent = AgentColumns {
                browser: &agent.browser,
                os: &agent.os,
                device: agent.device,
            };
            self.batch.block.push(batch, e, src, agent);
            rows += 1;
        }
        if rows > 0 {
            self.batch.received.push((received, rows));
            self.batch.last_row = Some((p, off));
        }
        if dups > 0 {
            let sink = &*self.metrics;
            sink.duplicates_skipped.fetch_add(dups, Ordering::Relaxed);
        }
        self.handled(p, off);
        Ok(())
    }
}

/// The consumer loop's state besides the batch: what waits, what is paused.
///
/// The loop never blocks on ClickHouse: a closed batch the inserter cannot
/// take yet, or a record that cannot be handled yet, pauses this sink's
/// partitions, and the loop goes on polling (so the group sees a live member
/// within `max.poll.interval.ms`) until it can resume them.
struct Flow {
    /// A closed batch waiting for the inserter.
    ready: Option<Batch>,
    /// A record that could not be handled yet, and when to try it again.
    held: Option<(OwnedMessage, Instant)>,
    held_wait: Duration,
    /// Whether this sink's partitions are paused.
    paused: bool,
    watchdog: Watchdog,
    /// When to subscribe again after the watchdog left the group.
    resubscribe_at: Option<Instant>,
}

/// This sink's partitions of `topic`, as a list for pause and resume.
fn assignment(consumer: &BaseConsumer<Context>) -> TopicPartitionList {
    consumer.assignment().unwrap_or_default()
}

impl Flow {
    /// Pauses or resumes every assigned partition to match `want`.
    fn set_paused(&mut self, want: bool, consumer: &BaseConsumer<Context>, metrics: &SinkMetrics) {
        if want == self.paused {
            return;
        }
        let tpl = assignment(consumer);
        let r = if want {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = r {
            warn!(%e, paused = want, "cannot pause or resume the partitions");
        }
        self.paused = want;
        metrics.paused.store(want, Ordering::Relaxed);
    }

    /// Holds `m` (it could not be handled) until its retry time. Pausing its
    /// partition (below) keeps what follows it from being consumed first,
    /// and resuming fetches from just after it.
    fn hold(&mut self, m: OwnedMessage, backoff_max: Duration) {
        self.held_wait = (self.held_wait * 2).clamp(HELD_RETRY_START, backoff_max);
        self.held = Some((m, Instant::now() + self.held_wait));
    }
}

/// The way to the inserter: the rendezvous, the buffers coming back, and the
/// count of batches it holds.
pub(super) struct ToInserter<'a> {
    pub(super) batches: &'a SyncSender<Batch>,
    pub(super) spare: &'a Receiver<Batch>,
    pub(super) inflight: &'a Inflight,
}

/// The consumer loop. Returns once `stop` is set, after handing the last
/// batches to the inserter.
pub(super) fn consume(
    sink: &mut Sink<'_>,
    consumer: &BaseConsumer<Context>,
    dlq: &ThreadedProducer<DefaultProducerContext>,
    inserter: ToInserter<'_>,
    stall_after: Duration,
    stalls: &Stalls,
    stop: &AtomicBool,
) {
    let ToInserter {
        batches: to_inserter,
        spare,
        inflight,
    } = inserter;
    let topic = sink.cfg.redpanda.topic.clone();
    let metrics = sink.metrics.clone();
    let backoff_max = sink.backoff_max;
    let mut flow = Flow {
        ready: None,
        held: None,
        held_wait: Duration::ZERO,
        paused: false,
        watchdog: Watchdog::new(stall_after, Instant::now()),
        resubscribe_at: None,
    };
    while !stop.load(Ordering::SeqCst) {
        let msg = consumer.poll(POLL_MAX);
        let now = Instant::now();
        if consumer.context().rebalanced.swap(false, Ordering::SeqCst) {
            // Partitions moved: what is not with the inserter will be
            // consumed again by whoever owns them now; drop it here and
            // reload state.
            sink.discard();
            flow.ready = None;
            flow.held = None;
            flow.held_wait = Duration::ZERO;
            sink.assigned = assignment(consumer)
                .elements_for_topic(&topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            // A new assignment starts unpaused (resume is a no-op on
            // partitions that are not paused).
            flow.paused = true;
            flow.set_paused(false, consumer, &metrics);
            flow.watchdog.group_changed(now);
        }
        match msg {
            Some(Ok(m)) if flow.held.is_some() => {
                // Fetched before the pause took hold: read again after the
                // held record.
                let (p, off) = (m.partition(), m.offset());
                if let Err(e) = consumer.seek(&topic, p, Offset::Offset(off), SEEK_TIMEOUT) {
                    warn!(%e, partition = p, offset = off, "cannot rewind a paused partition");
                }
            }
            Some(Ok(m)) => {
                if let Err(e) = sink.handle(&m, dlq) {
                    warn!(%e, partition = m.partition(), offset = m.offset(), "record held; retrying");
                    flow.hold(m.detach(), backoff_max);
                }
            }
            Some(Err(e)) => warn!(%e, "consumer error"),
            None => {}
        }
        if let Some((m, at)) = flow.held.take() {
            if now < at {
                flow.held = Some((m, at));
            } else if let Err(e) = sink.handle(&m, dlq) {
                if flow.held_wait >= backoff_max {
                    warn!(%e, partition = m.partition(), offset = m.offset(), "held record still fails");
                }
                flow.hold(m, backoff_max);
            } else {
                flow.held_wait = Duration::ZERO;
            }
        }
        if flow.ready.is_none() && sink.due() {
            flow.ready = sink.close(spare);
        }
        if let Some(batch) = flow.ready.take() {
            // Counted first: the inserter may finish it before send returns.
            inflight.begin();
            match to_inserter.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(batch)) => {
                    inflight.end();
                    flow.ready = Some(batch);
                }
                Err(TrySendError::Disconnected(_)) => {
                    inflight.end();
                    return;
                }
            }
        }
        let wait = flow.ready.is_some() || flow.held.is_some();
        flow.set_paused(wait, consumer, &metrics);
        rejoin_if_stalled(sink, consumer, &mut flow, stalls, &topic, now);
    }
    // Stopping: the last batches go to the inserter, which makes one more
    // attempt each.
    for batch in flow.ready.take().into_iter().chain(sink.close(spare)) {
        inflight.begin();
        if to_inserter.send(batch).is_err() {
            inflight.end();
        }
    }
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
        if now >= at {
            flow.resubscribe_at = None;
            if let Err(e) = consumer.subscribe(&[topic]) {
                warn!(%e, "cannot subscribe again; retrying");
                flow.resubscribe_at = Some(now + REJOIN_PAUSE);
            }
            flow.watchdog.group_changed(now);
        }
        return;
    }
    let elsewhere = stalls.elsewhere.load(Ordering::Relaxed);
    let here = stalls.here.load(Ordering::Relaxed);
    if !flow.watchdog.due(now, elsewhere, here) {
        return;
    }
    flow.watchdog.backed_off(now, elsewhere);
    // Rebalancing is of no use while nobody can insert.
    if !sink.ch.ping() {
        return;
    }
    warn!(
        stalled = elsewhere,
        "partitions this sink does not own make no progress; rejoining the group"
    );
    sink.metrics.rejoins.fetch_add(1, Ordering::Relaxed);
    consumer.unsubscribe();
    flow.resubscribe_at = Some(now + REJOIN_PAUSE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    type Rows = Vec<(Uuid, Tier, u16)>;

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
