//! The group's lag, seen from the broker: for every partition of the topic,
//! the high watermark against the group's committed offset. Known whether or
//! not this sink owns the partition, so a stopped group shows as lag that
//! does not shrink, not as a quiet zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::metrics::SinkMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::rebalance::Context;
use crate::Error;

/// How often the group's offsets and the watermarks are read.
pub(super) const LAG_INTERVAL: Duration = Duration::from_secs(2);
/// Timeout of each broker request the monitor makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait between looks checks whether to end.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// One partition as the broker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionOffsets {
    pub(super) partition: i32,
    /// The group's committed offset (next record to consume), if any.
    pub(super) committed: Option<i64>,
    /// Low and high watermarks.
    pub(super) low: i64,
    pub(super) high: i64,
}

impl PartitionOffsets {
    /// Records not yet committed by the group (those it will read next).
    fn pending(&self) -> i64 {
        let from = self.committed.unwrap_or(self.low).max(self.low);
        (self.high - from).max(0)
    }
}

/// What one look at the group found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LagSummary {
    /// Pending records over all partitions.
    pub(super) group: i64,
    /// Pending records over the partitions this sink owns.
    pub(super) own: i64,
    /// Partitions with pending records and no commit for `stall_after`.
    pub(super) stalled: i64,
    /// Those of them this sink owns.
    pub(super) stalled_own: i64,
}

/// Partitions this sink does not own with pending records and no commit
/// for the quiet time (shorter than the stall time): what an idle sink
/// checks before rejoining early.
pub(super) fn quiet_elsewhere(
    progress: &Progress,
    now: Instant,
    parts: &[PartitionOffsets],
    own: &[i32],
    quiet_after: Duration,
) -> Vec<i32> {
    parts
        .iter()
        .filter(|o| !own.contains(&o.partition) && o.pending() > 0)
        .filter(|o| {
            progress
                .seen
                .get(&o.partition)
                .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= quiet_after)
        })
        .map(|o| o.partition)
        .collect()
}

/// The stalls the monitor last saw, for the consumer loop's watchdog.
#[derive(Debug, Default)]
pub(super) struct Stalls {
    /// Stalled partitions owned by other members, or by nobody.
    pub(super) elsewhere: AtomicI64,
    /// Stalled partitions this sink owns.
    pub(super) here: AtomicI64,
    /// Partitions others own (or nobody does) quiet for the quiet time.
    pub(super) quiet: std::sync::Mutex<Vec<i32>>,
    /// The stalled partitions owned by other members, or by nobody (those
    /// `elsewhere` counts).
    pub(super) stalled: std::sync::Mutex<Vec<i32>>,
}

/// Tracks, per partition, when the group last made progress on it.
#[derive(Debug)]
pub(super) struct Progress {
    stall_after: Duration,
    /// Partition → (committed offset last seen, last time it moved or the
    /// partition was caught up).
    seen: HashMap<i32, (Option<i64>, Instant)>,
}

impl Progress {
    pub(super) fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            seen: HashMap::new(),
        }
    }

    /// The partitions this sink does not own with pending records and no
    /// commit for the stall time (as of the last [`Progress::observe`]).
    pub(super) fn stalled_elsewhere(
        &self,
        now: Instant,
        parts: &[PartitionOffsets],
        own: &[i32],
    ) -> Vec<i32> {
        parts
            .iter()
            .filter(|o| !own.contains(&o.partition) && o.pending() > 0)
            .filter(|o| {
                self.seen.get(&o.partition).is_some_and(|(_, since)| {
                    now.saturating_duration_since(*since) >= self.stall_after
                })
            })
            .map(|o| o.partition)
            .collect()
    }

    /// Folds in one look at the topic; `own` names this sink's partitions.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        parts: &[PartitionOffsets],
        own: &[i32],
    ) -> LagSummary {
        let mut s = LagSummary {
            group: 0,
            own: 0,
            stalled: 0,
            stalled_own: 0,
        };
        self.seen
            .retain(|p, _| parts.iter().any(|o| o.partition == *p));
        for o in parts {
            let pending = o.pending();
            let entry = self.seen.entry(o.partition).or_insert((o.committed, now));
            if entry.0 != o.committed || pending == 0 {
                *entry = (o.committed, now);
            }
            let mine = own.contains(&o.partition);
            s.group += pending;
            if mine {
                s.own += pending;
            }
            if pending > 0 && now.saturating_duration_since(entry.1) >= self.stall_after {
                s.stalled += 1;
                s.stalled_own += i64::from(mine);
            }
        }
        s
    }
}

/// Reads every partition's committed offset and watermarks.
fn look(consumer: &BaseConsumer<Context>, topic: &str) -> Result<Vec<PartitionOffsets>, Error> {
    let meta = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let parts: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition(topic, p);
    }
    // The group's offsets, from the coordinator: members or not.
    let committed = consumer.committed_offsets(tpl, REQUEST_TIMEOUT)?;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        out.push(PartitionOffsets {
            partition: p,
            committed,
            low,
            high,
        });
    }
    Ok(out)
}

/// Every [`LAG_INTERVAL`], publishes the group's lag and stalled partitions
/// into `metrics.sink` until `stop`.
pub(super) fn monitor(
    consumer: &BaseConsumer<Context>,
    topic: &str,
    stall_after: Duration,
    quiet_after: Duration,
    stalls: &Stalls,
    metrics: &SinkMetrics,
    stop: impl Fn() -> bool,
) {
    let m = metrics;
    let mut progress = Progress::new(stall_after);
    let mut failing = false;
    while !stop() {
        match look(consumer, topic) {
            Ok(parts) => {
                let own: Vec<i32> = consumer
                    .assignment()
                    .map(|tpl| {
                        tpl.elements_for_topic(topic)
                            .iter()
                            .map(|e| e.partition())
                            .collect()
                    })
                    .unwrap_or_default();
                let now = Instant::now();
                let s = progress.observe(now, &parts, &own);
                *stalls.quiet.lock().unwrap_or_else(|e| e.into_inner()) =
                    quiet_elsewhere(&progress, now, &parts, &own, quiet_after);
                *stalls.stalled.lock().unwrap_or_else(|e| e.into_inner()) =
                    progress.stalled_elsewhere(now, &parts, &own);
                debug!(?s, "group lag");
                m.group_lag.store(s.group, Ordering::Relaxed);
                m.consumer_lag.store(s.own, Ordering::Relaxed);
                m.stalled_partitions.store(s.stalled, Ordering::Relaxed);
                stalls
                    .elsewhere
                    .store(s.stalled - s.stalled_own, Ordering::Relaxed);
                stalls.here.store(s.stalled_own, Ordering::Relaxed);
                failing = false;
            }
            Err(e) => {
                if !failing {
                    warn!(%e, "cannot read the group's offsets; lag unknown");
                }
                failing = true;
                m.group_lag.store(-1, Ordering::Relaxed);
                m.consumer_lag.store(-1, Ordering::Relaxed);
            }
        }
        let until = Instant::now() + LAG_INTERVAL;
        while Instant::now() < until && !stop() {
            thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(STOP_CHECK),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: i32, committed: Option<i64>, high: i64) -> PartitionOffsets {
        PartitionOffsets {
            partition: p,
            committed,
            low: 0,
            high,
        }
    }

    #[test]
    fn lag_counts_every_partition_and_stalls_need_time_without_commits() {
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        let secs = |n: u64| t0 + Duration::from_secs(n);
        let mut p = Progress::new(s);
        // Partition 1 was never committed: all of it is pending.
        let parts = [at(0, Some(90), 100), at(1, None, 40), at(2, Some(7), 7)];
        let r = p.observe(t0, &parts, &[0]);
        assert_eq!(
            r,
            LagSummary {
                group: 50,
                own: 10,
                stalled: 0,
                stalled_own: 0,
            }
        );
        // Nobody owns anything: lag known, own lag 0, nothing stalled yet.
        let r = p.observe(secs(9), &parts, &[]);
        assert_eq!((r.group, r.own, r.stalled), (50, 0, 0));
        // Ten seconds without a commit: 0 and 1 stall; 2 is caught up.
        let r = p.observe(secs(10), &parts, &[1]);
        assert_eq!((r.stalled, r.stalled_own), (2, 1));
        // Partition 0 commits: it is moving again; more records arrive on 2.
        let parts = [at(0, Some(95), 120), at(1, None, 40), at(2, Some(7), 9)];
        let r = p.observe(secs(11), &parts, &[]);
        assert_eq!((r.group, r.stalled), (25 + 40 + 2, 1));
        // 2 has waited since it was last caught up (at 10 s).
        let r = p.observe(secs(20), &parts, &[]);
        assert_eq!(r.stalled, 2);
        let r = p.observe(secs(21), &parts, &[]);
        assert_eq!(r.stalled, 3);
        // Everything committed: no lag, nothing stalled.
        let done = [
            at(0, Some(120), 120),
            at(1, Some(40), 40),
            at(2, Some(9), 9),
        ];
        let r = p.observe(secs(22), &done, &[0, 1, 2]);
        assert_eq!((r.group, r.own, r.stalled), (0, 0, 0));
    }

    #[test]
    fn quiet_partitions_are_those_of_others_without_commits_for_the_quiet_time() {
        let t0 = Instant::now();
        let secs = |n: u64| t0 + Duration::from_secs(n);
        let mut p = Progress::new(Duration::from_secs(60));
        let parts = [at(0, Some(90), 100), at(1, None, 40), at(2, Some(7), 7)];
        p.observe(t0, &parts, &[]);
        let q = Duration::from_secs(14);
        assert!(quiet_elsewhere(&p, secs(13), &parts, &[], q).is_empty());
        p.observe(secs(14), &parts, &[]);
        // 2 is caught up; 0 is this sink's own.
        assert_eq!(quiet_elsewhere(&p, secs(14), &parts, &[0], q), vec![1]);
        assert_eq!(quiet_elsewhere(&p, secs(14), &parts, &[], q), vec![0, 1]);
    }

    #[test]
    fn stalled_partitions_elsewhere_are_listed_once_the_stall_time_passed() {
        let t0 = Instant::now();
        let secs = |n: u64| t0 + Duration::from_secs(n);
        let mut p = Progress::new(Duration::from_secs(60));
        let parts = [at(0, Some(90), 100), at(1, None, 40), at(2, Some(7), 7)];
        p.observe(t0, &parts, &[]);
        assert!(p.stalled_elsewhere(secs(59), &parts, &[]).is_empty());
        let s = p.observe(secs(60), &parts, &[0]);
        assert_eq!((s.stalled, s.stalled_own), (2, 1));
        // 2 is caught up; 0 is this sink's own: the list is what
        // `elsewhere` counts.
        assert_eq!(p.stalled_elsewhere(secs(60), &parts, &[0]), vec![1]);
    }

    #[test]
    fn records_below_the_low_watermark_are_not_pending() {
        let o = PartitionOffsets {
            partition: 0,
            committed: Some(5),
            low: 50,
            high: 60,
        };
        assert_eq!(o.pending(), 10);
    }
}
