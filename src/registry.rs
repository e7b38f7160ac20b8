//! This process in the node registry (`clickhouse_client::nodes`): a
//! heartbeat row every `nodes::HEARTBEAT` from a thread of its own, and
//! `ingestion-engine nodes`, the fleet as the registry lists it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clickhouse_client::nodes::{self, NodeRow};
use engine_core::config::{Config, Role};
use tracing::{debug, info, warn};

/// The address others reach this node at: `host:port`, with the machine's
/// name for a wildcard host.
fn address(config: &Config) -> String {
    let host = match config.host.as_str() {
        "0.0.0.0" | "::" | "" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| config.host.clone()),
        h => h.to_string(),
    };
    format!("{host}:{}", config.port)
}

fn roles(config: &Config) -> String {
    let mut r: Vec<&str> = config
        .roles
        .iter()
        .map(|r| match r {
            Role::Ingest => "ingest",
            Role::Sink => "sink",
        })
        .collect();
    r.sort_unstable();
    r.dedup();
    r.join(",")
}

/// The fleet as this node last read the registry (after each heartbeat; at
/// most `nodes::MAX_LISTED` rows), for `/metrics` and the on-call page.
#[derive(Debug, Default)]
pub struct Fleet {
    /// The rows and ClickHouse's clock when they were read.
    listed: Mutex<(Vec<NodeRow>, i64)>,
}

impl telemetry::Collector for Fleet {
    fn part(&self) -> &'static str {
        "fleet"
    }

    fn collect(&self, out: &mut telemetry::Exposition<'_>) {
        let (rows, now) = &*self.listed.lock().unwrap_or_else(|p| p.into_inner());
        // The newest process at each address (rows come newest first): a
        // restarted node is the same node to an operator.
        let mut addresses = std::collections::HashSet::new();
        let live_secs = i64::try_from(nodes::LIVE_WITHIN.as_secs()).unwrap_or(i64::MAX);
        let ago: Vec<(String, i64)> = rows
            .iter()
            .filter(|r| addresses.insert(r.address.as_str()))
            .map(|r| {
                (
                    format!("{} {} {}", r.address, r.roles, r.version),
                    now.saturating_sub(r.seen),
                )
            })
            .collect();
        out.labeled_gauge(
            "engine_fleet_node_seen_seconds_ago",
            "Seconds since each engine process last heartbeat into the node registry, as this node last read it (every 10 s); label: address, roles, version.",
            "node",
            &ago,
        );
        let live = ago.iter().filter(|(_, secs)| *secs <= live_secs).count();
        out.gauge(
            "engine_fleet_live_nodes",
            "Addresses whose newest engine process heartbeat into the node registry within the last 30 s.",
            i64::try_from(live).unwrap_or(i64::MAX),
        );
    }
}

/// Starts this process's heartbeat: detached, it lives as long as the
/// process. A registry that cannot be written (ClickHouse down, a database
/// not yet migrated to the registry) is retried at the next beat; the first
/// failure of a run of them is logged. After each beat the fleet is read
/// into `fleet`, and `live_edges` told how many edges it lists as live
/// (for `rate_limits.scope = "cluster"`).
pub fn spawn(
    config: &Config,
    fleet: Arc<Fleet>,
    live_edges: impl Fn(u32) + Send + 'static,
) -> Result<()> {
    let row = NodeRow {
        node_id: uuid::Uuid::new_v4(),
        roles: roles(config),
        version: env!("CARGO_PKG_VERSION").to_string(),
        address: address(config),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        seen: 0,
    };
    let ch = clickhouse_client::Client::from_config(&config.clickhouse, Duration::from_secs(10));
    let db = config.clickhouse.database.clone();
    info!(node = %row.node_id, roles = %row.roles, address = %row.address, "node registry heartbeat");
    std::thread::Builder::new()
        .name("node-registry".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match nodes::heartbeat(&ch, &db, &row) {
                    Ok(()) => {
                        if failing {
                            info!("node registry heartbeat written again");
                        }
                        failing = false;
                    }
                    Err(e) if !failing => {
                        warn!(error = %e, "cannot write this node's heartbeat into the node registry; retrying");
                        failing = true;
                    }
                    Err(e) => debug!(error = %e, "node registry heartbeat failed"),
                }
                match nodes::list(&ch, &db) {
                    Ok(listed) => {
                        let edges = listed
                            .0
                            .iter()
                            .filter(|r| r.is_edge() && r.live(listed.1))
                            .count();
                        live_edges(u32::try_from(edges).unwrap_or(u32::MAX));
                        *fleet.listed.lock().unwrap_or_else(|p| p.into_inner()) = listed;
                    }
                    Err(e) => debug!(error = %e, "cannot read the node registry"),
                }
                std::thread::sleep(nodes::HEARTBEAT);
            }
        })
        .context("starting the node registry heartbeat")?;
    Ok(())
}

/// `ingestion-engine nodes`: the fleet, newest heartbeat first.
pub fn list(config: &Config) -> Result<()> {
    let ch = clickhouse_client::Client::from_config(&config.clickhouse, Duration::from_secs(30));
    let (rows, now) = nodes::list(&ch, &config.clickhouse.database)
        .context("reading the node registry (run `ingestion-engine migrate` first)")?;
    print!("{}", nodes::render(&rows, now));
    Ok(())
}
