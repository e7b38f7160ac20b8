//! The dead-letter topic: records the sink could not decode, with why.
//!
//! Each dead letter keeps the original key and value and carries headers
//! `reason`, `source_partition` and `source_offset`. `ingestion-engine dlq
//! list` prints them; `dlq replay` produces them back onto the events topic
//! (for records that failed because of a bug since fixed), tracking what it
//! replayed with its own consumer group so a replay never repeats, and each
//! source record once (a sink that crashed between a dead letter and its
//! commit writes it again: the copy is skipped).

use std::sync::Mutex;
use std::time::Duration;

use engine_core::config::Config;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::Error;

/// Header names of a dead letter.
pub const REASON: &str = "reason";
pub const SOURCE_PARTITION: &str = "source_partition";
pub const SOURCE_OFFSET: &str = "source_offset";
pub const SOURCE_TOPIC: &str = "source_topic";
/// Consumer group that remembers what `dlq replay` already replayed.
const REPLAY_GROUP: &str = "ingestion-engine-dlq-replay";

/// How long one dead letter (or replayed record) may take to be delivered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Remembers the outcome of the last delivery: librdkafka reports a failed
/// delivery (the topic refused, the message timed out) only to this
/// callback; `flush` itself returns `Ok`.
#[derive(Debug, Default)]
pub struct Deliveries {
    last: Mutex<Option<Result<(), KafkaError>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

/// A producer for dead letters (and replays): `acks=all`, idempotent, one
/// record at a time, each confirmed by its delivery report.
pub struct Producer {
    inner: BaseProducer<Deliveries>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// A producer for dead letters (and replays).
pub fn producer(cfg: &Config) -> Result<Producer, Error> {
    Ok(Producer {
        inner: redpanda::base_config(&cfg.redpanda)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(Deliveries::default())?,
    })
}

impl Producer {
    /// Produces `record` and waits for its delivery report: `Ok` only once
    /// the broker has it, so nothing is committed past a dead letter that
    /// was not written.
    pub fn deliver(&self, record: BaseRecord<'_, [u8], [u8]>) -> Result<(), Error> {
        let ctx = self.inner.context();
        *ctx.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.inner.send(record).map_err(|(e, _)| e)?;
        // Serves the delivery callback on this thread.
        self.inner
            .flush(DELIVERY_TIMEOUT + Duration::from_secs(5))?;
        match ctx.last.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.into()),
            None => {
                Err(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::MessageTimedOut).into())
            }
        }
    }

    /// Writes one dead letter of record `offset` of `source_topic`'s
    /// `partition` to `topic` and waits until the broker has it.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &str,
        source_topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), Error> {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: SOURCE_TOPIC,
                value: Some(source_topic),
            })
            .insert(Header {
                key: SOURCE_PARTITION,
                value: Some(&partition.to_string()),
            })
            .insert(Header {
                key: SOURCE_OFFSET,
                value: Some(&offset.to_string()),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(value)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.deliver(record)
    }
}

/// One dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub source_partition: String,
    pub source_offset: String,
    pub bytes: usize,
}

fn header(m: &impl Message, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Every dead letter, oldest first.
pub fn list(cfg: &Config) -> Result<Vec<DeadLetter>, Error> {
    let mut rc = cfg.redpanda.clone();
    rc.topic = cfg.sink.dlq_topic.clone();
    let mut out = Vec::new();
    redpanda::reader::read_topic_messages(&rc, false, |m| {
        out.push(DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            reason: header(m, REASON),
            source_partition: header(m, SOURCE_PARTITION),
            source_offset: header(m, SOURCE_OFFSET),
            bytes: m.payload().map_or(0, <[u8]>::len),
        });
    })?;
    Ok(out)
}

/// Most distinct source records one replay remembers (16 bytes each, plus
/// the set's overhead): past it the replay stops with an error, before
/// anything is replayed twice.
pub const MAX_REPLAY_SOURCES: usize = 4_000_000;

/// What [`replay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Dead letters produced back onto the events topic.
    pub replayed: u64,
    /// Dead letters skipped as copies of a source record replayed already
    /// (a sink that crashed between writing a dead letter and committing
    /// its record writes it again).
    pub duplicates: u64,
}

/// The source record of a dead letter: a hash of its source topic (empty
/// in dead letters from before that header), its partition and offset
/// there (headers), and a hash of its value, so that another record at the
/// same place (a topic recreated or renamed since) is not taken for it.
fn source_of(m: &impl Message) -> Option<(u64, i32, i64, u64)> {
    let p = header(m, SOURCE_PARTITION).parse().ok()?;
    let o = header(m, SOURCE_OFFSET).parse().ok()?;
    let topic = clickhouse_client::receipts::record_hash(header(m, SOURCE_TOPIC).as_bytes());
    let value = clickhouse_client::receipts::record_hash(m.payload().unwrap_or_default());
    Some((topic, p, o, value))
}

/// Produces every dead letter not replayed before back onto the events
/// topic, each source record once: the whole dead-letter topic is read, and
/// a dead letter whose source record was replayed already (before this
/// replay or in it) is skipped. What was replayed is committed with its own
/// consumer group, one dead letter at a time, after its delivery report.
pub fn replay(cfg: &Config) -> Result<Replayed, Error> {
    let consumer: BaseConsumer = redpanda::base_config(&cfg.redpanda)
        .set("group.id", REPLAY_GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let producer = producer(cfg)?;
    let timeout = Duration::from_secs(10);
    let topic = &cfg.sink.dlq_topic;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            tpl.add_partition(topic, p.id());
            ends.push((p.id(), low, high));
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut assign = TopicPartitionList::new();
    // Per partition: (first offset not replayed yet, end at the start).
    let mut spans = std::collections::HashMap::new();
    let mut remaining = 0i64;
    let mut pending = 0i64;
    for &(p, low, high) in &ends {
        let start = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0)
            .max(low);
        if start < high {
            pending += high - start;
        }
        if low < high {
            // From the first: what was replayed before names the sources
            // not to replay again.
            assign.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining += high - low;
            spans.insert(p, (start, high));
        }
    }
    let mut done = Replayed::default();
    if pending == 0 {
        return Ok(done);
    }
    consumer.assign(&assign)?;
    let mut seen = std::collections::HashSet::new();
    while remaining > 0 {
        let Some(m) = consumer.poll(timeout) else {
            break;
        };
        let m = m?;
        let Some(&(start, high)) = spans.get(&m.partition()) else {
            continue;
        };
        if m.offset() >= high {
            // Written since the replay began: the next replay's.
            continue;
        }
        remaining -= 1;
        let source = source_of(&m);
        if let Some(s) = source {
            if seen.len() >= MAX_REPLAY_SOURCES && !seen.contains(&s) {
                return Err(Error::Refused(format!(
                    "the dead-letter topic holds more than {MAX_REPLAY_SOURCES} distinct dead letters: replay \
                     stopped after {} rather than risk replaying one twice; let retention on the dead-letter \
                     topic remove those replayed long ago, then run it again",
                    done.replayed
                )));
            }
        }
        let first_time = source.is_none_or(|s| seen.insert(s));
        if m.offset() < start {
            continue;
        }
        if first_time {
            let mut record = BaseRecord::<[u8], [u8]>::to(&cfg.redpanda.topic)
                .payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            producer.deliver(record)?;
            done.replayed += 1;
        } else {
            done.duplicates += 1;
        }
        let mut next = TopicPartitionList::new();
        next.add_partition_offset(topic, m.partition(), Offset::Offset(m.offset() + 1))?;
        consumer.commit(&next, CommitMode::Sync)?;
    }
    Ok(done)
}
