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

use clickhouse_client::schema::migrate;
use clickhouse_client::Client;
use engine_core::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use telemetry::Metrics;
use tracing::{info, warn};

use crate::{dlq, Error};

mod batch;
mod consumer;
mod insert;
mod rebalance;

use batch::Batch;
use consumer::{consume, Sink};
use insert::Inserter;
use rebalance::{Context, Inflight};

/// First wait between retries; doubles up to `sink.retry_backoff_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How often librdkafka reports consumer statistics (consumer lag).
const STATS_INTERVAL_MS: &str = "1000";

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
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
fn retention_loop(cfg: &Config, stop: &AtomicBool, metrics: &Metrics) {
    let every = Duration::from_secs(cfg.sink.retention_interval_secs);
    let ch = Client::new(
        &cfg.clickhouse.url,
        Duration::from_millis(cfg.sink.clickhouse_timeout_ms),
    );
    let m = &metrics.sink;
    loop {
        let deadline = Instant::now() + every;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::park_timeout(deadline - Instant::now());
        }
        let today = time::OffsetDateTime::now_utc().date();
        m.retention_runs.fetch_add(1, Ordering::Relaxed);
        match crate::retention::run_once(&ch, &cfg.clickhouse.database, today) {
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
/// into `metrics.sink`.
pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<SinkHandle, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    metrics.sink.running.store(true, Ordering::Relaxed);
    if config.sink.retention_interval_secs > 0 {
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
    Ok(SinkHandle { stop, threads })
}

pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Retries `f` with exponential backoff until it succeeds or `stop` is set.
pub(super) fn with_backoff<T>(
    what: &str,
    max: Duration,
    stop: &AtomicBool,
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
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        thread::sleep(wait);
        wait = (wait * 2).min(max);
        attempt += 1;
    }
}

fn run(cfg: &Config, stop: &AtomicBool, metrics: Arc<Metrics>) -> Result<(), Error> {
    let k = &cfg.sink;
    let backoff_max = Duration::from_millis(k.retry_backoff_max_ms.max(100));
    let timeout = Duration::from_millis(k.clickhouse_timeout_ms);
    let ch = Client::new(&cfg.clickhouse.url, timeout);
    let db = &cfg.clickhouse.database;
    let what = if k.migrate_on_start {
        "ClickHouse migration"
    } else {
        "ClickHouse connection"
    };
    let reached = with_backoff(what, backoff_max, stop, |_| {
        let r = if k.migrate_on_start {
            migrate(&ch, db).map(drop)
        } else {
            ch.version().map(drop)
        };
        let sink = &metrics.sink;
        sink.clickhouse_up.store(r.is_ok(), Ordering::Release);
        Ok(r?)
    });
    if reached.is_none() {
        return Ok(());
    }
    // The events topic too: a sink started before any edge would otherwise
    // subscribe to nothing until librdkafka's next metadata refresh.
    for topic in [&cfg.redpanda.topic, &k.dlq_topic] {
        if with_backoff("topic creation", backoff_max, stop, |_| {
            Ok(redpanda::admin::ensure_topic(
                &cfg.redpanda,
                topic,
                Duration::from_secs(10),
            )?)
        })
        .is_none()
        {
            return Ok(());
        }
    }
    let inflight = Arc::new(Inflight::default());
    let consumer: BaseConsumer<Context> = redpanda::base_config(&cfg.redpanda)
        .set("group.id", &k.consumer_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        // While ClickHouse is down the sink stops polling; stay in the group.
        .set("max.poll.interval.ms", "86400000")
        .create_with_context(Context {
            rebalanced: AtomicBool::new(false),
            inflight: inflight.clone(),
            metrics: metrics.clone(),
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
    let table = format!("{db}.events");
    let mut sink = Sink::new(
        cfg,
        ch,
        table.clone(),
        tenants,
        backoff_max,
        metrics.clone(),
    );
    let mut inserter = Inserter::new(
        Client::new(&cfg.clickhouse.url, timeout),
        table,
        &cfg.redpanda.topic,
        backoff_max,
        metrics,
    );
    // Rendezvous: one batch is inserted while the next one fills; the
    // consumer blocks at hand-off until the inserter is free.
    let (to_inserter, batches) = sync_channel::<Batch>(0);
    let (spare_tx, spare) = sync_channel::<Batch>(1);
    info!(topic = %cfg.redpanda.topic, group = %k.consumer_group, "sink consuming");
    thread::scope(|scope| {
        let consumer = &consumer;
        let inflight_ref = &*inflight;
        thread::Builder::new()
            .name("sink-insert".into())
            .spawn_scoped(scope, move || {
                inserter.run(batches, spare_tx, consumer, inflight_ref, stop)
            })
            .map_err(Error::Thread)?;
        let result = consume(
            &mut sink,
            consumer,
            &dlq,
            &to_inserter,
            &spare,
            &inflight,
            stop,
        );
        if result {
            sink.hand_off(&to_inserter, &spare, &inflight);
        }
        // Closing the channel ends the inserter once it has drained.
        drop(to_inserter);
        Ok(())
    })
}
