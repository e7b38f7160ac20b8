//! The dead-letter topic: records the sink could not decode, with why.
//!
//! Each dead letter keeps the original key and value and carries headers
//! `reason`, `source_partition` and `source_offset`. `ingestion-engine dlq
//! list` prints them; `dlq replay` produces them back onto the events topic
//! (for records that failed because of a bug since fixed), tracking what it
//! replayed with its own consumer group so a replay never repeats.

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

    /// Writes one dead letter and waits until the broker has it.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), Error> {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON,
                value: Some(reason),
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

/// Produces every dead letter not replayed before back onto the events topic.
/// Returns how many were replayed.
pub fn replay(cfg: &Config) -> Result<u64, Error> {
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
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            tpl.add_partition(topic, p.id());
            ends.push((p.id(), high));
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut assign = TopicPartitionList::new();
    let mut remaining = 0i64;
    for (p, high) in &ends {
        let start = committed
            .find_partition(topic, *p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        if start < *high {
            assign.add_partition_offset(topic, *p, Offset::Offset(start))?;
            remaining += high - start;
        }
    }
    if remaining == 0 {
        return Ok(0);
    }
    consumer.assign(&assign)?;
    let mut replayed = 0u64;
    while remaining > 0 {
        let Some(m) = consumer.poll(timeout) else {
            break;
        };
        let m = m?;
        let mut record = BaseRecord::<[u8], [u8]>::to(&cfg.redpanda.topic)
            .payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        producer.deliver(record)?;
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(topic, m.partition(), Offset::Offset(m.offset() + 1))?;
        consumer.commit(&done, CommitMode::Sync)?;
        replayed += 1;
        remaining -= 1;
    }
    Ok(replayed)
}
