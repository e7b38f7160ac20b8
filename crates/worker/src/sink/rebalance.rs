//! Group membership: rebalance callbacks, the batch in flight a rebalance
//! waits for, and the watchdog that rejoins the group when partitions stall
//! elsewhere.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;
use tracing::warn;

/// Batches handed to the inserter and not yet committed (0 or 1).
#[derive(Debug, Default)]
pub(super) struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
    /// Set when a rebalance gave up waiting: the inserter drops the batch.
    abandon: AtomicBool,
}

impl Inflight {
    pub(super) fn begin(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.abandon.store(false, Ordering::SeqCst);
    }

    pub(super) fn end(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    /// Whether the batch in flight is to be dropped instead of retried.
    pub(super) fn abandoned(&self) -> bool {
        self.abandon.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight; false if `limit` passed first.
    fn wait_idle(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = match deadline {
                None => self.idle.wait(n).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.idle
                        .wait_timeout(n, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// How long a rebalance waits for the batches in flight while a ClickHouse
/// shard is down (every replica failing), instead of the rebalance wait.
const SHARD_DOWN_REBALANCE_WAIT: Duration = Duration::from_secs(5);

/// Longest a consumer poll may block before [`PollWaker`] cuts it short
/// (a poll asks for at most 100 ms).
pub(super) const POLL_STALL: Duration = Duration::from_secs(1);

/// Cuts short a consumer poll that blocks past [`POLL_STALL`].
///
/// librdkafka's timed waits end at a wall-clock instant (a condition
/// variable on `CLOCK_REALTIME`), so a poll that began before the clock
/// stepped back (NTP, a VM resumed, a clock that had jumped ahead) sleeps
/// that much longer unless an event arrives, and with every partition
/// paused (a batch waiting for the inserter) none does: the sink stood
/// still after a clock had jumped a day ahead and back (tests/chaos.rs).
/// The consumer loop marks each poll; a thread of the sink checks the mark
/// on the monotonic clock and yields the consumer queue, which ends the
/// wait at once.
#[derive(Debug)]
pub(super) struct PollWaker {
    origin: Instant,
    /// Milliseconds since `origin` at which the poll now running began, plus
    /// one; 0 when the loop is not in a poll.
    since_ms: AtomicU64,
}

impl PollWaker {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// The consumer loop enters a poll.
    pub(super) fn polling(&self) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The consumer loop left its poll.
    pub(super) fn polled(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the poll now running began more than `limit` ago.
    fn stalled(&self, limit: Duration) -> bool {
        let since = self.since_ms.load(Ordering::Relaxed);
        since != 0 && self.now_ms().saturating_sub(since) > limit.as_millis() as u64
    }

    /// Until `done`: every half [`POLL_STALL`], yields `consumer`'s queue
    /// if its poll has blocked longer than that.
    pub(super) fn run(&self, consumer: &BaseConsumer<Context>, done: impl Fn() -> bool) {
        let mut warned = false;
        while !done() {
            std::thread::sleep(POLL_STALL / 2);
            if !self.stalled(POLL_STALL) {
                warned = false;
                continue;
            }
            if !warned {
                warn!(
                    limit_ms = POLL_STALL.as_millis() as u64,
                    "a consumer poll blocked past its limit (a long rebalance wait, or the wall clock stepped back); cutting it short"
                );
                warned = true;
            }
            let rk = consumer.client().native_ptr();
            // SAFETY: `rk` is the live consumer's handle (`consumer` is
            // borrowed for this call). `rd_kafka_queue_get_consumer` returns
            // a new reference to its consumer queue (or null), released
            // right after with `rd_kafka_queue_destroy`; yielding a queue
            // from another thread is what librdkafka documents it for.
            unsafe {
                let q = rdkafka::bindings::rd_kafka_queue_get_consumer(rk);
                if !q.is_null() {
                    rdkafka::bindings::rd_kafka_queue_yield(q);
                    rdkafka::bindings::rd_kafka_queue_destroy(q);
                }
            }
        }
    }
}

pub(super) struct Context {
    pub(super) rebalanced: AtomicBool,
    pub(super) inflight: Arc<Inflight>,
    pub(super) metrics: Arc<SinkMetrics>,
    /// Longest wait for the batch in flight before a rebalance drops it; it
    /// stays under `max.poll.interval.ms`, the group's rebalance timeout.
    pub(super) rebalance_wait: Duration,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.rebalanced.store(true, Ordering::SeqCst);
        // The batch in flight must land and commit before these partitions
        // move: their next owner resumes from what ClickHouse holds. If it
        // cannot land in time (ClickHouse down), it is dropped instead, so
        // that it cannot land after the next owner read ClickHouse; its
        // records are consumed again from the committed offsets.
        // A shard that is down holds its batch for as long as it is down:
        // dropped soon instead (its partitions' next owner fences it), so
        // that one shard does not hold every member's rebalance.
        let wait = if self.metrics.any_shard_down() {
            self.rebalance_wait.min(SHARD_DOWN_REBALANCE_WAIT)
        } else {
            self.rebalance_wait
        };
        if !self.inflight.wait_idle(Some(wait)) {
            warn!(
                waited_s = wait.as_secs(),
                "the batch in flight did not land before the rebalance; dropping it"
            );
            self.inflight.abandon.store(true, Ordering::SeqCst);
            self.inflight.wait_idle(None);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let n = match r {
            Rebalance::Assign(tpl) => tpl.count() as i64,
            _ => 0,
        };
        self.metrics.assigned_partitions.store(n, Ordering::Relaxed);
    }
}

/// Decides when the sink leaves and rejoins its group to get stalled
/// partitions moving again.
///
/// A group can settle with partitions nobody consumes. tansu 0.6 does it after
/// a `kill -9`: when the dead leader expires during a follower's SyncGroup, it
/// forms a generation with no assignment at all; when a dead member expires
/// while the group is formed, its partitions stay assigned to it. The live
/// members then heartbeat happily forever. Whatever the broker, the cure is a
/// rebalance: if partitions stall while none of this sink's own do (so the
/// fault is not here, e.g. ClickHouse), it leaves and rejoins, at most every
/// `backoff` (from the stall time, doubling up to [`REJOIN_BACKOFF_MAX`]).
#[derive(Debug)]
pub(super) struct Watchdog {
    /// How long partitions stall, and the group stays unchanged, first.
    stall_after: Duration,
    /// How long partitions nobody writes wait, and the group stays
    /// unchanged, before a sink that owns nothing rejoins.
    quiet_after: Duration,
    /// Last time this sink's assignment changed (or it subscribed).
    settled_since: Instant,
    not_before: Instant,
    backoff: Duration,
    /// Stalled partitions elsewhere at the last rejoin: more than that is a
    /// new situation, worth a rejoin without waiting out the backoff.
    tried_with: i64,
}

/// Longest wait between two rejoins while partitions stay stalled.
pub(super) const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(600);

impl Watchdog {
    pub(super) fn new(stall_after: Duration, quiet_after: Duration, now: Instant) -> Self {
        Self {
            stall_after,
            quiet_after,
            settled_since: now,
            not_before: now,
            backoff: stall_after,
            tried_with: 0,
        }
    }

    /// Whether a sink that owns nothing may rejoin now for quiet partitions
    /// (see [`super::lag::quiet_elsewhere`]): the group unchanged for the
    /// quiet time, and not within the backoff of the last rejoin.
    pub(super) fn quick_due(&self, now: Instant) -> bool {
        now >= self.not_before
            && now.saturating_duration_since(self.settled_since) >= self.quiet_after
    }

    /// The assignment changed: the group is moving.
    pub(super) fn group_changed(&mut self, now: Instant) {
        self.settled_since = now;
    }

    /// Whether to rejoin now, given the stalled partitions others own (or
    /// nobody does) and those this sink owns.
    pub(super) fn due(&mut self, now: Instant, stalled_elsewhere: i64, stalled_here: i64) -> bool {
        if stalled_elsewhere == 0 || stalled_elsewhere > self.tried_with {
            // Cleared, or worse than at the last try: start over.
            self.backoff = self.stall_after;
            self.not_before = self.not_before.min(now);
            self.tried_with = 0;
        }
        stalled_elsewhere > 0
            && stalled_here == 0
            && now >= self.not_before
            && now.saturating_duration_since(self.settled_since) >= self.stall_after
    }

    /// A rejoin happened (or was skipped because ClickHouse is down) with
    /// `stalled_elsewhere` partitions stalled: wait longer before the next.
    pub(super) fn backed_off(&mut self, now: Instant, stalled_elsewhere: i64) {
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).min(REJOIN_BACKOFF_MAX);
        self.tried_with = stalled_elsewhere;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoins_only_for_stalls_elsewhere_once_settled_then_backs_off() {
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        let mut w = Watchdog::new(s, s, t0);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Not before the group had `stall_after` to settle.
        assert!(!w.due(at(5), 3, 0));
        assert!(w.due(at(10), 3, 0));
        // Never when nothing stalls elsewhere, or this sink stalls itself.
        assert!(!w.due(at(10), 0, 0));
        assert!(!w.due(at(10), 3, 1));
        w.backed_off(at(10), 3);
        assert!(!w.due(at(19), 3, 0));
        assert!(w.due(at(20), 3, 0));
        w.backed_off(at(20), 3);
        // Doubled: 20 s now.
        assert!(!w.due(at(39), 3, 0));
        assert!(w.due(at(40), 3, 0));
        // A new assignment restarts the settle time.
        w.group_changed(at(41));
        assert!(!w.due(at(45), 3, 0));
        assert!(w.due(at(51), 3, 0));
        w.backed_off(at(51), 3);
        // Once the stall clears, the backoff starts over.
        assert!(!w.due(at(52), 0, 0));
        w.backed_off(at(52), 3);
        assert!(!w.due(at(61), 3, 0));
        assert!(w.due(at(62), 3, 0));
        w.backed_off(at(62), 3);
        // More partitions stalled than at the last try: no waiting out the
        // backoff, only the settle time.
        w.group_changed(at(63));
        assert!(!w.due(at(70), 6, 0));
        assert!(w.due(at(73), 6, 0));
        let mut w = Watchdog::new(s, s, t0);
        for i in 0..20 {
            w.backed_off(at(i), 3);
        }
        assert_eq!(w.backoff, REJOIN_BACKOFF_MAX);
        assert!(!w.due(at(30), 3, 0));
    }

    #[test]
    fn a_poll_is_stalled_only_while_it_runs_past_the_limit() {
        let w = PollWaker::new();
        assert!(!w.stalled(Duration::ZERO));
        w.polling();
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.stalled(Duration::from_millis(1)));
        assert!(!w.stalled(Duration::from_secs(60)));
        w.polled();
        assert!(!w.stalled(Duration::ZERO));
    }

    #[test]
    fn a_bounded_wait_reports_whether_the_batch_landed() {
        let f = Arc::new(Inflight::default());
        assert!(f.wait_idle(Some(Duration::from_millis(1))));
        f.begin();
        assert!(!f.wait_idle(Some(Duration::from_millis(20))));
        let g = f.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            g.end();
        });
        assert!(f.wait_idle(Some(Duration::from_secs(10))));
        t.join().unwrap();
        f.abandon.store(true, Ordering::SeqCst);
        f.begin();
        assert!(!f.abandoned(), "a new batch starts with a clean flag");
    }
}
