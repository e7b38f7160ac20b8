//! A batch: one `Native` block on its way from the consumer to the inserter.

use std::time::Instant;

use clickhouse_client::native::EventsBlock;

/// A closed batch on its way to ClickHouse. Its buffers come back to the
/// consumer thread for the next batch.
pub(super) struct Batch {
    pub(super) block: EventsBlock,
    /// (partition, offset) of the last row, to check an unknown outcome.
    pub(super) last_row: Option<(i32, i64)>,
    /// Next offset to commit per partition.
    pub(super) commit: Vec<(i32, i64)>,
    /// When the first record of the batch was consumed.
    pub(super) opened: Instant,
    /// Edge receive time (µs) and row count of each record in the block.
    pub(super) received: Vec<(i64, u64)>,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            block: EventsBlock::new(),
            last_row: None,
            commit: Vec::new(),
            opened: Instant::now(),
            received: Vec::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        // Keeps the columns' capacity: the next batch writes into warm memory.
        self.block.clear();
        self.last_row = None;
        self.commit.clear();
        self.received.clear();
    }
}
