//! `ingestion-engine`: the binary. CLI, wiring, signals, graceful shutdown.
//!
//! `serve` (default, [`serve`]) runs the node's roles until a stop signal;
//! [`config_file`] finds and reads the configuration, [`reload`] applies a
//! new one on `SIGHUP`. `check-config`, `hash-key`, `migrate`, `tenant`,
//! `dlq`, `retention` and `dump` are tools.

mod config_file;
mod dump;
mod registry;
mod reload;
mod serve;
mod status;
mod tenants;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine_core::config::{Config, LogFormat, Role};
use tracing::info;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ingestion-engine",
    version,
    about = "Analytics event ingestion: HTTP → broker → ClickHouse"
)]
struct Cli {
    /// Config file (TOML). Default: the first of config/default.toml and
    /// /etc/ingestion-engine/config.toml that exists.
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
    /// The sink's view of the events topic.
    Sink {
        #[command(subcommand)]
        action: SinkAction,
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
    /// List the fleet: every engine process's newest heartbeat in the node
    /// registry (roles, version, address, live or gone).
    Nodes,
    /// Print every event in the topic as one JSON line, then exit.
    Dump {
        /// Keep tailing the topic instead of exiting at its end.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum SinkAction {
    /// After the events topic was recreated or the broker lost its data
    /// (`/health` sink state `topic_reset`): store the new log from its
    /// start. Receipts of the old log stop counting for the partitions whose
    /// log changed; the others are left alone. Example:
    /// `ingestion-engine sink accept-reset --partition 3`.
    AcceptReset {
        /// A partition to accept (repeatable); default: every partition.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
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

/// Reads the configuration and starts logging as it says; logs the file.
fn load_config(
    path: Option<&std::path::Path>,
) -> Result<(Config, config_file::Source, telemetry::logging::LogHandle)> {
    let (config, source) = config_file::load(path)?;
    let log = telemetry::logging::init(&config.log.level, config.log.format == LogFormat::Json)?;
    tracing::debug!(file = %source.describe(), "configuration loaded");
    Ok((config, source, log))
}

/// [`load_config`] for the tools, which need only the configuration.
fn tool_config(path: Option<&std::path::Path>) -> Result<Config> {
    load_config(path).map(|(c, _, _)| c)
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
    install_panic_hook();
    match cli.command.unwrap_or(Command::Serve { role: Vec::new() }) {
        Command::Serve { role } => {
            let (mut config, source, log) = load_config(cli.config.as_deref())?;
            if source.path().is_some() {
                info!(file = %source.describe(), "configuration loaded");
            } else {
                tracing::warn!(file = %source.describe(), "no configuration file");
            }
            if !role.is_empty() {
                config.roles = role;
            }
            serve::serve(config, source, log)
        }
        Command::CheckConfig => {
            let (config, source) = config_file::load(cli.config.as_deref())?;
            println!("# config file: {}", source.describe());
            print!("{}", config.to_masked_toml());
            if config.clickhouse.is_cluster() {
                // The topology as the cluster sees it; a disagreement fails.
                let topology = clickhouse_client::cluster::Topology::discover(
                    &config.clickhouse,
                    Duration::from_secs(10),
                )
                .context("asking the cluster for its topology")?;
                print!("{}", topology.render());
                topology.check()?;
            }
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
            let config = tool_config(cli.config.as_deref())?;
            let ch =
                clickhouse_client::Client::from_config(&config.clickhouse, Duration::from_secs(30));
            if config.clickhouse.is_cluster() {
                let topology = clickhouse_client::cluster::Topology::discover(
                    &config.clickhouse,
                    Duration::from_secs(10),
                )
                .context("asking the cluster for its topology")?;
                topology.check()?;
            }
            let report =
                clickhouse_client::schema::migrate_configured(&ch, &config.clickhouse, &|| false)
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
            let config = tool_config(cli.config.as_deref())?;
            let ch =
                clickhouse_client::Client::from_config(&config.clickhouse, Duration::from_secs(60));
            // An explicit date is the operator's word; otherwise both clocks must agree.
            let today = match today {
                Some(d) => time::Date::parse(
                    &d,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .context("--today must be YYYY-MM-DD")?,
                None => worker::retention::today(&ch)?,
            };
            let report = worker::retention::run_once_on(
                &ch,
                &config.clickhouse.database,
                config.clickhouse.cluster_name(),
                today,
            )?;
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
            tenants::command(&tool_config(cli.config.as_deref())?, action)
        }
        Command::Sink {
            action: SinkAction::AcceptReset { partitions },
        } => {
            let config = tool_config(cli.config.as_deref())?;
            let mut refused = 0;
            for a in worker::topic_reset::accept(&config, &partitions)? {
                let line = match a {
                    worker::topic_reset::Accepted::Reset {
                        partition,
                        verdict,
                        after_us,
                        from_offset,
                    } => sonic_rs::json!({"partition": partition, "accepted": true,
                        "why": format!("{verdict:?}"), "receipts_until_us": after_us, "from_offset": from_offset}),
                    worker::topic_reset::Accepted::Same { partition } => sonic_rs::json!({
                        "partition": partition, "accepted": false, "why": "the broker's log is the one stored from"}),
                    worker::topic_reset::Accepted::Refused { partition, why } => {
                        refused += 1;
                        sonic_rs::json!({"partition": partition, "accepted": false, "refused": true, "why": why})
                    }
                };
                println!("{line}");
            }
            if refused > 0 {
                anyhow::bail!("{refused} partition(s) refused (see each line's \"why\")");
            }
            Ok(())
        }
        Command::Dlq { action } => {
            let config = tool_config(cli.config.as_deref())?;
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
                    let r = worker::dlq::replay(&config)?;
                    println!(
                        "replayed {} dead letters ({} copies of a record replayed already skipped)",
                        r.replayed, r.duplicates
                    )
                }
            }
            Ok(())
        }
        Command::Nodes => registry::list(&tool_config(cli.config.as_deref())?),
        Command::Dump { follow } => dump::run(&tool_config(cli.config.as_deref())?, follow),
    }
}
