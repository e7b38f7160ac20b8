//! The producer thread and the rings that feed it.
//!
//! ```text
//! shard i ──push──▶ Rings[i] (ArrayQueue, bounded) ──pop──▶ producer thread ──▶ rdkafka
//!    ▲                                                                     │
//!    └──────────── oneshot::Sender (delivery report, on rdkafka's poll thread)
//! ```
//!
//! Invariants:
//! - A ring never holds more than `redpanda.ring_capacity` requests; a full
//!   ring is reported to the shard, which answers 503 (backpressure, bounded
//!   memory).
//! - Every request pushed is completed exactly once: by its delivery report,
//!   or with an error if the producer refuses it. A request dropped without a
//!   report (only at process exit) drops its sender, which the shard sees as an
//!   error, never as success.
//! - A producer whose records the broker keeps refusing is replaced: when
//!   the broker has answered records with errors (not timeouts: a broker
//!   that is down is waited for) and acknowledged none for
//!   [`PRODUCER_RESET_AFTER`], or librdkafka raised a fatal error, the
//!   thread purges the old producer (every record in it gets its failure
//!   report, so its shard answers 503 and the client retries; dedup keeps
//!   retries single) and starts a new one, which gets a new producer id.
//!   The idempotent producer's state can disagree with the broker's for
//!   good (librdkafka's fatal idempotence errors; tansu after a `kill -9`
//!   lost a producer's sequence rows and then failed every one of its
//!   batches), and before this only a restart of the engine recovered.
//! - The producer thread sleeps only when every ring is empty. The sleep
//!   handshake (`sleeping` flag, `SeqCst` on both sides) guarantees a push is
//!   never left unseen: either the pusher sees `sleeping == true` and unparks,
//!   or the thread sees the pushed item before it parks.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use engine_core::config::{Compression, RedpandaConfig};
use futures_channel::oneshot;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientContext;
use tracing::{info, warn};

use crate::metrics::ProducerMetrics;
use crate::{base_config, Error};

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub partition: i32,
    pub offset: i64,
}

/// The outcome of one record, sent back to the shard that produced it.
pub type Delivery = Result<Stored, String>;

/// One record for the broker.
#[derive(Debug)]
pub struct ProduceRequest {
    pub key: [u8; 32],
    pub payload: Vec<u8>,
    /// Completed by the delivery report.
    pub done: oneshot::Sender<Delivery>,
}

/// The rings from the shards to the producer thread, and its wake-up.
#[derive(Debug)]
pub struct Rings {
    rings: Vec<ArrayQueue<ProduceRequest>>,
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Rings {
    /// One ring of `capacity` requests per shard.
    pub fn new(shards: usize, capacity: usize) -> Self {
        Self {
            rings: (0..shards).map(|_| ArrayQueue::new(capacity)).collect(),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Queues a request from `shard`; gives it back when the ring is full.
    pub fn push(&self, shard: usize, req: ProduceRequest) -> Result<(), ProduceRequest> {
        self.rings[shard].push(req)?;
        // Pairs with the fence in `park_if_idle`: either we see `sleeping` or
        // the producer sees our item.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Ok(())
    }

    /// Requests queued by `shard`.
    pub fn depth(&self, shard: usize) -> usize {
        self.rings[shard].len()
    }

    /// Number of rings (one per shard).
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether there is no ring at all.
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Capacity of each ring.
    pub fn capacity(&self) -> usize {
        self.rings.first().map_or(0, ArrayQueue::capacity)
    }

    /// Whether any ring is more than 90% full.
    pub fn saturated(&self) -> bool {
        self.rings.iter().any(|r| r.len() * 10 >= r.capacity() * 9)
    }

    fn all_empty(&self) -> bool {
        self.rings.iter().all(ArrayQueue::is_empty)
    }

    fn park_if_idle(&self, timeout: Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.all_empty() {
            thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// The per-record state carried through librdkafka to the delivery report.
struct Pending {
    done: oneshot::Sender<Delivery>,
    bytes: usize,
}

/// A broker that refuses every record for this long gets a new producer.
pub const PRODUCER_RESET_AFTER: Duration = Duration::from_secs(10);
/// Least time between two producer resets.
const PRODUCER_RESET_INTERVAL: Duration = Duration::from_secs(20);

/// What the delivery reports say about the broker, for the reset decision.
#[derive(Debug)]
struct Refusals {
    epoch: Instant,
    /// Milliseconds since `epoch` of the first refusal after the last
    /// acknowledgement; 0 while none.
    since_ms: AtomicU64,
    /// librdkafka raised a fatal error: this producer can produce no more.
    fatal: AtomicBool,
}

impl Refusals {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
            fatal: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn acknowledged(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    fn refused(&self) {
        let now = self.now_ms();
        let _ = self
            .since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the producer should be replaced now.
    fn due(&self) -> bool {
        if self.fatal.load(Ordering::Relaxed) {
            return true;
        }
        let since = self.since_ms.load(Ordering::Relaxed);
        since != 0 && self.now_ms().saturating_sub(since) >= PRODUCER_RESET_AFTER.as_millis() as u64
    }

    fn reset(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
        self.fatal.store(false, Ordering::Relaxed);
    }
}

/// Errors that say the broker is away (wait for it), not that it refused.
fn broker_away(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
        )
    )
}

struct Context {
    metrics: Arc<ProducerMetrics>,
    refusals: Arc<Refusals>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.metrics.broker.set(false),
            Some(RDKafkaErrorCode::Fatal) => self.refusals.fatal.store(true, Ordering::Relaxed),
            _ => {}
        }
        warn!(%error, reason, "broker client error");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let p = &self.metrics;
        p.inflight_records.fetch_sub(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(m) => {
                p.records_produced.fetch_add(1, Ordering::Relaxed);
                p.bytes_produced
                    .fetch_add(pending.bytes as u64, Ordering::Relaxed);
                p.broker.set(true);
                self.refusals.acknowledged();
                Ok(Stored {
                    partition: m.partition(),
                    offset: m.offset(),
                })
            }
            Err((e, _)) => {
                p.records_failed.fetch_add(1, Ordering::Relaxed);
                if !broker_away(e.rdkafka_error_code()) {
                    self.refusals.refused();
                }
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::AllBrokersDown)
                ) {
                    p.broker.set(false);
                }
                Err(e.to_string())
            }
        };
        // The shard may have given up (deadline passed); nothing to do then.
        let _ = pending.done.send(outcome);
    }
}

/// A running producer thread.
#[derive(Debug)]
pub struct ProducerHandle {
    pub rings: Arc<Rings>,
    /// Its metrics (a [`telemetry::Collector`]), in-flight count and broker
    /// health.
    pub metrics: Arc<ProducerMetrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProducerHandle {
    /// Stops taking new records, waits up to `timeout` for in-flight ones to be
    /// acknowledged, and joins the thread.
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.rings.thread.get() {
            t.unpark();
        }
        if let Some(handle) = self.thread.take() {
            let deadline = Instant::now() + timeout;
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                warn!("producer did not drain before the shutdown deadline");
            }
        }
    }
}

/// librdkafka settings of the producer (exposed for `check-config` and tests).
pub fn producer_config(cfg: &RedpandaConfig, message_timeout: Duration) -> rdkafka::ClientConfig {
    let message_timeout_ms = message_timeout.as_millis().min(u128::from(u64::MAX)) as u64;
    let mut c = base_config(cfg);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.codec", codec(cfg.compression))
        .set("linger.ms", cfg.linger_ms.as_millis().to_string())
        .set("batch.num.messages", cfg.batch_size.to_string())
        .set("batch.size", cfg.batch_bytes.to_string())
        .set(
            "queue.buffering.max.kbytes",
            cfg.queue_max_kbytes.to_string(),
        )
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set(
            "request.timeout.ms",
            message_timeout_ms.clamp(1000, 30_000).to_string(),
        );
    c
}

/// librdkafka's `compression.codec` value.
fn codec(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Starts the producer thread for `shards` shards. `message_timeout` bounds
/// how long librdkafka keeps retrying a record (the HTTP request deadline).
pub fn start(
    cfg: &RedpandaConfig,
    shards: usize,
    message_timeout: Duration,
) -> Result<ProducerHandle, Error> {
    let rings = Arc::new(Rings::new(shards, cfg.ring_capacity));
    let metrics = Arc::new(ProducerMetrics::new(rings.clone()));
    let refusals = Arc::new(Refusals::new());
    let client = producer_config(cfg, message_timeout);
    let make = {
        let (metrics, refusals) = (metrics.clone(), refusals.clone());
        move || -> Result<ThreadedProducer<Context>, Error> {
            Ok(client.create_with_context(Context {
                metrics: metrics.clone(),
                refusals: refusals.clone(),
            })?)
        }
    };
    let producer = make()?;
    let stop = Arc::new(AtomicBool::new(false));
    let topic = cfg.topic.clone();
    let thread = {
        let rings = rings.clone();
        let (stop, metrics) = (stop.clone(), metrics.clone());
        thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                let io = ProducerIo {
                    topic: &topic,
                    rings: &rings,
                    stop: &stop,
                    metrics: &metrics,
                    refusals: &refusals,
                };
                run(producer, &make, &io)
            })
            .map_err(Error::Thread)?
    };
    let _ = rings.thread.set(thread.thread().clone());
    info!(brokers = %cfg.brokers, topic = %cfg.topic, "producer started");
    Ok(ProducerHandle {
        rings,
        metrics,
        stop,
        thread: Some(thread),
    })
}

/// What the producer thread works with besides its producer.
struct ProducerIo<'a> {
    topic: &'a str,
    rings: &'a Rings,
    stop: &'a AtomicBool,
    metrics: &'a ProducerMetrics,
    refusals: &'a Refusals,
}

fn run(
    mut producer: ThreadedProducer<Context>,
    make: &dyn Fn() -> Result<ThreadedProducer<Context>, Error>,
    io: &ProducerIo<'_>,
) {
    let ProducerIo {
        topic,
        rings,
        stop,
        metrics,
        refusals,
    } = *io;
    // Learn the topic's partitions now, so the first batch does not wait for it.
    if let Err(e) = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(2))
    {
        warn!(%e, "no topic metadata yet; the first records will fetch it");
    }
    let mut last_reset: Option<Instant> = None;
    loop {
        let mut sent = 0usize;
        for ring in &rings.rings {
            while let Some(req) = ring.pop() {
                send(&producer, topic, req, metrics);
                sent += 1;
            }
        }
        if stop.load(Ordering::SeqCst) && rings.all_empty() {
            break;
        }
        // librdkafka's own fatal state, too: a fatal producer fails every
        // send at once, so no delivery report would tell.
        let fatal = producer.client().fatal_error();
        if (refusals.due() || fatal.is_some())
            && last_reset.is_none_or(|t| t.elapsed() >= PRODUCER_RESET_INTERVAL)
        {
            last_reset = Some(Instant::now());
            // Cleared before the new producer exists, so what it reports
            // counts for it; kept when no new one could be made.
            match make() {
                Ok(fresh) => {
                    refusals.reset();
                    warn!(
                        inflight = producer.in_flight_count(),
                        fatal = ?fatal,
                        "the broker refused every record for {PRODUCER_RESET_AFTER:?}, or the \
                         producer failed for good: replacing it (a new producer id); its \
                         records fail and are retried"
                    );
                    let old = std::mem::replace(&mut producer, fresh);
                    // Off this thread: a purge waits for the old broker
                    // threads (a DNS lookup may hold one), and the rings
                    // must keep moving meanwhile.
                    let spawned = thread::Builder::new()
                        .name("producer-retire".into())
                        .spawn(move || retire(old));
                    if let Err(e) = spawned {
                        warn!(%e, "no thread to retire the old producer on; it is dropped as it is");
                    }
                    metrics.producer_resets.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => warn!(%e, "could not make a new producer; keeping the old one"),
            }
        }
        if sent == 0 {
            rings.park_if_idle(Duration::from_millis(100));
        }
    }
    let inflight = producer.in_flight_count();
    if inflight > 0 {
        info!(inflight, "flushing producer");
    }
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        warn!(%e, "producer flush incomplete");
    }
}

/// Ends a replaced producer: every record it holds gets its failure report
/// (purged), so each shard answers its request and nothing is left waiting.
fn retire(old: ThreadedProducer<Context>) {
    old.purge(PurgeConfig::default().queue().inflight());
    // The purge reports come through the poll thread; give them a moment.
    let _ = old.flush(Duration::from_secs(1));
    drop(old);
}

fn send(
    producer: &ThreadedProducer<Context>,
    topic: &str,
    req: ProduceRequest,
    metrics: &ProducerMetrics,
) {
    let ProduceRequest { key, payload, done } = req;
    let mut pending = Box::new(Pending {
        done,
        bytes: payload.len(),
    });
    metrics.inflight_records.fetch_add(1, Ordering::Relaxed);
    loop {
        let record = BaseRecord::with_opaque_to(topic, pending)
            .key(&key[..])
            .payload(&payload[..]);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                // librdkafka's queue is full: the broker is slow. Wait for room;
                // meanwhile the rings fill and shards answer 503.
                pending = rec.delivery_opaque;
                thread::sleep(Duration::from_millis(1));
            }
            Err((e, rec)) => {
                metrics.inflight_records.fetch_sub(1, Ordering::Relaxed);
                metrics.records_failed.fetch_add(1, Ordering::Relaxed);
                let _ = rec.delivery_opaque.done.send(Err(e.to_string()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod reset_tests {
    use super::*;

    #[test]
    fn a_producer_is_replaced_only_after_refusals_without_an_acknowledgement() {
        // An epoch a minute back, so "10 s ago" is a time on its clock.
        let r = Refusals {
            epoch: Instant::now() - Duration::from_secs(60),
            ..Refusals::new()
        };
        assert!(!r.due());
        r.refused();
        assert!(!r.due(), "at once");
        let after = PRODUCER_RESET_AFTER.as_millis() as u64;
        r.since_ms
            .store(r.now_ms() - after + 500, Ordering::Relaxed);
        assert!(!r.due(), "before PRODUCER_RESET_AFTER");
        r.since_ms.store(r.now_ms() - after, Ordering::Relaxed);
        assert!(r.due(), "after PRODUCER_RESET_AFTER");
        r.acknowledged();
        assert!(!r.due(), "an acknowledgement clears the refusals");
        r.fatal.store(true, Ordering::Relaxed);
        assert!(r.due(), "a fatal error replaces it at once");
        r.reset();
        assert!(!r.due());
        // A broker that is away (timeouts, transport) is waited for.
        assert!(broker_away(Some(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!broker_away(Some(RDKafkaErrorCode::Unknown)));
    }
}
