//! Topic administration and the broker health probe.
//!
//! The probe runs on its own thread with its own admin client, so a slow
//! metadata request never stalls the producer. It asks for the events topic's
//! metadata every `redpanda.health_interval_ms`; success marks the broker up
//! (and `/health/ready` true), failure marks it down. If the topic is missing —
//! first start, or a broker that lost its data — it creates it, so the engine
//! recovers without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use engine_core::config::RedpandaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::metrics::BrokerHealth;
use crate::{base_config, Error};

type Admin = AdminClient<DefaultClientContext>;

fn admin(cfg: &RedpandaConfig) -> Result<Admin, Error> {
    Ok(base_config(cfg).create()?)
}

/// Whether the topic exists with at least one partition.
fn topic_exists(admin: &Admin, topic: &str, timeout: Duration) -> Result<bool, Error> {
    let md = admin.inner().fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

fn create_topic(admin: &Admin, cfg: &RedpandaConfig, timeout: Duration) -> Result<(), Error> {
    let topic = NewTopic::new(
        &cfg.topic,
        cfg.partitions,
        TopicReplication::Fixed(cfg.replication_factor),
    );
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics([&topic], &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Topic {
                    topic: name,
                    message: code.to_string(),
                })
            }
        }
    }
    info!(topic = %cfg.topic, partitions = cfg.partitions, "topic created");
    Ok(())
}

/// Creates topic `topic` (partitions and replication from `cfg`) when missing.
pub fn ensure_topic(cfg: &RedpandaConfig, topic: &str, timeout: Duration) -> Result<(), Error> {
    let admin = admin(cfg)?;
    if !topic_exists(&admin, topic, timeout)? {
        let cfg = RedpandaConfig {
            topic: topic.to_string(),
            ..cfg.clone()
        };
        create_topic(&admin, &cfg, timeout)?;
    }
    Ok(())
}

/// The running health probe.
#[derive(Debug)]
pub struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthProbe {
    /// Stops the probe thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Consecutive failed probes before the broker counts as down. One probe
/// that timed out says little on a saturated machine (the abuse test saw a
/// 1 s metadata request time out while its engine answered 387,000
/// pipelined requests on 2 cores, and every ingest was refused with 503
/// `broker_unavailable` for a probe period); librdkafka's own report that
/// every broker connection is down (`AllBrokersDown`, in the producer)
/// still counts at once.
pub const BROKER_DOWN_AFTER_PROBES: u32 = 3;

/// Folds probe results into the broker's health: up at the first success,
/// down after [`BROKER_DOWN_AFTER_PROBES`] failures in a row.
#[derive(Debug, Default)]
struct ProbeRun {
    failures: u32,
}

impl ProbeRun {
    /// Whether the broker counts as up after a probe that succeeded (`ok`)
    /// or failed; `was_up` is what it counted as before.
    fn observe(&mut self, ok: bool, was_up: bool) -> bool {
        if ok {
            self.failures = 0;
            return true;
        }
        self.failures = self.failures.saturating_add(1);
        was_up && self.failures < BROKER_DOWN_AFTER_PROBES
    }
}

/// Starts probing the broker; results land in `up`.
pub fn start_health_probe(cfg: &RedpandaConfig, up: BrokerHealth) -> Result<HealthProbe, Error> {
    let admin = admin(cfg)?;
    let cfg = cfg.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let interval = cfg.health_interval_ms.max(Duration::from_millis(50));
    let timeout = interval.max(Duration::from_secs(1));
    let thread = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("broker-health".into())
            .spawn(move || {
                let mut run = ProbeRun::default();
                while !stop.load(Ordering::Relaxed) {
                    let ok = match topic_exists(&admin, &cfg.topic, timeout) {
                        Ok(true) => true,
                        Ok(false) => match create_topic(&admin, &cfg, timeout) {
                            Ok(()) => true,
                            Err(e) => {
                                warn!(%e, "could not create topic");
                                false
                            }
                        },
                        Err(e) => {
                            if up.is_up() {
                                warn!(%e, "broker unreachable");
                            }
                            false
                        }
                    };
                    if ok && !up.is_up() {
                        info!(brokers = %cfg.brokers, "broker reachable");
                    }
                    up.set(run.observe(ok, up.is_up()));
                    thread::park_timeout(interval);
                }
            })
            .map_err(Error::Thread)?
    };
    Ok(HealthProbe {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn the_broker_is_down_after_three_failed_probes_in_a_row_and_up_at_one_success() {
        let mut run = ProbeRun::default();
        let mut up = true;
        for _ in 0..BROKER_DOWN_AFTER_PROBES - 1 {
            up = run.observe(false, up);
            assert!(up);
        }
        up = run.observe(true, up);
        assert!(up, "a success in between starts the count again");
        for _ in 0..BROKER_DOWN_AFTER_PROBES - 1 {
            up = run.observe(false, up);
        }
        assert!(up);
        up = run.observe(false, up);
        assert!(!up);
        // Down (here, or by librdkafka's report) stays down until a success.
        assert!(!run.observe(false, false));
        assert!(run.observe(true, false));
        // Down by librdkafka while probes fail: not brought back up.
        let mut run = ProbeRun::default();
        assert!(!run.observe(false, false));
    }
}
