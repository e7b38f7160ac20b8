//! Group membership: rebalance callbacks, and the count of batches in flight
//! a rebalance waits for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};
use telemetry::Metrics;

/// Batches handed to the inserter and not yet committed (0 or 1).
#[derive(Debug, Default)]
pub(super) struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Inflight {
    pub(super) fn begin(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub(super) fn end(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    pub(super) fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

pub(super) struct Context {
    pub(super) rebalanced: AtomicBool,
    pub(super) inflight: Arc<Inflight>,
    pub(super) metrics: Arc<Metrics>,
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
