//! `ingestion-engine`: the binary. CLI, wiring, signals, graceful shutdown.
//!
//! `serve` (default) wires the pieces: config → metrics → producer thread and
//! broker health probe (`redpanda`) → HTTP shards (`api`), then waits for
//! SIGINT/SIGTERM and drains. `check-config`, `hash-key`, `migrate` and `dump`
//! are tools.

mod dump;
mod status;
mod tenants;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api::admin::Listener;
use clap::{Parser, Subcommand};
use engine_core::config::{Config, Role};
use tracing::{info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The running HTTP edge and its producer.
struct Edge {
    state: Arc<api::AppState>,
    producer: redpanda::producer::ProducerHandle,
    probe: redpanda::admin::HealthProbe,
}

impl Edge {
    /// Stops taking batches, waits for in-flight ones, flushes the producer.
    fn stop(self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
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
    let parts = api::Parts {
        registry: registry.clone(),
        rings: producer.rings.clone(),
        producer: producer.metrics.clone(),
        components,
    };
    let state = Arc::new(api::AppState::new(config, tenants.clone(), parts));
    tenants::spawn_refresh(state.clone(), tenants)?;
    let ch = &state.config.clickhouse;
    let queries = query::service::Service::start(&ch.url, &ch.database)
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

/// Default config file, used when it exists and no `--config` is given.
const DEFAULT_CONFIG: &str = "config/default.toml";
/// How long shutdown waits for in-flight batches before flushing the producer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "ingestion-engine",
    version,
    about = "Analytics event ingestion: HTTP → broker → ClickHouse"
)]
struct Cli {
    /// Config file (TOML). Default: config/default.toml when present.
    #[arg(long, global = true, env = "INGESTION_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (default): the roles of the config, or those given here.
    Serve {
        /// `ingest` (HTTP edge) or `sink` (broker → ClickHouse); repeatable.
        #[arg(long, value_parser = parse_role)]
        role: Vec<Role>,
    },
    /// Print the effective configuration (secrets masked) and exit.
    CheckConfig,
    /// Print the SHA-256 of a key, for `tenants[].secret_key_sha256` or `write_key_sha256`.
    HashKey {
        /// The key; read from stdin when omitted.
        key: Option<String>,
    },
    /// Tenants stored in ClickHouse (the edge picks changes up within
    /// `clickhouse.tenants_refresh_ms`).
    Tenant {
        #[command(subcommand)]
        action: tenants::TenantAction,
    },
    /// Dead letters: records the sink could not decode.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Drop expired partitions now (the sink also does this every
    /// `sink.retention_interval_secs`).
    Retention {
        /// Treat this date (YYYY-MM-DD, UTC) as today.
        #[arg(long)]
        today: Option<String>,
    },
    /// Create or upgrade the ClickHouse schema (database, tables, views), then exit.
    Migrate,
    /// Print every event in the topic as one JSON line, then exit.
    Dump {
        /// Keep tailing the topic instead of exiting at its end.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print each dead letter: partition, offset, reason, source partition/offset, size.
    List,
    /// Produce the dead letters not replayed before back onto the events topic.
    Replay,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "ingest" => Ok(Role::Ingest),
        "sink" => Ok(Role::Sink),
        other => Err(format!("unknown role {other:?} (ingest or sink)")),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let path = path.map(Path::to_path_buf).or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG);
        p.exists().then_some(p)
    });
    let text = match &path {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = Config::load(
        text.as_deref(),
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .with_context(|| match &path {
        Some(p) => format!(
            "invalid configuration ({} and INGESTION_* environment)",
            p.display()
        ),
        None => "invalid configuration (INGESTION_* environment)".to_string(),
    })?;
    Ok(config)
}

/// Failure policy (README, "Failure policy"): a panic in any thread ends the
/// process. A monoio shard does not survive a panicking task; without this
/// the process would live on, holding its port, with a dead shard answering
/// nothing. Release builds abort on panic anyway (`panic = "abort"`); the hook
/// makes every build do the same, after logging which thread panicked where.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %info.location().map_or_else(String::new, ToString::to_string),
            message,
            "panic: aborting the process"
        );
        // The standard report on stderr (and a backtrace under RUST_BACKTRACE),
        // whatever RUST_LOG filters.
        default(info);
        std::process::abort();
    }));
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    install_panic_hook();
    match cli.command.unwrap_or(Command::Serve { role: Vec::new() }) {
        Command::Serve { role } => {
            let mut config = load_config(cli.config.as_deref())?;
            if !role.is_empty() {
                config.roles = role;
            }
            serve(config)
        }
        Command::CheckConfig => {
            let config = load_config(cli.config.as_deref())?;
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!key.is_empty(), "empty key");
            println!("{}", engine_core::tenant::hash_key_hex(&key));
            Ok(())
        }
        Command::Migrate => {
            let config = load_config(cli.config.as_deref())?;
            let ch =
                clickhouse_client::Client::new(&config.clickhouse.url, Duration::from_secs(30));
            let report = clickhouse_client::schema::migrate(&ch, &config.clickhouse.database)
                .with_context(|| {
                    format!(
                        "migrating {} at {}",
                        config.clickhouse.database, config.clickhouse.url
                    )
                })?;
            println!(
                "ClickHouse {}: database {} at migration {}; applied now: {:?}",
                report.server,
                config.clickhouse.database,
                clickhouse_client::schema::MIGRATIONS
                    .last()
                    .map_or(0, |m| m.version),
                report.applied
            );
            Ok(())
        }
        Command::Retention { today } => {
            let config = load_config(cli.config.as_deref())?;
            let ch =
                clickhouse_client::Client::new(&config.clickhouse.url, Duration::from_secs(60));
            // An explicit date is the operator's word; otherwise both clocks must agree.
            let today = match today {
                Some(d) => time::Date::parse(
                    &d,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .context("--today must be YYYY-MM-DD")?,
                None => worker::retention::today(&ch)?,
            };
            let report = worker::retention::run_once(&ch, &config.clickhouse.database, today)?;
            println!(
                "retention as of {today}: dropped {} partitions, kept {}",
                report.dropped.len(),
                report.kept
            );
            for p in report.dropped {
                println!("dropped {p}");
            }
            Ok(())
        }
        Command::Tenant { action } => {
            tenants::command(&load_config(cli.config.as_deref())?, action)
        }
        Command::Dlq { action } => {
            let config = load_config(cli.config.as_deref())?;
            match action {
                DlqAction::List => {
                    for d in worker::dlq::list(&config)? {
                        println!(
                            "{}",
                            sonic_rs::json!({"partition": d.partition, "offset": d.offset, "reason": d.reason,
                                "source_partition": d.source_partition, "source_offset": d.source_offset, "bytes": d.bytes})
                        );
                    }
                }
                DlqAction::Replay => {
                    println!("replayed {} dead letters", worker::dlq::replay(&config)?)
                }
            }
            Ok(())
        }
        Command::Dump { follow } => dump::run(&load_config(cli.config.as_deref())?, follow),
    }
}

fn serve(config: Config) -> Result<()> {
    let tenants = config.tenants()?;
    if tenants.iter().any(|t| t.id.is_nil()) {
        warn!("the development tenant 00000000-0000-0000-0000-000000000000 is enabled; remove it from the config for production");
    }
    let ingest = config.roles.contains(&Role::Ingest);
    let registry = Arc::new(telemetry::Registry::new());
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
    let edge = if ingest {
        let edge = start_edge(config, tenants, registry, sink_health())?;
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
    info!("ingestion-engine running");

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    if let Some(sig) = signals.forever().next() {
        info!(signal = sig, "shutting down");
    }
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
