//! The schema on a ClickHouse cluster (`clickhouse.cluster`): the same
//! names for every reader, replicated tables underneath.
//!
//! | name | on each node | replicated |
//! |---|---|---|
//! | `events_local`, `sessions_local`, `pageviews_hourly_local` | the shard's rows | per shard (`/clickhouse/tables/{shard}/…`, replica `{replica}`) |
//! | `events`, `sessions`, `pageviews_hourly` | `Distributed` over the local tables of every shard | — |
//! | `sessions_mv`, `pageviews_hourly_mv` | views from `events_local` into the roll-ups' local tables | — |
//! | `tenants`, `schema_migrations`, `sink_topic_epochs`, `nodes` | every row | to every node (`/clickhouse/tables/all/…`, replica `{shard}-{replica}`) |
//! | `sink_legacy_offsets` | empty (no sink wrote this database before receipts) | — |
//!
//! Readers (the query API, the dashboards, `ingestion-engine` tools) use
//! the `Distributed` names, as on one server. The sink writes each broker
//! partition's rows straight into one shard's `events_local` (the views
//! there fill that shard's roll-ups), never through `Distributed`: the
//! `Distributed` tables have no sharding key, so an `INSERT` into one of a
//! cluster with several shards is refused rather than spread at random.
//!
//! A cluster database is created at [`CLUSTER_BASE_VERSION`], the schema of
//! every migration up to it at once, all `ON CLUSTER` (ClickHouse's
//! distributed DDL: each statement runs on every node, queued in ZooKeeper
//! for one that is down). A migration after it states its own cluster
//! statements. A single-server database is not turned into a cluster one
//! in place: `crates/clickhouse/README.md` ("Moving to a cluster") says how.

use crate::version::ServerVersion;

use super::{
    EVENTS_COLUMNS, LEGACY_OFFSETS, ROLLUP_INDEX_GRANULARITY, ROLLUP_TABLES, TIER_ENUM,
    TOPIC_EPOCHS,
};

/// The migration a cluster database starts at: every one up to it is in
/// [`base_ddl`].
pub const CLUSTER_BASE_VERSION: u32 = 9;

/// Block ids each replicated table of a shard remembers for deduplication
/// (`replicated_deduplication_window`; 18.16's default is 100, a couple of
/// seconds at full rate). Sizing rule: at least the blocks written into one
/// table of one shard over the longest time a block can be retried, i.e.
/// (broker partitions per shard) × (ClickHouse partitions per batch, 1–3:
/// retention classes × days) × (batches per second per partition) × (retry
/// horizon in seconds). With 8 partitions per shard, 3 ClickHouse
/// partitions per batch, a batch per second and 10 minutes that is 14,400;
/// the block ids live in ZooKeeper (about 100 bytes each per table).
/// Deduplication is the second line of defence: the sink's receipts are the
/// first (`crates/worker/README.md`).
pub const DEDUP_WINDOW_BLOCKS: u32 = 20_000;

/// The ZooKeeper path of `table`'s replicas: one per shard, or one for the
/// whole cluster (`all`).
fn zk_path(db: &str, table: &str, per_shard: bool) -> String {
    let shard = if per_shard { "{shard}" } else { "all" };
    format!("/clickhouse/tables/{shard}/{db}/{table}")
}

/// `Replicated<engine>(path, replica, args…)`: per shard, the replica is
/// `{replica}`; replicated to every node, `{shard}-{replica}` (replica
/// names repeat across shards).
fn replicated(engine: &str, db: &str, table: &str, per_shard: bool, args: &str) -> String {
    let replica = if per_shard {
        "{replica}"
    } else {
        "{shard}-{replica}"
    };
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(", {args}")
    };
    format!(
        "Replicated{engine}('{}', '{replica}'{args})",
        zk_path(db, table, per_shard)
    )
}

/// `schema_migrations` on every node of `cluster`.
pub fn migrations_table_ddl(db: &str, cluster: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {cluster} \
         (version UInt32, name String, applied_at DateTime) ENGINE = {} ORDER BY version",
        replicated("MergeTree", db, "schema_migrations", false, "")
    )
}

/// Every statement of a cluster database at [`CLUSTER_BASE_VERSION`], in
/// order, each idempotent and `ON CLUSTER`.
pub fn base_ddl(db: &str, server: ServerVersion, cluster: &str) -> Vec<String> {
    let on = format!("ON CLUSTER {cluster}");
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS {db} {on}"),
        migrations_table_ddl(db, cluster),
    ];
    let columns: Vec<String> = EVENTS_COLUMNS
        .iter()
        .map(|(n, t)| format!("    {n} {t}"))
        .collect();
    let ttl = if server.supports_ttl() {
        "\nTTL event_time + toIntervalDay(retention_days)"
    } else {
        ""
    };
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.events_local {on} (\n{}\n) ENGINE = {}\n\
         PARTITION BY (retention_days, toDate(event_time))\n\
         ORDER BY (tenant_id, event_type, event_time, event_id){ttl}\n\
         SETTINGS replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}",
        columns.join(",\n"),
        replicated("MergeTree", db, "events_local", true, "")
    ));
    out.push(distributed(db, "events", cluster));
    let events_local = format!("{db}.events_local");
    for (name, columns, day, order, ttl, select) in ROLLUP_TABLES {
        let ttl = if server.supports_ttl() {
            format!("\nTTL {ttl}")
        } else {
            String::new()
        };
        let local = format!("{name}_local");
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{local} {on} (\n    {columns}\n) ENGINE = {}\n\
             PARTITION BY (retention_days, {day})\nORDER BY ({order}){ttl}\n\
             SETTINGS index_granularity = {ROLLUP_INDEX_GRANULARITY}, \
             replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}",
            replicated("SummingMergeTree", db, &local, true, "")
        ));
        out.push(distributed(db, name, cluster));
        out.push(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name}_mv {on} TO {db}.{local} AS\n{}",
            select.replace("{events}", &events_local)
        ));
    }
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.tenants {on} (\n    id UUID,\n    name String,\n    tier {TIER_ENUM},\n    \
         retention_days UInt16,\n    api_key_sha256 String,\n    rate_limit_eps UInt32,\n    disabled UInt8,\n    \
         updated_at DateTime,\n    revision UInt64,\n    key_label Array(String),\n    key_kind Array(String),\n    \
         key_sha256 Array(String),\n    key_created_at Array(DateTime),\n    allowed_origins Array(String)\n) \
         ENGINE = {}\nORDER BY id",
        replicated("ReplacingMergeTree", db, "tenants", false, "revision")
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{LEGACY_OFFSETS} {on} (broker_partition Int32, stored Int64) \
         ENGINE = TinyLog"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TOPIC_EPOCHS} {on} (topic String, broker_partition Int32, \
         after_us Int64, from_offset Int64, accepted_at DateTime DEFAULT now()) \
         ENGINE = {} ORDER BY (topic, broker_partition, after_us)",
        replicated("MergeTree", db, TOPIC_EPOCHS, false, "")
    ));
    out
}

/// Migration 10 on a cluster: the node registry ([`crate::nodes`]),
/// replicated to every node.
pub fn nodes_ddl(db: &str, _: ServerVersion, cluster: &str) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.{} ON CLUSTER {cluster} ({}) ENGINE = {} \
         PARTITION BY toDate(seen) ORDER BY (node_id, seen)",
        crate::nodes::TABLE,
        crate::nodes::columns(),
        replicated("MergeTree", db, crate::nodes::TABLE, false, "")
    )]
}

/// `db.name` as a `Distributed` table over every shard's `name_local`.
fn distributed(db: &str, name: &str, cluster: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{name}_local \
         ENGINE = Distributed({cluster}, {db}, {name}_local)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_runs_on_the_cluster_and_is_idempotent() {
        let server = ServerVersion::parse("18.16.1").unwrap();
        let ddl = base_ddl("overwatch", server, "acc");
        for s in &ddl {
            assert!(s.contains(" ON CLUSTER acc"), "{s}");
            assert!(s.contains(" IF NOT EXISTS "), "{s}");
            assert!(!s.contains("TTL"), "18.16 has no TTL: {s}");
        }
        let joined = ddl.join("\n");
        assert!(joined.contains(
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/overwatch/events_local', '{replica}')"
        ));
        assert!(joined.contains(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/all/overwatch/tenants', '{shard}-{replica}', revision)"
        ));
        assert!(joined.contains("ENGINE = Distributed(acc, overwatch, events_local)"));
        assert!(joined.contains("TO overwatch.sessions_local AS"));
        assert!(joined.contains("FROM overwatch.events_local WHERE event_type = 'pageview'"));
        // Every column of one server's events, in its order.
        let events = ddl
            .iter()
            .find(|s| s.contains("events_local ON CLUSTER acc ("))
            .unwrap();
        let mut rest = events.as_str();
        for (name, _) in EVENTS_COLUMNS {
            let at = rest.find(&format!("    {name} ")).expect(name);
            rest = rest.get(at + 1..).unwrap_or_default();
        }
        let modern = ServerVersion::parse("25.8.1").unwrap();
        assert!(base_ddl("overwatch", modern, "acc")
            .iter()
            .any(|s| s.contains("TTL event_time + toIntervalDay(retention_days)")));
    }
}
