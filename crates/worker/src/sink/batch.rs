//! A batch: per broker partition, the rows of its records and the inserts
//! they make (one per ClickHouse partition), on their way from the consumer
//! to the inserter.

use std::time::Instant;

use clickhouse_client::native::EventsBlock;
use clickhouse_client::receipts::Receipt;

/// One broker partition's share of a batch.
pub(super) struct Part {
    pub(super) partition: i32,
    /// Records `first..=last` of the partition were handled in this batch.
    pub(super) first: i64,
    pub(super) last: i64,
    /// The fingerprint of record `last` (`receipts::record_hash`).
    pub(super) last_hash: u64,
    /// Rows of every insert (each row names its insert), receipts last.
    pub(super) block: EventsBlock,
    /// One per ClickHouse partition, in the order they land.
    pub(super) inserts: Vec<Receipt>,
}

impl Part {
    /// Event rows (receipts not counted).
    pub(super) fn rows(&self) -> u64 {
        self.inserts.iter().map(|r| r.rows).sum()
    }
}

/// A closed batch on its way to ClickHouse. Its buffers come back to the
/// consumer thread for the next batch.
pub(super) struct Batch {
    /// Sorted by partition.
    pub(super) parts: Vec<Part>,
    /// Cleared blocks kept for the next batch's parts.
    pool: Vec<EventsBlock>,
    /// When the first record of the batch was consumed.
    pub(super) opened: Instant,
    /// Edge receive time (µs) and row count of each record in the block.
    pub(super) received: Vec<(i64, u64)>,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            parts: Vec::new(),
            pool: Vec::new(),
            opened: Instant::now(),
            received: Vec::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        // Keeps the columns' capacity: the next batch writes into warm memory.
        for mut part in self.parts.drain(..) {
            part.block.clear();
            self.pool.push(part.block);
        }
        self.received.clear();
    }

    /// Counts record `offset` of partition `p`, whose fingerprint is `hash`,
    /// as handled in this batch (offsets only grow within a partition).
    pub(super) fn handled(&mut self, p: i32, offset: i64, hash: u64) -> &mut Part {
        let part = self.part(p, offset);
        if offset >= part.last {
            part.last = offset;
            part.last_hash = hash;
        }
        part
    }

    /// The part of partition `p`, opened at record `offset` if new.
    fn part(&mut self, p: i32, offset: i64) -> &mut Part {
        let at = match self.parts.binary_search_by_key(&p, |x| x.partition) {
            Ok(i) => i,
            Err(i) => {
                let block = self.pool.pop().unwrap_or_default();
                self.parts.insert(
                    i,
                    Part {
                        partition: p,
                        first: offset,
                        last: offset,
                        last_hash: 0,
                        block,
                        inserts: Vec::new(),
                    },
                );
                i
            }
        };
        &mut self.parts[at]
    }

    /// Event rows over all parts.
    pub(super) fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.block.rows()).sum()
    }

    /// Approximate encoded bytes over all parts.
    pub(super) fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.block.bytes()).sum()
    }
}
