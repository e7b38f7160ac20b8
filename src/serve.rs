//! `serve`: wires a node's roles, tells the service manager how it is doing,
//! and lives until a stop signal.
//!
//! Start: placement (shards on their cores, the other threads on
//! `placement.service_cores`) → sink → producer, broker probe, query
//! workers, shards → `READY=1` to systemd. Then signals: `SIGHUP` reloads
//! what can change in place ([`crate::reload`]); `SIGINT`/`SIGTERM` stop:
//! the edge stops taking batches and answers those it holds, the producer
//! flushes, the sink inserts its batch and commits, and the process exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api::admin::Listener;
use engine_core::config::{Config, Role};
use sd_notify::NotifyState;
use telemetry::logging::LogHandle;
use tracing::{error, info, warn};

use crate::config_file::Source;
use crate::{reload, status, tenants};

/// How long shutdown waits for in-flight batches before flushing the producer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The running HTTP edge and its producer.
pub struct Edge {
    pub state: Arc<api::AppState>,
    producer: redpanda::producer::ProducerHandle,
    probe: redpanda::admin::HealthProbe,
}

impl Edge {
    /// Stops taking batches, waits for in-flight ones, flushes the producer.
    fn stop(self) {
        self.state.stop_accepting();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.state.accepting() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        while self.producer.metrics.inflight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.producer.shutdown(DRAIN_TIMEOUT);
        self.probe.stop();
        let accepted = self.state.metrics.events_accepted();
        info!(accepted, "edge stopped");
    }
}

/// Starts the producer, the broker probe, the query workers and the shards;
/// each registers its metrics with `registry`. `components` are the other
/// parts of this node whose health `/health` shows (its sink).
fn start_edge(
    config: Config,
    tenants: Vec<engine_core::Tenant>,
    registry: Arc<telemetry::Registry>,
    components: Vec<Arc<dyn telemetry::HealthCheck>>,
) -> Result<Edge> {
    if tenants.is_empty() {
        warn!("no tenants configured: every ingest request will get 401");
    }
    let shards = api::shard::shard_count(&config);
    let producer =
        redpanda::producer::start(&config.redpanda, shards, config.http.request_timeout_ms)
            .context("starting the producer")?;
    registry.register(producer.metrics.clone());
    let broker = producer.metrics.broker().clone();
    let probe = redpanda::admin::start_health_probe(&config.redpanda, broker)
        .context("starting the broker health probe")?;
    let tls = if config.tls.enabled() {
        let (tls, loaded) =
            api::tls::Tls::load(&config.tls).context("loading the TLS certificate")?;
        info!(port = config.tls.port, fingerprint = %loaded.fingerprint, chain = loaded.chain,
            plain_http = config.tls.plain_http, "TLS certificate loaded");
        Some(tls)
    } else {
        None
    };
    let parts = api::Parts {
        tls,
        registry: registry.clone(),
        rings: producer.rings.clone(),
        producer: producer.metrics.clone(),
        components,
    };
    let state = Arc::new(api::AppState::new(config, tenants, parts));
    tenants::spawn_refresh(state.clone())?;
    let queries = query::service::Service::start(&state.config.clickhouse)
        .context("starting the query workers")?;
    registry.register(queries.metrics());
    let _ = state.query.set(queries);
    let handle = api::start(state.clone()).context("starting the HTTP shards")?;
    info!(addr = %handle.addr, "edge ready to accept connections");
    Ok(Edge {
        state,
        producer,
        probe,
    })
}

/// In cluster mode, refuses to start where `[[clickhouse.shards]]` and the
/// cluster disagree (the shard count, or a listed replica that says it is
/// another shard or the same replica as another). A cluster that cannot be
/// asked now (ClickHouse down at start) is not a reason to stay down.
fn check_cluster(config: &Config) -> Result<()> {
    if !config.clickhouse.is_cluster() {
        return Ok(());
    }
    match clickhouse_client::cluster::Topology::discover(&config.clickhouse, Duration::from_secs(5))
    {
        Ok(topology) => {
            topology.check()?;
            for (url, why) in topology.unreachable() {
                warn!(
                    replica = url,
                    error = why,
                    "a listed replica does not answer"
                );
            }
            info!(
                cluster = %config.clickhouse.cluster,
                shards = topology.shards.len(),
                "the listed shards agree with the cluster"
            );
        }
        Err(e) => warn!(error = %e, "cannot ask the cluster for its topology now"),
    }
    Ok(())
}

/// Pins the calling thread, and so every thread it starts from now on, to
/// `placement.service_cores`. Shards pin themselves to their own core.
fn place_service_threads(config: &Config) {
    let cores = &config.placement.service_cores;
    let threads = "producer and librdkafka, sink, query workers, broker probe";
    if cores.is_empty() {
        info!(threads, cores = "any", "thread placement");
        return;
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        // SAFETY: `c` < CPU_SETSIZE (1024), which config checking ensures,
        // so the bit lies inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid, initialised
    // cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        info!(threads, cores = ?cores, "thread placement");
    } else {
        warn!(threads, cores = ?cores, error = %std::io::Error::last_os_error(),
            "could not pin the service threads; they run on any core");
    }
}

/// The shards' cores, resolved before the service threads are pinned (the
/// cores this process may use are read from the calling thread).
fn resolve_shard_cores(config: &mut Config) {
    if config.placement.shard_cores.is_empty() && config.roles.contains(&Role::Ingest) {
        let shards = api::shard::shard_count(config);
        config.placement.shard_cores = api::shard::shard_cores(config, shards)
            .into_iter()
            .flatten()
            .collect();
    }
}

/// Tells systemd (when it started us with `Type=notify`); a no-op elsewhere.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(%e, "cannot notify the service manager");
    }
}

/// Pings systemd's watchdog every half period while every shard's event
/// loop keeps beating. A shard that stops beating stops the pings, and
/// systemd restarts the service after `WatchdogSec`.
fn spawn_watchdog(edge: Option<Arc<api::AppState>>) -> Result<()> {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return Ok(());
    };
    let every = period / 2;
    info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut last = edge.as_ref().map(|s| s.metrics.heartbeats());
            loop {
                std::thread::sleep(every);
                if let (Some(state), Some(before)) = (&edge, &mut last) {
                    let now = state.metrics.heartbeats();
                    let stalled: Vec<usize> = (0..now.len()).filter(|&i| now[i] == before[i]).collect();
                    *before = now;
                    if !stalled.is_empty() {
                        error!(shards = ?stalled, "shards stopped running; withholding the watchdog ping");
                        continue;
                    }
                }
                notify(&[NotifyState::Watchdog]);
            }
        })?;
    Ok(())
}

/// Runs the roles of `config` until SIGINT or SIGTERM.
pub fn serve(mut config: Config, source: Source, log: LogHandle) -> Result<()> {
    let tenants = config.tenants()?;
    if tenants.iter().any(|t| t.id.is_nil()) {
        warn!("the development tenant 00000000-0000-0000-0000-000000000000 is enabled; remove it from the config for production");
    }
    // Ask for the signals before any thread starts, so every thread blocks them.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    check_cluster(&config)?;
    resolve_shard_cores(&mut config);
    place_service_threads(&config);
    let ingest = config.roles.contains(&Role::Ingest);
    let registry = Arc::new(telemetry::Registry::new());
    let fleet = Arc::new(crate::registry::Fleet::default());
    registry.register(fleet.clone());
    let sink = if config.roles.contains(&Role::Sink) {
        let sink = worker::start(config.clone()).context("starting the sink")?;
        registry.register(sink.metrics.clone());
        Some(sink)
    } else {
        None
    };
    let sink_health = || -> Vec<Arc<dyn telemetry::HealthCheck>> {
        sink.iter()
            .map(|s| s.metrics.clone() as Arc<dyn telemetry::HealthCheck>)
            .collect()
    };
    let admin = config.admin.clone();
    let running_config = config.clone();
    let edge = if ingest {
        let edge = start_edge(config.clone(), tenants, registry, sink_health())?;
        if admin.separate() {
            let node = edge.state.clone();
            let addr = status::start(&admin.host, admin.port, node, Listener::Admin, &admin)
                .context("starting the admin listener")?;
            info!(%addr, "admin listener: /metrics, /health, /debug/*");
        }
        Some(edge)
    } else {
        // A sink-only node still answers /health and /metrics.
        let node = Arc::new(status::SinkNode::new(&config, registry, sink_health()));
        let addr = status::start(
            &config.host,
            config.port,
            node.clone(),
            Listener::Main,
            &admin,
        )
        .context("starting the status endpoint")?;
        info!(%addr, "sink-only node: /health and /metrics");
        if admin.separate() {
            let addr = status::start(&admin.host, admin.port, node, Listener::Admin, &admin)
                .context("starting the admin listener")?;
            info!(%addr, "admin listener: /metrics, /health, /debug/*");
        }
        None
    };
    spawn_watchdog(edge.as_ref().map(|e| e.state.clone()))?;
    let edge_state = edge.as_ref().map(|e| e.state.clone());
    crate::registry::spawn(&running_config, fleet, move |n| {
        if let Some(state) = &edge_state {
            state.set_live_edges(n);
        }
    })?;
    info!("ingestion-engine running");
    notify(&[NotifyState::Ready, NotifyState::Status("running")]);

    let mut running = config;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            notify(&reloading());
            running = reload::apply(&running, &source, &log, edge.as_ref().map(|e| &e.state));
            notify(&[NotifyState::Ready, NotifyState::Status("running")]);
            continue;
        }
        info!(signal = sig, "shutting down");
        break;
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    if let Some(edge) = edge {
        edge.stop();
    }
    if let Some(sink) = sink {
        sink.stop();
    }
    info!("stopped");
    // Shard threads hold no state worth flushing; exiting ends them.
    std::process::exit(0);
}

/// `RELOADING=1` with the timestamp systemd 253+ asks for.
fn reloading() -> Vec<NotifyState<'static>> {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    states
}
