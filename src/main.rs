//! `ingestion-engine`: the binary. CLI, wiring, signals, graceful shutdown.
//!
//! `serve` (default) wires the pieces: config → metrics → producer thread and
//! broker health probe (`redpanda`) → HTTP shards (`api`), then waits for
//! SIGINT/SIGTERM and drains. `check-config`, `hash-key`, `migrate` and `dump`
//! are tools.

mod dump;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine_core::config::{Config, Role};
use engine_core::{Reason, TenantRegistry};
use tracing::{info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The running HTTP edge and its producer.
struct Edge {
    state: Arc<api::AppState>,
    metrics: Arc<telemetry::Metrics>,
    producer: redpanda::producer::ProducerHandle,
    probe: redpanda::admin::HealthProbe,
}

impl Edge {
    /// Stops taking batches, waits for in-flight ones, flushes the producer.
    fn stop(self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self
            .metrics
            .producer
            .inflight_records
            .load(Ordering::Relaxed)
            > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.producer.shutdown(DRAIN_TIMEOUT);
        self.probe.stop();
        info!(accepted = self.metrics.events_accepted(), "edge stopped");
    }
}

fn start_edge(config: Config, tenants: Vec<engine_core::Tenant>) -> Result<Edge> {
    if tenants.is_empty() {
        warn!("no tenants configured: every ingest request will get 401");
    }
    let shards = api::shard::shard_count(&config);
    let metrics = Arc::new(telemetry::Metrics::new(shards, &Reason::NAMES));
    let producer = redpanda::producer::start(
        &config.redpanda,
        shards,
        config.http.request_timeout_ms,
        metrics.clone(),
    )
    .context("starting the producer")?;
    let probe = redpanda::admin::start_health_probe(&config.redpanda, metrics.clone())
        .context("starting the broker health probe")?;
    let state = Arc::new(api::AppState::new(
        config,
        TenantRegistry::new(tenants),
        metrics.clone(),
        producer.rings.clone(),
    ));
    let handle = api::start(state.clone()).context("starting the HTTP shards")?;
    info!(addr = %handle.addr, "edge ready to accept connections");
    Ok(Edge {
        state,
        metrics,
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
    /// Run the engine (default).
    Serve,
    /// Print the effective configuration (secrets masked) and exit.
    CheckConfig,
    /// Print the SHA-256 of an API key, for `tenants[].api_key_sha256`.
    HashKey {
        /// The key; read from stdin when omitted.
        key: Option<String>,
    },
    /// Dead letters: records the sink could not decode.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(load_config(cli.config.as_deref())?),
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
    let sink = if config.roles.contains(&Role::Sink) {
        Some(worker::start(config.clone()).context("starting the sink")?)
    } else {
        None
    };
    let edge = if config.roles.contains(&Role::Ingest) {
        Some(start_edge(config, tenants)?)
    } else {
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
