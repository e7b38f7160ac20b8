//! What every shard shares: configuration, tenants, limits, metrics, the
//! rings to the producer.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use engine_core::config::{Config, RateLimitScope, RateLimitsConfig};
use engine_core::{Limits, Reason, Tenant, TenantRegistry};
use redpanda::metrics::{BrokerHealth, ProducerMetrics};
use redpanda::producer::Rings;
use telemetry::{HealthCheck, Registry};
use uuid::Uuid;

use crate::clients::ClientTable;
use crate::metrics::EdgeMetrics;
use crate::ratelimit::RateLimiter;
use crate::tls::Tls;

/// The tenants the edge knows, with their rate limiters. Replaced as a whole
/// when the registry is refreshed; limiters of unchanged tenants carry over.
#[derive(Debug, Default)]
pub struct Tenants {
    pub registry: TenantRegistry,
    pub limiters: HashMap<Uuid, Arc<RateLimiter>>,
}

/// What `SIGHUP` may change while the edge runs: the config file's tenants
/// and the tiers' default rate limits. The tenant refresh merges these with
/// the registry's rows.
#[derive(Debug, Clone)]
pub struct Reloadable {
    pub file_tenants: Vec<Tenant>,
    pub rate_limits: RateLimitsConfig,
}

/// A request's authenticated tenant.
#[derive(Debug, Clone)]
pub struct Authed {
    pub tenant: Tenant,
    pub limiter: Option<Arc<RateLimiter>>,
}

/// What the binary hands the edge: the parts it started before it.
#[derive(Debug)]
pub struct Parts {
    pub registry: Arc<Registry>,
    pub rings: Arc<Rings>,
    pub producer: Arc<ProducerMetrics>,
    pub components: Vec<Arc<dyn HealthCheck>>,
    /// HTTPS, when `[tls]` names a certificate.
    pub tls: Option<Tls>,
}

/// State shared by all shards (read-only but for atomics).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub limits: Limits,
    /// Swapped without locks on refresh; read once per request.
    pub tenants: ArcSwap<Tenants>,
    /// Swapped on `SIGHUP`; read by the tenant refresh.
    pub reloadable: ArcSwap<Reloadable>,
    /// The tenant refresh thread, woken to apply a reload at once.
    pub tenant_refresh: OnceLock<std::thread::Thread>,
    /// The edge's own metrics, one set of counters per shard.
    pub metrics: Arc<EdgeMetrics>,
    /// Every metric of the process, for `/metrics` and `/debug/*`.
    pub registry: Arc<Registry>,
    pub rings: Arc<Rings>,
    /// The broker's health, as the producer and its probe see it.
    pub broker: BrokerHealth,
    /// The producer's metrics, for `/health`'s in-flight count.
    pub producer: Arc<ProducerMetrics>,
    /// Other parts of this node whose health `/health` reports (the sink,
    /// when this node runs one); they do not make the edge unready.
    pub components: Vec<Arc<dyn HealthCheck>>,
    pub shutting_down: AtomicBool,
    /// The HTTPS listener's certificates, when TLS is on.
    pub tls: Option<Tls>,
    /// Tells this process run's request ids from another's.
    pub boot_id: u32,
    /// The shards' listening sockets, shut down on a stop.
    pub listeners: Mutex<Vec<RawFd>>,
    /// Limits per client address (`[clients]`), shared by the shards.
    pub clients: Arc<ClientTable>,
    /// The io driver the shards run on (`io_uring` or `epoll`), once started.
    pub io_driver: OnceLock<&'static str>,
    /// The tenant query API's workers, set when the edge starts; while
    /// unset, `/api/v1/query` answers 503.
    pub query: OnceLock<Arc<query::service::Service>>,
    /// Edges live in the node registry (1 until it is read): with
    /// `rate_limits.scope = "cluster"` each tenant's limit is divided by it.
    live_edges: AtomicU32,
}

impl AppState {
    /// Builds the shared state, one shard per ring, and registers the
    /// edge's metrics; rate limiters come from each tenant's limit.
    pub fn new(config: Config, tenants: Vec<Tenant>, parts: Parts) -> Self {
        let metrics = Arc::new(EdgeMetrics::new(parts.rings.len(), &Reason::NAMES));
        let clients = Arc::new(ClientTable::new(config.clients.clone()));
        parts.registry.register(metrics.clone());
        let reloadable = Reloadable {
            file_tenants: tenants.clone(),
            rate_limits: config.rate_limits.clone(),
        };
        let state = Self {
            reloadable: ArcSwap::from_pointee(reloadable),
            tenant_refresh: OnceLock::new(),
            limits: config.event_limits(),
            config,
            tenants: ArcSwap::from_pointee(Tenants::default()),
            metrics,
            registry: parts.registry,
            rings: parts.rings,
            broker: parts.producer.broker().clone(),
            producer: parts.producer,
            components: parts.components,
            clients,
            shutting_down: AtomicBool::new(false),
            tls: parts.tls,
            boot_id: Uuid::new_v4().as_u128() as u32,
            listeners: Mutex::new(Vec::new()),
            io_driver: OnceLock::new(),
            query: OnceLock::new(),
            live_edges: AtomicU32::new(1),
        };
        state.set_tenants(tenants);
        state
    }

    /// Replaces the known tenants (a refresh from the registry).
    pub fn set_tenants(&self, tenants: Vec<Tenant>) {
        let burst_secs = self.reloadable.load().rate_limits.burst_secs.max(1);
        let share = self.rate_limit_share();
        let min_burst = self.config.http.max_batch_events as u64;
        let old = self.tenants.load();
        let limiters = tenants
            .iter()
            .filter(|t| t.rate_limit_eps > 0)
            .map(|t| {
                let rate = t.rate_limit_eps.div_ceil(share).max(1);
                let same = old.limiters.get(&t.id).filter(|l| l.rate_eps() == rate);
                let l = same
                    .cloned()
                    .unwrap_or_else(|| Arc::new(RateLimiter::new(rate, burst_secs, min_burst)));
                (t.id, l)
            })
            .collect();
        self.tenants.store(Arc::new(Tenants {
            registry: TenantRegistry::new(tenants),
            limiters,
        }));
    }

    /// The edges the node registry lists as live (this one among them):
    /// with `rate_limits.scope = "cluster"` each limiter takes its share
    /// from the next tenant refresh on.
    pub fn set_live_edges(&self, n: u32) {
        let before = self.rate_limit_share();
        self.live_edges.store(n.max(1), Ordering::Relaxed);
        if self.rate_limit_share() != before {
            // The limiters take the new share now, not at the next refresh.
            let tenants: Vec<Tenant> = self.tenants.load().registry.iter().cloned().collect();
            self.set_tenants(tenants);
        }
    }

    /// The share of each tenant's limit this edge enforces (1: all of it).
    pub fn rate_limit_share(&self) -> u32 {
        match self.reloadable.load().rate_limits.scope {
            RateLimitScope::Edge => 1,
            RateLimitScope::Cluster => self.live_edges.load(Ordering::Relaxed).max(1),
        }
    }

    /// Starts a stop: ingest answers `503 shutting_down`, keep-alive
    /// connections close after their answer, and each shard's listener is
    /// shut down, which ends its pending accept, so it stops taking
    /// connections while it still answers the ones it holds.
    pub fn stop_accepting(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        if let Ok(fds) = self.listeners.lock() {
            for &fd in fds.iter() {
                // SAFETY: shutdown(2) on a listening socket the shard still
                // owns (it is closed only after this wakes its accept); no
                // memory is passed.
                unsafe { libc::shutdown(fd, libc::SHUT_RD) };
            }
        }
    }

    /// Shards whose listener is still open.
    pub fn accepting(&self) -> usize {
        self.listeners.lock().map_or(0, |fds| fds.len())
    }

    /// Whether the broker answers.
    pub fn broker_up(&self) -> bool {
        self.broker.is_up()
    }

    /// Ready to take events: broker reachable, rings not saturated, not stopping.
    pub fn ready(&self) -> bool {
        self.broker_up() && !self.rings.saturated() && !self.shutting_down.load(Ordering::Relaxed)
    }
}
