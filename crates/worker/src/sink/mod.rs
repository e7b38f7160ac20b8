//! The sink: consume, batch, insert, commit.
//!
//! `consumer` resumes partitions from ClickHouse, decodes, dedups and fills a
//! [`batch::Batch`]; `insert` lands it and commits its offsets; `rebalance`
//! holds the group callbacks. This module wires them on their threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse_client::schema::migrate_configured;
use clickhouse_client::Client;
use engine_core::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{info, warn};

use crate::{dlq, Error};

mod agent;
mod batch;
mod calendar;
mod consumer;
mod insert;
mod lag;
mod land;
pub mod metrics;
mod rebalance;

use batch::Batch;
use consumer::{consume, Sink, ToInserter};
use insert::Inserter;
use land::{Lander, Stages};
use metrics::SinkMetrics;
use rebalance::{Context, Inflight, PollWaker};

/// First wait between retries; doubles up to `sink.retry_backoff_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How often a backoff wait looks whether to give up.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// The group's session timeout unless `redpanda.librdkafka` sets one: how
/// long the coordinator keeps a dead member (`kill -9`) and its partitions.
/// librdkafka heartbeats from its own thread, so a busy sink never misses it.
const SESSION_TIMEOUT_MS: u64 = 10_000;
/// The least `max.poll.interval.ms` (librdkafka's default, and the rebalance
/// timeout the sink sends in JoinGroup) unless `redpanda.librdkafka` sets it.
const MAX_POLL_INTERVAL_MS: u64 = 300_000;
/// Kept free below `max.poll.interval.ms` when a rebalance waits for the batch
/// in flight: for its last attempt to end and the member to rejoin.
const REBALANCE_MARGIN: Duration = Duration::from_secs(10);
/// Past the session timeout before an idle sink rejoins for partitions
/// nobody writes: two looks of the lag monitor and a heartbeat.
const QUIET_MARGIN: Duration = Duration::from_secs(6);
/// Least time without a commit before a partition with lag counts as stalled.
const STALL_AFTER_MIN: Duration = Duration::from_secs(10);

/// Timeouts of the sink's group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GroupTimes {
    pub(super) session_timeout: Duration,
    pub(super) max_poll_interval: Duration,
    /// How long a rebalance waits for the batch in flight before dropping it.
    pub(super) rebalance_wait: Duration,
    /// No commit for this long, with records waiting: the partition stalled.
    pub(super) stall_after: Duration,
    /// A sink that owns nothing rejoins after partitions that nobody writes
    /// (no query on their staging tables) waited this long without a
    /// commit: a dead member's session has expired by then.
    pub(super) quiet_after: Duration,
}

impl GroupTimes {
    fn new(cfg: &Config) -> Self {
        let k = &cfg.sink;
        let ms = |key: &str, default: u64| {
            let v = cfg
                .redpanda
                .librdkafka
                .get(key)
                .and_then(|v| v.parse().ok());
            Duration::from_millis(v.unwrap_or(default))
        };
        let ch_timeout = k.clickhouse_timeout_ms;
        // A healthy partition commits once per batch: its age plus one insert.
        let batch = k.batch_max_age_ms + ch_timeout;
        let max_poll_interval = ms(
            "max.poll.interval.ms",
            MAX_POLL_INTERVAL_MS.max((2 * ch_timeout + REBALANCE_MARGIN).as_millis() as u64),
        );
        let session_timeout = ms("session.timeout.ms", SESSION_TIMEOUT_MS);
        let stall_after = (2 * batch).max(STALL_AFTER_MIN);
        Self {
            session_timeout,
            max_poll_interval,
            rebalance_wait: max_poll_interval.saturating_sub(ch_timeout + REBALANCE_MARGIN),
            stall_after,
            quiet_after: (session_timeout + QUIET_MARGIN).min(stall_after.max(session_timeout)),
        }
    }
}

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
    /// Its metrics (a [`telemetry::Collector`]) and health (a
    /// [`telemetry::HealthCheck`]).
    pub metrics: Arc<SinkMetrics>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SinkHandle {
    /// Flushes the current batch and stops.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Runs the retention job every `sink.retention_interval_secs`.
fn retention_loop(cfg: &Config, stop: &AtomicBool, metrics: &SinkMetrics) {
    let every = cfg.sink.retention_interval_secs;
    let ch = Client::from_config(&cfg.clickhouse, cfg.sink.clickhouse_timeout_ms);
    let m = metrics;
    loop {
        let deadline = Instant::now() + every;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::park_timeout(deadline - Instant::now());
        }
        m.retention_runs.fetch_add(1, Ordering::Relaxed);
        let run = crate::retention::today(&ch).and_then(|today| {
            crate::retention::run_once_on(
                &ch,
                &cfg.clickhouse.database,
                cfg.clickhouse.cluster_name(),
                today,
            )
        });
        match run {
            Ok(r) => {
                m.retention_partitions_dropped
                    .fetch_add(r.dropped.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                m.retention_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%e, "retention run failed; next run retries");
            }
        }
    }
}

/// Starts the sink (and its retention job) on their own threads; it reports
/// into [`SinkHandle::metrics`].
pub fn start(config: Config) -> Result<SinkHandle, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let metrics = Arc::new(SinkMetrics::default());
    let handle_metrics = metrics.clone();
    if !config.sink.retention_interval_secs.is_zero() {
        let (stop, config, metrics) = (stop.clone(), config.clone(), metrics.clone());
        threads.push(
            thread::Builder::new()
                .name("retention".into())
                .spawn(move || retention_loop(&config, &stop, &metrics))
                .map_err(Error::Thread)?,
        );
    }
    let stop_sink = stop.clone();
    threads.push(
        thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                if let Err(e) = run(&config, &stop_sink, metrics) {
                    warn!(%e, "sink stopped with an error");
                }
            })
            .map_err(Error::Thread)?,
    );
    Ok(SinkHandle {
        metrics: handle_metrics,
        stop,
        threads,
    })
}

/// How many shards (and so inserters) the sink writes: the configured
/// cluster's, or one server.
fn sink_shards(cfg: &Config) -> usize {
    if cfg.clickhouse.is_cluster() {
        cfg.clickhouse.shards.len().max(1)
    } else {
        1
    }
}

pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Retries `f` with exponential backoff until it succeeds or `stop()` says
/// to give up (checked between attempts and while waiting).
pub(super) fn with_backoff<T>(
    what: &str,
    max: Duration,
    stop: impl Fn() -> bool,
    mut f: impl FnMut(u32) -> Result<T, Error>,
) -> Option<T> {
    let mut wait = BACKOFF_START;
    let mut attempt = 0;
    loop {
        match f(attempt) {
            Ok(v) => return Some(v),
            Err(e) => {
                if attempt == 0 || attempt % 10 == 0 {
                    warn!(%e, attempt, "{what} failed; retrying");
                }
            }
        }
        let until = Instant::now() + wait;
        loop {
            if stop() {
                return None;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(STOP_CHECK));
        }
        wait = (wait * 2).min(max);
        attempt += 1;
    }
}

fn run(cfg: &Config, stop: &AtomicBool, metrics: Arc<SinkMetrics>) -> Result<(), Error> {
    let k = &cfg.sink;
    let backoff_max = k.retry_backoff_max_ms.max(Duration::from_millis(100));
    let timeout = k.clickhouse_timeout_ms;
    let ch = Client::from_config(&cfg.clickhouse, timeout);
    let what = if k.migrate_on_start {
        "ClickHouse migration"
    } else {
        "ClickHouse connection"
    };
    let mut server = None;
    let reached = with_backoff(
        what,
        backoff_max,
        || stop.load(Ordering::SeqCst),
        |_| {
            let sink = &*metrics;
            let r = if k.migrate_on_start {
                sink.migrating.store(true, Ordering::Release);
                let r = migrate_configured(&ch, &cfg.clickhouse, &|| stop.load(Ordering::SeqCst))
                    .map(|r| r.server);
                sink.migrating.store(false, Ordering::Release);
                r
            } else {
                ch.version()
            };
            if let Ok(v) = &r {
                server = Some(*v);
            }
            let r = r.map(drop);
            sink.clickhouse_up.store(r.is_ok(), Ordering::Release);
            Ok(r?)
        },
    );
    let (Some(()), Some(server)) = (reached, server) else {
        return Ok(());
    };
    // The events topic too: a sink started before any edge would otherwise
    // subscribe to nothing until librdkafka's next metadata refresh.
    for topic in [&cfg.redpanda.topic, &k.dlq_topic] {
        if with_backoff(
            "topic creation",
            backoff_max,
            || stop.load(Ordering::SeqCst),
            |_| {
                Ok(redpanda::admin::ensure_topic(
                    &cfg.redpanda,
                    topic,
                    Duration::from_secs(10),
                )?)
            },
        )
        .is_none()
        {
            return Ok(());
        }
    }
    let inflight = Arc::new(Inflight::default());
    let times = GroupTimes::new(cfg);
    let consumer: BaseConsumer<Context> = redpanda::base_config(&cfg.redpanda)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "fetch.wait.max.ms",
            k.fetch_wait_max_ms.as_millis().to_string(),
        )
        .set(
            "session.timeout.ms",
            times.session_timeout.as_millis().to_string(),
        )
        // The sink polls on while ClickHouse is down (partitions paused), so
        // the group's rebalance timeout stays sane.
        .set(
            "max.poll.interval.ms",
            times.max_poll_interval.as_millis().to_string(),
        )
        .create_with_context(Context {
            rebalanced: AtomicBool::new(false),
            inflight: inflight.clone(),
            metrics: metrics.clone(),
            rebalance_wait: times.rebalance_wait,
        })?;
    consumer.subscribe(&[&cfg.redpanda.topic])?;
    let dlq = dlq::producer(cfg)?;
    let tenants = cfg
        .tenants()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t.id,
                (t.tier, u16::try_from(t.retention_days).unwrap_or(u16::MAX)),
            )
        })
        .collect();
    let stages = Arc::new(Stages::default());
    // Each thread its own clients: one per replica of every shard.
    let lander = || {
        Lander::new(
            &cfg.clickhouse,
            timeout,
            &cfg.redpanda.topic,
            server,
            stages.clone(),
            metrics.clone(),
            k.batch_max_rows,
        )
    };
    let mut sink = Sink::new(cfg, ch, lander(), tenants, backoff_max, metrics.clone());
    // One inserter per shard, so that a shard that cannot be written holds
    // only its own partitions. Rendezvous: one batch of a shard is inserted
    // while its next one fills; while its inserter is busy, a closed batch
    // waits with that shard's partitions paused.
    let shards = sink_shards(cfg);
    let mut inserters = Vec::with_capacity(shards);
    let mut to_inserter = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = sync_channel::<Batch>(0);
        to_inserter.push(tx);
        inserters.push((
            Inserter::new(lander(), &cfg.redpanda.topic, backoff_max, metrics.clone()),
            rx,
        ));
    }
    let (spare_tx, spare) = sync_channel::<Batch>(shards);
    let stalls = lag::Stalls::default();
    // The lag monitor ends with the consumer loop, whatever ends it.
    let consuming = AtomicBool::new(true);
    let waker = PollWaker::new();
    info!(
        topic = %cfg.redpanda.topic,
        group = %k.consumer_group,
        ?times,
        "sink consuming"
    );
    thread::scope(|scope| {
        let consumer = &consumer;
        let inflight_ref = &*inflight;
        for (i, (mut inserter, batches)) in inserters.into_iter().enumerate() {
            let spare_tx = spare_tx.clone();
            thread::Builder::new()
                .name(format!("sink-insert-{}", i + 1))
                .spawn_scoped(scope, move || {
                    inserter.run(batches, spare_tx, consumer, inflight_ref, stop)
                })
                .map_err(Error::Thread)?;
        }
        drop(spare_tx);
        let consuming = &consuming;
        let (topic, lag_metrics, stalls) = (&cfg.redpanda.topic, &*metrics, &stalls);
        thread::Builder::new()
            .name("sink-lag".into())
            .spawn_scoped(scope, move || {
                let done = || stop.load(Ordering::SeqCst) || !consuming.load(Ordering::SeqCst);
                lag::monitor(
                    consumer,
                    topic,
                    times.stall_after,
                    times.quiet_after,
                    stalls,
                    lag_metrics,
                    done,
                )
            })
            .map_err(Error::Thread)?;
        let waker = &waker;
        thread::Builder::new()
            .name("sink-poll-waker".into())
            .spawn_scoped(scope, move || {
                waker.run(consumer, || {
                    stop.load(Ordering::SeqCst) || !consuming.load(Ordering::SeqCst)
                })
            })
            .map_err(Error::Thread)?;
        let to = ToInserter {
            batches: &to_inserter,
            spare: &spare,
            inflight: &inflight,
            stages: &stages,
            waker,
        };
        consume(&mut sink, consumer, &dlq, to, times, stalls, stop);
        consuming.store(false, Ordering::SeqCst);
        // Closing the channels ends the inserters once they have drained.
        drop(to_inserter);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_times_follow_the_config_and_keep_the_rebalance_wait_inside_the_poll_interval() {
        let mut cfg = Config::default();
        let t = GroupTimes::new(&cfg);
        assert_eq!(t.session_timeout, Duration::from_secs(10));
        assert_eq!(t.max_poll_interval, Duration::from_secs(300));
        // 300 s − 30 s (one ClickHouse attempt) − 10 s margin.
        assert_eq!(t.rebalance_wait, Duration::from_secs(260));
        // 2 × (1 s batch age + 30 s insert).
        assert_eq!(t.stall_after, Duration::from_secs(62));
        // 10 s session + 6 s: well under a minute after a kill -9.
        assert_eq!(t.quiet_after, Duration::from_secs(16));
        cfg.sink.clickhouse_timeout_ms = Duration::from_secs(200);
        cfg.sink.batch_max_age_ms = Duration::from_millis(200);
        let t = GroupTimes::new(&cfg);
        assert_eq!(t.max_poll_interval, Duration::from_secs(410));
        assert_eq!(t.rebalance_wait, Duration::from_secs(200));
        cfg.sink.clickhouse_timeout_ms = Duration::from_secs(1);
        cfg.redpanda
            .librdkafka
            .insert("session.timeout.ms".into(), "45000".into());
        cfg.redpanda
            .librdkafka
            .insert("max.poll.interval.ms".into(), "60000".into());
        let t = GroupTimes::new(&cfg);
        assert_eq!(t.session_timeout, Duration::from_secs(45));
        assert_eq!(t.max_poll_interval, Duration::from_secs(60));
        assert_eq!(t.rebalance_wait, Duration::from_secs(49));
        assert_eq!(t.stall_after, STALL_AFTER_MIN);
    }
}
