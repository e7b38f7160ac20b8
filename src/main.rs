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

/// The long help's end: an example and the docs, after the options.
const TOP_HELP: &str = "\
Without a command it runs `serve`. Every command but `hash-key` reads the config file.

Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml serve
  ingestion-engine --config /etc/ingestion-engine/config.toml check-config
  ingestion-engine --config /etc/ingestion-engine/config.toml tenant create --name shop --tier paid

Each command's --help has its own example and docs page.

Docs: README.md and docs/README.md";

const SERVE_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml serve
  ingestion-engine --config /etc/ingestion-engine/config.toml serve --role sink

Docs: docs/production.md (the package and its unit), docs/configuration.md (every key)";

const CHECK_CONFIG_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml check-config
  INGESTION_PORT=9090 ingestion-engine check-config

Docs: docs/configuration.md (a ClickHouse cluster's topology: docs/cluster.md)";

const HASH_KEY_HELP: &str = "\
Examples:
  ingestion-engine hash-key sk_example_key
  printf '%s\\n' \"$ADMIN_TOKEN\" | ingestion-engine hash-key   # from stdin, out of the shell history

Docs: docs/tenants-and-keys.md (tenants in the config file), docs/configuration.md (admin.token_sha256)";

const TENANT_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml tenant create --name shop --tier paid
  ingestion-engine --config /etc/ingestion-engine/config.toml tenant list

Docs: docs/tenants-and-keys.md";

const SINK_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml sink accept-reset

Docs: docs/guarantees.md (\"Topic reset\")";

const ACCEPT_RESET_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml sink accept-reset
  ingestion-engine --config /etc/ingestion-engine/config.toml sink accept-reset --partition 3 --partition 7

Docs: docs/guarantees.md (\"Topic reset\")";

const DLQ_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml dlq list
  ingestion-engine --config /etc/ingestion-engine/config.toml dlq replay

Docs: docs/guarantees.md (\"Broker → ClickHouse: exactly once\")";

const DLQ_LIST_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml dlq list

Docs: docs/guarantees.md (\"Broker → ClickHouse: exactly once\")";

const DLQ_REPLAY_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml dlq replay

Docs: docs/guarantees.md (\"Broker → ClickHouse: exactly once\")";

const RETENTION_HELP: &str = "\
Examples:
  ingestion-engine --config /etc/ingestion-engine/config.toml retention
  ingestion-engine --config /etc/ingestion-engine/config.toml retention --today 2026-03-01

Docs: docs/guarantees.md (\"Retention\")";

const MIGRATE_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml migrate

Docs: docs/architecture.md (\"ClickHouse\": the schema and migrations), docs/cluster.md (on a cluster)";

const NODES_HELP: &str = "\
Example:
  ingestion-engine --config /etc/ingestion-engine/config.toml nodes

Docs: docs/cluster.md (\"Many edges, many sinks\": the fleet)";

const DUMP_HELP: &str = "\
Examples:
  ingestion-engine dump
  ingestion-engine --config /etc/ingestion-engine/config.toml dump --follow

Docs: docs/getting-started.md (\"Quickstart\")";

#[derive(Parser)]
#[command(
    name = "ingestion-engine",
    version,
    about = "Analytics event ingestion: events over HTTP, stored durably in a Kafka-API \
             broker, then written exactly once into ClickHouse.",
    after_long_help = TOP_HELP
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
    /// Run the engine (the default command): the config's roles, or those
    /// given with --role, until SIGTERM or SIGINT.
    ///
    /// `ingest` is the HTTP edge, `sink` writes the broker's events into
    /// ClickHouse; a node runs either or both. SIGHUP reloads the config
    /// file (what can change in place); SIGTERM drains and exits 0.
    #[command(after_long_help = SERVE_HELP)]
    Serve {
        /// `ingest` (HTTP edge) or `sink` (broker → ClickHouse); repeatable.
        #[arg(long, value_parser = parse_role)]
        role: Vec<Role>,
    },
    /// Print the effective configuration (secrets masked) and exit.
    ///
    /// The first line names the file read. On a ClickHouse cluster
    /// (`clickhouse.cluster`) it also prints the cluster's topology, and
    /// fails when the config's shard listing disagrees with it.
    #[command(after_long_help = CHECK_CONFIG_HELP)]
    CheckConfig,
    /// Print the SHA-256 of a key, for `tenants[].secret_key_sha256`,
    /// `write_key_sha256` or `admin.token_sha256`.
    ///
    /// Reads no config; without KEY it reads one line from stdin.
    #[command(after_long_help = HASH_KEY_HELP)]
    HashKey {
        /// The key; read from stdin when omitted.
        key: Option<String>,
    },
    /// Manage the tenants stored in ClickHouse: create, list, disable, keys,
    /// allowed origins.
    ///
    /// The edge picks changes up within `clickhouse.tenants_refresh_ms`
    /// (10 s by default), without a restart.
    #[command(after_long_help = TENANT_HELP)]
    Tenant {
        #[command(subcommand)]
        action: tenants::TenantAction,
    },
    /// Act on the sink's view of the events topic: accept a topic reset.
    #[command(after_long_help = SINK_HELP)]
    Sink {
        #[command(subcommand)]
        action: SinkAction,
    },
    /// List or replay dead letters: records the sink could not decode.
    ///
    /// They are in the topic `sink.dlq_topic` (`events-dlq` by default),
    /// with the reason and the source partition and offset.
    #[command(after_long_help = DLQ_HELP)]
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Drop expired partitions now (the sink also does this every
    /// `sink.retention_interval_secs`).
    ///
    /// Without --today it runs only while this machine's clock and
    /// ClickHouse's agree within 5 minutes; --today is the operator's word
    /// and skips that check.
    #[command(after_long_help = RETENTION_HELP)]
    Retention {
        /// Treat this date (YYYY-MM-DD, UTC) as today.
        #[arg(long)]
        today: Option<String>,
    },
    /// Create or upgrade the ClickHouse schema (database, tables, views), then exit.
    ///
    /// Idempotent; the sink also runs it when it starts
    /// (`sink.migrate_on_start`). On a cluster (`clickhouse.cluster`) it
    /// checks the topology first and creates replicated and `Distributed`
    /// tables.
    #[command(after_long_help = MIGRATE_HELP)]
    Migrate,
    /// List the fleet: every engine process's newest heartbeat in the node
    /// registry (roles, version, address, live or gone).
    #[command(after_long_help = NODES_HELP)]
    Nodes,
    /// Print every event in the events topic as one JSON line, then exit.
    ///
    /// Each line has the event with its original field names, plus its
    /// tenant, partition and offset.
    #[command(after_long_help = DUMP_HELP)]
    Dump {
        /// Keep tailing the topic instead of exiting at its end.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum SinkAction {
    /// Accept a recreated or reset events topic: store the new log from its
    /// start.
    ///
    /// For after the events topic was recreated or the broker lost its data
    /// (`/health` sink state `topic_reset`). Receipts of the old log stop
    /// counting for the partitions whose log changed; the others are left
    /// alone, so running it twice is harmless. Prints one JSON line per
    /// partition; fails if a partition is refused.
    #[command(after_long_help = ACCEPT_RESET_HELP)]
    AcceptReset {
        /// A partition to accept (repeatable); default: every partition.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print each dead letter as a JSON line: partition, offset, reason,
    /// source partition/offset, size.
    #[command(after_long_help = DLQ_LIST_HELP)]
    List,
    /// Produce the dead letters not replayed before back onto the events
    /// topic, each source record once.
    ///
    /// What was replayed is remembered by the consumer group
    /// `ingestion-engine-dlq-replay`, so running it again replays only new
    /// dead letters.
    #[command(after_long_help = DLQ_REPLAY_HELP)]
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

/// Failure policy (docs/guarantees.md, "Failure policy"): a panic in any thread ends the
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;

    use super::Cli;

    /// The `docs/….md` paths a help text names.
    fn doc_paths(text: &str) -> Vec<&str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || "/-_.".contains(c)))
            .map(|t| t.trim_end_matches('.'))
            .filter(|t| t.starts_with("docs/") && t.ends_with(".md"))
            .collect()
    }

    /// Every command (but clap's own `help`) says what it does, shows an
    /// example and names docs that exist in the repository.
    fn check(cmd: &mut clap::Command, path: &str, top: bool) {
        assert!(
            cmd.get_about().is_some_and(|a| !a.to_string().is_empty()),
            "`{path}` has no about"
        );
        let long = cmd.render_long_help().to_string();
        assert!(
            long.contains("Example"),
            "`{path} --help` has no example:\n{long}"
        );
        let docs = if top { "README.md" } else { "docs/" };
        assert!(
            long.contains(docs),
            "`{path} --help` names no {docs}:\n{long}"
        );
        assert!(
            long.contains("Docs: "),
            "`{path} --help` has no Docs line:\n{long}"
        );
        for doc in doc_paths(&long) {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
            assert!(
                file.is_file(),
                "`{path} --help` names {doc}, which does not exist"
            );
        }
        for sub in cmd.get_subcommands_mut() {
            if sub.get_name() == "help" {
                continue;
            }
            let sub_path = format!("{path} {}", sub.get_name());
            check(sub, &sub_path, false);
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_about_example_and_docs() {
        let mut cmd = Cli::command();
        cmd.build();
        check(&mut cmd, "ingestion-engine", true);
    }

    #[test]
    fn doc_paths_are_found() {
        assert_eq!(
            doc_paths("Docs: docs/guarantees.md (\"Topic reset\"), docs/cluster.md."),
            ["docs/guarantees.md", "docs/cluster.md"]
        );
    }
}
