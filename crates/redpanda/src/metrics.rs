//! The producer's metrics, declared here once and rendered by telemetry
//! through [`Collector`], and the broker's health as a handle
//! ([`BrokerHealth`]) that readiness asks instead of reading a metric.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use telemetry::{Collector, Exposition};

use crate::producer::Rings;

/// Whether the broker answers: set by the health probe and by the
/// producer's delivery reports, read by readiness and `/health`.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<AtomicBool>);

impl BrokerHealth {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// Producer counters and the records still waiting for the broker.
#[derive(Debug)]
pub struct ProducerMetrics {
    pub(crate) records_produced: AtomicU64,
    pub(crate) records_failed: AtomicU64,
    pub(crate) bytes_produced: AtomicU64,
    pub(crate) broker_errors: AtomicU64,
    /// Producers replaced because the broker refused every record for a while.
    pub(crate) producer_resets: AtomicU64,
    /// Records handed to librdkafka and not yet reported.
    pub(crate) inflight_records: AtomicI64,
    pub(crate) broker: BrokerHealth,
    /// The shards' rings: their depth is read live.
    rings: Arc<Rings>,
}

impl ProducerMetrics {
    pub(crate) fn new(rings: Arc<Rings>) -> Self {
        Self {
            records_produced: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            bytes_produced: AtomicU64::new(0),
            broker_errors: AtomicU64::new(0),
            producer_resets: AtomicU64::new(0),
            inflight_records: AtomicI64::new(0),
            broker: BrokerHealth::default(),
            rings,
        }
    }

    /// Records sent to the broker and not yet acknowledged or failed.
    pub fn inflight(&self) -> i64 {
        self.inflight_records.load(Ordering::Relaxed)
    }

    /// The broker's health, as this producer and its probe see it.
    pub fn broker(&self) -> &BrokerHealth {
        &self.broker
    }
}

impl Collector for ProducerMetrics {
    fn part(&self) -> &'static str {
        "producer"
    }

    fn collect(&self, out: &mut Exposition<'_>) {
        let rings = &self.rings;
        let depths: Vec<(String, i64)> = (0..rings.len())
            .map(|i| (i.to_string(), rings.depth(i) as i64))
            .collect();
        out.labeled_gauge(
            "ingest_ring_depth",
            "Records queued from a shard to the producer.",
            "shard",
            &depths,
        );
        out.gauge(
            "ingest_ring_capacity",
            "Ring capacity per shard.",
            rings.capacity() as i64,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, v) in [
            (
                "broker_records_produced_total",
                "Records acknowledged by the broker.",
                &self.records_produced,
            ),
            (
                "broker_records_failed_total",
                "Records the broker did not acknowledge.",
                &self.records_failed,
            ),
            (
                "broker_bytes_produced_total",
                "Record bytes acknowledged.",
                &self.bytes_produced,
            ),
            (
                "broker_errors_total",
                "Client-level broker errors.",
                &self.broker_errors,
            ),
            (
                "broker_producer_resets_total",
                "Producers replaced by a new one (a new producer id): the broker refused every record for PRODUCER_RESET_AFTER, or librdkafka raised a fatal error.",
                &self.producer_resets,
            ),
        ] {
            out.counter(name, help, load(v));
        }
        out.gauge(
            "broker_up",
            "1 when the broker answers.",
            i64::from(self.broker.is_up()),
        );
        out.gauge(
            "broker_inflight_records",
            "Records sent, not yet acknowledged.",
            self.inflight(),
        );
    }
}
