//! The node registry: every engine process (edge, sink or both) writes a
//! heartbeat row into `nodes` (migration 10), so `ingestion-engine nodes`
//! and the on-call page list the fleet, and a cluster-wide rate limit can
//! count the live edges.
//!
//! One row per heartbeat; a node is its newest row (`argMax` by `seen`).
//! The table is partitioned by day of `seen` and the retention job drops
//! partitions older than [`KEEP_DAYS`], so a node gone for good leaves the
//! list within a week and the table stays a few rows per node and minute.
//! On a cluster the table is replicated to every node (`schema::cluster`),
//! so any node lists the whole fleet.

use std::fmt::Write as _;
use std::time::Duration;

use uuid::Uuid;

use crate::receipts::quote;
use crate::transport::Client;
use crate::Error;

/// The registry's table, in the engine's database.
pub const TABLE: &str = "nodes";
/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A node whose newest heartbeat is older than this is listed as gone (and
/// not counted as a live edge): three missed heartbeats.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);
/// Days of heartbeats kept (partitions of `seen`'s day older are dropped).
pub const KEEP_DAYS: u32 = 7;
/// Nodes listed at most (the newest first): a bound on the answer.
pub const MAX_LISTED: usize = 1000;
/// Longest role list, version or address stored (bytes, cut on a
/// character boundary): a bound on what one node writes.
const MAX_FIELD_BYTES: usize = 200;

/// The table's columns and engine settings after `ENGINE = `.
pub fn columns() -> &'static str {
    "node_id UUID, roles String, version String, address String, started DateTime, seen DateTime"
}

/// The single-server table.
pub fn table_ddl(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TABLE} ({}) ENGINE = MergeTree \
         PARTITION BY toDate(seen) ORDER BY (node_id, seen)",
        columns()
    )
}

/// One process, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: Uuid,
    /// `ingest`, `sink` or `ingest,sink`.
    pub roles: String,
    pub version: String,
    /// Where it serves (`host:port`).
    pub address: String,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds of its newest heartbeat.
    pub seen: i64,
}

impl NodeRow {
    /// Whether it heartbeat within [`LIVE_WITHIN`] of `now` (Unix seconds).
    pub fn live(&self, now: i64) -> bool {
        now.saturating_sub(self.seen) <= LIVE_WITHIN.as_secs() as i64
    }

    /// Whether it runs the edge.
    pub fn is_edge(&self) -> bool {
        self.roles.split(',').any(|r| r.trim() == "ingest")
    }
}

/// Writes `row`'s heartbeat (its `seen`: the server's `now()`).
pub fn heartbeat(client: &Client, db: &str, row: &NodeRow) -> Result<(), Error> {
    let field = |s: &str| quote(engine_text::clip(s, MAX_FIELD_BYTES));
    client.execute(&format!(
        "INSERT INTO {db}.{TABLE} (node_id, roles, version, address, started, seen) \
         SELECT toUUID({}), {}, {}, {}, toDateTime({}), now()",
        quote(&row.node_id.to_string()),
        field(&row.roles),
        field(&row.version),
        field(&row.address),
        row.started.max(0),
    ))
}

/// The fleet: each node's newest heartbeat, the newest first, at most
/// [`MAX_LISTED`]; and the server's `now()` (Unix seconds) to judge them by.
pub fn list(client: &Client, db: &str) -> Result<(Vec<NodeRow>, i64), Error> {
    let answer = client.query(&format!(
        "SELECT toString(node_id), argMax(roles, seen), argMax(version, seen), argMax(address, seen), \
         toUnixTimestamp(min(started)), toUnixTimestamp(max(seen)), toUnixTimestamp(now()) \
         FROM {db}.{TABLE} GROUP BY node_id ORDER BY max(seen) DESC LIMIT {MAX_LISTED} FORMAT TabSeparated"
    ))?;
    let mut now = 0;
    let mut rows = Vec::new();
    for line in answer.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [id, roles, version, address, started, seen, at] = f[..] else {
            return Err(Error::Protocol(format!(
                "nodes: {:?}",
                engine_text::shown(line, 120)
            )));
        };
        let num = |s: &str| s.parse::<i64>().unwrap_or(0);
        now = num(at);
        rows.push(NodeRow {
            node_id: Uuid::parse_str(id).unwrap_or_default(),
            roles: unescape(roles),
            version: unescape(version),
            address: unescape(address),
            started: num(started),
            seen: num(seen),
        });
    }
    Ok((rows, now))
}

/// A TabSeparated field as its text (`\t`, `\n`, `\\` and `\'` escapes).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The fleet as `ingestion-engine nodes` prints it.
pub fn render(rows: &[NodeRow], now: i64) -> String {
    let mut out = String::from("node                                  roles        version   address                 started (s ago)  seen (s ago)  state\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<37} {:<12} {:<9} {:<23} {:>15}  {:>12}  {}",
            r.node_id,
            r.roles,
            r.version,
            r.address,
            now.saturating_sub(r.started),
            now.saturating_sub(r.seen),
            if r.live(now) { "live" } else { "gone" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_and_roles() {
        let r = NodeRow {
            node_id: Uuid::nil(),
            roles: "ingest,sink".into(),
            version: "0.1.0".into(),
            address: "a:1".into(),
            started: 100,
            seen: 1000,
        };
        assert!(r.live(1030));
        assert!(!r.live(1031));
        assert!(r.is_edge());
        assert!(!NodeRow {
            roles: "sink".into(),
            ..r.clone()
        }
        .is_edge());
        assert!(render(&[r], 1031).contains("gone"));
        assert_eq!(unescape(r"a\tb\\c\'d"), "a\tb\\c'd");
    }
}
