//! Topic identity: whether the broker's log of a partition is still the one
//! ClickHouse's receipts were stored from, and the operator's way on once it
//! is not (`ingestion-engine sink accept-reset`).
//!
//! Receipts name their topic and partition, but a topic deleted and
//! created again under the same name, or a broker that lost its data,
//! starts its offsets again: records at offsets the receipts cover are then
//! other records. Two checks tell (README "Topic identity" in this crate):
//!
//! - the newest stored offset is at or past the broker's end: the log is
//!   shorter than what was stored from it;
//! - otherwise the broker's record at that offset is read and its
//!   fingerprint ([`receipts::record_hash`]) compared with the one the
//!   receipt holds: a log grown past the old end has another record there.
//!
//! Either way the sink holds the partition. Once the operator has said the
//! new log is the one to keep ([`accept`]), receipts written before are of
//! the old log: the partition's **epoch** (table `sink_topic_epochs`) is
//! the newest write time among them, and only later receipts count.

use std::time::{Duration, Instant};

use clickhouse_client::receipts::{self, Tables};
use clickhouse_client::schema::LEGACY_OFFSETS;
use clickhouse_client::Client;
use engine_core::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::Error;

/// Group id of the probe: set, never joined nor committed to.
const PROBE_GROUP: &str = "ingestion-engine-sink-probe";
/// Timeout of one broker read of the probe (watermarks, one record).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The last accepted reset of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Receipts written up to this time (µs, their own `received_at_us`)
    /// are of a log the broker no longer has.
    pub after_us: i64,
    /// Where the new log started when the reset was accepted.
    pub from_offset: i64,
}

/// The last accepted reset of `topic`'s partition `p`, if any.
pub fn epoch(ch: &Client, db: &str, topic: &str, p: i32) -> Result<Option<Epoch>, Error> {
    let answer = ch.query(&receipts::epoch_sql(db, topic, p))?;
    Ok(
        receipts::parse_pair(&answer).map(|(after_us, from_offset)| Epoch {
            after_us,
            from_offset,
        }),
    )
}

/// The receipts of a partition that count: those after its epoch.
pub fn counted_after(epoch: Option<Epoch>) -> i64 {
    epoch.map_or(i64::MIN, |e| e.after_us)
}

/// The highest offset of partition `p` a sink from before receipts stored
/// (migration 8), or -1. Not counted once a reset was accepted (`epoch`):
/// they are of the old log too.
pub fn legacy_offset(ch: &Client, db: &str, p: i32, epoch: Option<Epoch>) -> Result<i64, Error> {
    if epoch.is_some() {
        return Ok(-1);
    }
    let answer = ch.query(&format!(
        "SELECT max(stored), count() FROM {db}.{LEGACY_OFFSETS} WHERE broker_partition = {p} FORMAT TabSeparated"
    ))?;
    Ok(match receipts::parse_pair(&answer) {
        Some((max, n)) if n != 0 => max,
        _ => -1,
    })
}

/// What the broker's log of a partition is to what ClickHouse stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same log (or nothing stored, or nothing left to compare).
    Same,
    /// ClickHouse stores offsets up to `stored`; the broker ends at `end`.
    Shorter { stored: i64, end: i64 },
    /// The broker's record at `offset` is not the one stored from there.
    Changed { offset: i64 },
}

impl Verdict {
    /// The error a sink holds partition `partition` with, if not the same log.
    pub fn error(self, partition: i32) -> Option<Error> {
        match self {
            Verdict::Same => None,
            Verdict::Shorter { stored, end } => Some(Error::TopicReset {
                partition,
                stored,
                end,
            }),
            Verdict::Changed { offset } => Some(Error::TopicChanged { partition, offset }),
        }
    }
}

/// Reads watermarks and single records of the events topic, outside the
/// sink's group.
pub struct Probe {
    consumer: Option<BaseConsumer>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    /// A probe; its consumer is made at first use.
    pub fn new() -> Self {
        Self { consumer: None }
    }

    fn consumer(&mut self, cfg: &Config) -> Result<&BaseConsumer, Error> {
        Ok(match &mut self.consumer {
            Some(c) => c,
            slot @ None => slot.insert(
                redpanda::base_config(&cfg.redpanda)
                    .set("group.id", PROBE_GROUP)
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    .create()?,
            ),
        })
    }

    /// `(low, high)` watermarks of partition `p` of the events topic.
    pub fn watermarks(&mut self, cfg: &Config, p: i32) -> Result<(i64, i64), Error> {
        let topic = &cfg.redpanda.topic;
        Ok(self
            .consumer(cfg)?
            .fetch_watermarks(topic, p, PROBE_TIMEOUT)?)
    }

    /// The fingerprint of record `offset` of partition `p` as the broker
    /// has it now (`None`: the broker has it no more).
    pub fn hash_at(&mut self, cfg: &Config, p: i32, offset: i64) -> Result<Option<u64>, Error> {
        let topic = cfg.redpanda.topic.clone();
        let probe = self.consumer(cfg)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(offset))?;
        probe.assign(&tpl)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(Error::Kafka(
                    rdkafka::error::KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    ),
                ));
            }
            match probe.poll(left) {
                // An offset below the one asked for is left from an earlier
                // assignment; one above means the record is gone.
                Some(Ok(m)) if m.partition() == p && m.offset() >= offset => {
                    let value = m.payload().unwrap_or_default();
                    break Ok((m.offset() == offset).then(|| receipts::record_hash(value)));
                }
                Some(Err(e)) => break Err(e.into()),
                _ => {}
            }
        };
        if let Err(e) = probe.unassign() {
            warn!(%e, "cannot unassign the record probe");
        }
        found
    }

    /// The newest offset below `end` a receipt of `p` (after `epoch`) ends
    /// at whose record the broker still has, unchanged: `Some` means the
    /// log is the stored one up to there.
    fn same_below(
        &mut self,
        cfg: &Config,
        (ch, tables): (&Client, &Tables),
        p: i32,
        epoch: Option<Epoch>,
        end: i64,
    ) -> Result<Option<i64>, Error> {
        let topic = &cfg.redpanda.topic;
        let sql = receipts::max_stored_below_sql(tables, topic, p, counted_after(epoch), end);
        let Some((at, hash)) = receipts::parse_max_stored(&ch.query(&sql)?) else {
            return Ok(None);
        };
        if hash == 0 {
            return Ok(None);
        }
        let (low, _) = self.watermarks(cfg, p)?;
        if at < low {
            return Ok(None);
        }
        Ok((self.hash_at(cfg, p, at)? == Some(hash)).then_some(at))
    }

    /// Whether partition `p`'s log on the broker is the one ClickHouse
    /// stored from: receipts after `epoch`, and `legacy` (see
    /// [`legacy_offset`]), as `tables` on `ch` hold them.
    pub fn check(
        &mut self,
        cfg: &Config,
        (ch, tables): (&Client, &Tables),
        p: i32,
        epoch: Option<Epoch>,
        legacy: i64,
    ) -> Result<Verdict, Error> {
        let topic = &cfg.redpanda.topic;
        let newest = receipts::parse_max_stored(&ch.query(&receipts::max_stored_sql(
            tables,
            topic,
            p,
            counted_after(epoch),
        ))?);
        let stored = newest.map_or(-1, |(at, _)| at).max(legacy);
        let (low, end) = self.watermarks(cfg, p)?;
        if stored >= end {
            return Ok(Verdict::Shorter { stored, end });
        }
        // The broker still has the record stored last: it must be the same
        // one. Below the low watermark retention removed it: nothing to
        // compare (a log recreated starts at 0, so it has the offset).
        // Receipts from before fingerprints (`last_hash` 0) are not compared.
        match newest {
            Some((at, hash)) if hash != 0 && at >= low => match self.hash_at(cfg, p, at)? {
                Some(now) if now == hash => Ok(Verdict::Same),
                Some(_) => Ok(Verdict::Changed { offset: at }),
                // Not a verdict: the partition waits and is checked again
                // (retention may have removed it meanwhile).
                None => Err(Error::Refused(format!(
                    "partition {p}: the broker did not return record {at} (its log starts at {low}): \
                     cannot tell whether it is the one stored"
                ))),
            },
            _ => Ok(Verdict::Same),
        }
    }
}

/// One partition's outcome of [`accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The reset was recorded: receipts written up to `after_us` no longer
    /// count; the new log started at `from_offset` (the sink stores it
    /// from the group's committed offset, which the new log does not have
    /// yet, so from its start).
    Reset {
        partition: i32,
        verdict: Verdict,
        after_us: i64,
        from_offset: i64,
    },
    /// The broker's log is the one stored from: nothing recorded.
    Same { partition: i32 },
    /// Not accepted, and why: accepting would lose or double records.
    Refused { partition: i32, why: String },
}

/// Accepts the reset of each of `partitions` (all of the events topic's
/// when empty) whose broker log is not the one ClickHouse stored from: from
/// then on the sink stores that log from its start. Refuses a partition
/// whose new log the sink's group has already committed into (records
/// before that offset would never be stored), and one whose log is the
/// stored one cut short (a broker that lost the log's tail: the records
/// before the cut would be stored twice).
pub fn accept(cfg: &Config, partitions: &[i32]) -> Result<Vec<Accepted>, Error> {
    let ch = Client::from_config(&cfg.clickhouse, cfg.sink.clickhouse_timeout_ms);
    let (db, topic) = (&cfg.clickhouse.database, &cfg.redpanda.topic);
    // On a cluster through the `Distributed` tables: every shard's receipts,
    // each from one replica (run it with the sinks stopped).
    let tables = Tables::single(db);
    let mut probe = Probe::new();
    let all: Vec<i32> = if partitions.is_empty() {
        let c = probe.consumer(cfg)?;
        let md = c.fetch_metadata(Some(topic), PROBE_TIMEOUT)?;
        md.topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect()
    } else {
        partitions.to_vec()
    };
    let group: BaseConsumer = redpanda::base_config(&cfg.redpanda)
        .set("group.id", &cfg.sink.consumer_group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut out = Vec::new();
    for p in all {
        let before = epoch(&ch, db, topic, p)?;
        let legacy = legacy_offset(&ch, db, p, before)?;
        let verdict = probe.check(cfg, (&ch, &tables), p, before, legacy)?;
        if verdict == Verdict::Same {
            out.push(Accepted::Same { partition: p });
            continue;
        }
        let (low, end) = probe.watermarks(cfg, p)?;
        if let Verdict::Shorter { .. } = verdict {
            if let Some(at) = probe.same_below(cfg, (&ch, &tables), p, before, end)? {
                out.push(Accepted::Refused {
                    partition: p,
                    why: format!(
                        "the broker's log is the stored one up to offset {at} and then ends: it lost its tail, \
                         it was not recreated; accepting would store the records up to {at} again"
                    ),
                });
                continue;
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        let committed = group.committed_offsets(tpl, PROBE_TIMEOUT)?;
        let c = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if let Some(c) = c.filter(|&c| c > low) {
            out.push(Accepted::Refused {
                partition: p,
                why: format!(
                    "consumer group {} has committed offset {c} in the new log (which starts at {low}): \
                     its records before {c} would never be stored; reset the group's offsets of topic {topic} \
                     to the earliest first (with every sink stopped), then run this again",
                    cfg.sink.consumer_group
                ),
            });
            continue;
        }
        let newest =
            receipts::parse_pair(&ch.query(&receipts::newest_receipt_sql(&tables, topic, p))?);
        let after_us = match newest {
            Some((at, n)) if n > 0 => at,
            _ => 0,
        };
        ch.execute(&receipts::insert_epoch_sql(db, topic, p, after_us, low))?;
        out.push(Accepted::Reset {
            partition: p,
            verdict,
            after_us,
            from_offset: low,
        });
    }
    Ok(out)
}
