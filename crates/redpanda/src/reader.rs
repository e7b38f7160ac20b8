//! Reads the events topic from the beginning, partition by partition.

use std::time::Duration;

use engine_core::config::RedpandaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::{base_config, Error};

/// One record as stored.
#[derive(Debug)]
pub struct StoredRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

/// Calls `each` for every record of the topic from the beginning. Returns when
/// every partition is read up to its end as of the start, or never when
/// `follow` is set (it keeps tailing). Returns the number of records read.
pub fn read_topic(
    cfg: &RedpandaConfig,
    follow: bool,
    mut each: impl FnMut(StoredRecord<'_>),
) -> Result<u64, Error> {
    read_topic_messages(cfg, follow, |m| {
        each(StoredRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
        })
    })
}

/// Like [`read_topic`], handing out the broker's messages (headers included).
pub fn read_topic_messages(
    cfg: &RedpandaConfig,
    follow: bool,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, Error> {
    let consumer: BaseConsumer = base_config(cfg)
        .set("group.id", "ingestion-engine-dump")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(&cfg.topic), timeout)?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == cfg.topic && t.error().is_none())
        .ok_or_else(|| Error::Topic {
            topic: cfg.topic.clone(),
            message: "does not exist".into(),
        })?;
    let mut tpl = TopicPartitionList::new();
    // (partition, end offset at start)
    let mut ends = Vec::new();
    for p in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(&cfg.topic, p.id(), timeout)?;
        tpl.add_partition_offset(&cfg.topic, p.id(), Offset::Beginning)?;
        if high > low {
            ends.push((p.id(), high));
        }
    }
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    let mut positions: Vec<(i32, i64)> = ends.iter().map(|&(p, _)| (p, -1)).collect();
    let done = |positions: &[(i32, i64)]| {
        positions
            .iter()
            .zip(&ends)
            .all(|(&(_, pos), &(_, end))| pos + 1 >= end)
    };
    while follow || !done(&positions) {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                read += 1;
                if let Some(slot) = positions.iter_mut().find(|(p, _)| *p == m.partition()) {
                    slot.1 = slot.1.max(m.offset());
                }
                each(&m);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(read)
}
