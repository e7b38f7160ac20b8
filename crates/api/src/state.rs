//! What every shard shares: configuration, tenants, limits, metrics, the
//! rings to the producer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use engine_core::config::Config;
use engine_core::{Limits, TenantRegistry};
use redpanda::producer::Rings;
use telemetry::Metrics;
use uuid::Uuid;

use crate::ratelimit::RateLimiter;

/// State shared by all shards (read-only but for atomics).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub limits: Limits,
    pub tenants: TenantRegistry,
    pub rate_limits: HashMap<Uuid, RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub rings: Arc<Rings>,
    pub shutting_down: AtomicBool,
    /// The io driver the shards run on (`io_uring` or `epoll`), once started.
    pub io_driver: OnceLock<&'static str>,
}

impl AppState {
    /// Builds the shared state; rate limiters come from each tenant's limit.
    pub fn new(
        config: Config,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
        rings: Arc<Rings>,
    ) -> Self {
        let burst_secs = config.rate_limits.burst_secs.max(1);
        let min_burst = config.http.max_batch_events as u64;
        let rate_limits = config
            .tenants()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.rate_limit_eps > 0)
            .map(|t| {
                (
                    t.id,
                    RateLimiter::new(t.rate_limit_eps, burst_secs, min_burst),
                )
            })
            .collect();
        Self {
            limits: config.event_limits(),
            config,
            tenants,
            rate_limits,
            metrics,
            rings,
            shutting_down: AtomicBool::new(false),
            io_driver: OnceLock::new(),
        }
    }

    /// Whether the broker answers.
    pub fn broker_up(&self) -> bool {
        self.metrics.producer.broker_up.load(Ordering::Relaxed)
    }

    /// Ready to take events: broker reachable, rings not saturated, not stopping.
    pub fn ready(&self) -> bool {
        self.broker_up() && !self.rings.saturated() && !self.shutting_down.load(Ordering::Relaxed)
    }
}
