//! Database `overwatch`: tables, materialized views and migrations.
//!
//! Migrations are numbered and run in order; `schema_migrations` records each
//! one that ran, so `migrate` is idempotent and upgrades an older database.
//! Every statement is itself idempotent (`IF NOT EXISTS`), so a migration
//! interrupted half-way simply runs again. The DDL works on ClickHouse 18.16
//! and on modern servers: retention is enforced by dropping partitions
//! everywhere (`events` is partitioned by retention class and day), and a table
//! TTL is added where the server has TTL (19.6+).

use tracing::info;

use crate::transport::Client;
use crate::version::ServerVersion;
use crate::Error;

/// The `events` table's columns, in order: the DDL and the Native encoder
/// are both generated from this list.
pub const EVENTS_COLUMNS: &[(&str, &str)] = &[
    ("tenant_id", "UUID"),
    ("event_id", "UUID"),
    ("session_id", "UUID"),
    ("batch_id", "UUID"),
    ("event_type", EVENT_TYPE_ENUM),
    ("event_time", "DateTime"),
    ("event_time_us", "Int64"),
    ("client_time_us", "Int64"),
    ("received_at", "DateTime"),
    ("received_at_us", "Int64"),
    ("tier", TIER_ENUM),
    ("retention_days", "UInt16"),
    ("user_id", "String"),
    ("url", "String"),
    ("path", "String"),
    ("referrer", "String"),
    ("title", "String"),
    ("user_agent", "String"),
    ("locale", "String"),
    ("screen_width", "Nullable(UInt32)"),
    ("screen_height", "Nullable(UInt32)"),
    ("selector", "String"),
    ("element", "String"),
    ("text", "String"),
    ("href", "String"),
    ("x", "Nullable(Float64)"),
    ("y", "Nullable(Float64)"),
    ("depth_pct", "Nullable(Float64)"),
    ("lcp", "Nullable(Float64)"),
    ("fcp", "Nullable(Float64)"),
    ("inp", "Nullable(Float64)"),
    ("cls", "Nullable(Float64)"),
    ("ttfb", "Nullable(Float64)"),
    ("fid", "Nullable(Float64)"),
    ("name", "String"),
    ("properties", "String"),
    ("broker_partition", "Int32"),
    ("broker_offset", "Int64"),
];

/// `event_type` codes match `engine_core::EventType`.
pub const EVENT_TYPE_ENUM: &str =
    "Enum8('pageview' = 0, 'click' = 1, 'scroll' = 2, 'performance' = 3, 'custom' = 4)";
/// `tier` codes match [`crate::native::tier_code`].
pub const TIER_ENUM: &str = "Enum8('free' = 0, 'paid' = 1, 'enterprise' = 2)";

/// One migration: a number, a name, and its statements for a server version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: fn(db: &str, server: ServerVersion) -> Vec<String>,
}

fn events_ddl(db: &str, server: ServerVersion) -> Vec<String> {
    let columns: Vec<String> = EVENTS_COLUMNS
        .iter()
        .map(|(n, t)| format!("    {n} {t}"))
        .collect();
    let ttl = if server.supports_ttl() {
        "\nTTL event_time + toIntervalDay(retention_days)"
    } else {
        ""
    };
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.events (\n{}\n) ENGINE = MergeTree\n\
         PARTITION BY (retention_days, toDate(event_time))\n\
         ORDER BY (tenant_id, event_type, event_time, event_id){ttl}",
        columns.join(",\n")
    )]
}

fn tenants_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.tenants (\n    id UUID,\n    name String,\n    tier {TIER_ENUM},\n    \
         retention_days UInt16,\n    api_key_sha256 String,\n    rate_limit_eps UInt32,\n    disabled UInt8,\n    \
         updated_at DateTime,\n    revision UInt64\n) ENGINE = ReplacingMergeTree(revision)\nORDER BY id"
    )]
}

fn views_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    vec![
        // Events per minute by tenant and type.
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.events_per_minute (\n    tenant_id UUID,\n    event_type {EVENT_TYPE_ENUM},\n    \
             minute DateTime,\n    events UInt64\n) ENGINE = SummingMergeTree\nPARTITION BY toYYYYMM(minute)\n\
             ORDER BY (tenant_id, event_type, minute)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_per_minute_mv TO {db}.events_per_minute AS\n\
             SELECT tenant_id, event_type, toStartOfMinute(event_time) AS minute, count() AS events\n\
             FROM {db}.events GROUP BY tenant_id, event_type, minute"
        ),
        // Pageviews and unique sessions by tenant, day and path.
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.pageviews_daily (\n    tenant_id UUID,\n    day Date,\n    path String,\n    \
             pageviews AggregateFunction(count),\n    sessions AggregateFunction(uniq, UUID)\n) ENGINE = AggregatingMergeTree\n\
             PARTITION BY toYYYYMM(day)\nORDER BY (tenant_id, day, path)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.pageviews_daily_mv TO {db}.pageviews_daily AS\n\
             SELECT tenant_id, toDate(event_time) AS day, path, countState() AS pageviews, uniqState(session_id) AS sessions\n\
             FROM {db}.events WHERE event_type = 'pageview' GROUP BY tenant_id, day, path"
        ),
        // Web-vitals quantiles by tenant, hour and metric.
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.web_vitals_hourly (\n    tenant_id UUID,\n    hour DateTime,\n    metric String,\n    \
             quantiles AggregateFunction(quantiles(0.5, 0.75, 0.95, 0.99), Float64),\n    samples AggregateFunction(count)\n\
             ) ENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMM(hour)\nORDER BY (tenant_id, hour, metric)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.web_vitals_hourly_mv TO {db}.web_vitals_hourly AS\n\
             SELECT tenant_id, toStartOfHour(event_time) AS hour, metric,\n\
             quantilesState(0.5, 0.75, 0.95, 0.99)(assumeNotNull(value)) AS quantiles, countState() AS samples\n\
             FROM {db}.events\n\
             ARRAY JOIN ['lcp', 'fcp', 'inp', 'cls', 'ttfb', 'fid'] AS metric, [lcp, fcp, inp, cls, ttfb, fid] AS value\n\
             WHERE event_type = 'performance' AND isNotNull(value)\n\
             GROUP BY tenant_id, hour, metric"
        ),
        // Clicks by tenant, day, path and target.
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.clicks_daily (\n    tenant_id UUID,\n    day Date,\n    path String,\n    \
             target String,\n    clicks UInt64\n) ENGINE = SummingMergeTree\nPARTITION BY toYYYYMM(day)\n\
             ORDER BY (tenant_id, day, path, target)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.clicks_daily_mv TO {db}.clicks_daily AS\n\
             SELECT tenant_id, toDate(event_time) AS day, path, if(selector != '', selector, element) AS target, count() AS clicks\n\
             FROM {db}.events WHERE event_type = 'click' GROUP BY tenant_id, day, path, target"
        ),
        // Scroll depth by tenant, day and path.
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.scroll_daily (\n    tenant_id UUID,\n    day Date,\n    path String,\n    \
             scrolls AggregateFunction(count),\n    depth_avg AggregateFunction(avg, Float64),\n    \
             depth_quantiles AggregateFunction(quantiles(0.5, 0.9), Float64)\n) ENGINE = AggregatingMergeTree\n\
             PARTITION BY toYYYYMM(day)\nORDER BY (tenant_id, day, path)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.scroll_daily_mv TO {db}.scroll_daily AS\n\
             SELECT tenant_id, toDate(event_time) AS day, path, countState() AS scrolls,\n\
             avgState(assumeNotNull(depth_pct)) AS depth_avg, quantilesState(0.5, 0.9)(assumeNotNull(depth_pct)) AS depth_quantiles\n\
             FROM {db}.events WHERE event_type = 'scroll' AND isNotNull(depth_pct) GROUP BY tenant_id, day, path"
        ),
    ]
}

/// Keys with kinds and allowed origins, as parallel arrays in the tenant
/// row, so that a tenant's whole state is one row of one revision.
/// `api_key_sha256` stays: a non-empty one is a tenant's secret key from
/// before key kinds.
fn tenant_keys_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    [
        "key_label Array(String)",
        "key_kind Array(String)",
        "key_sha256 Array(String)",
        "key_created_at Array(DateTime)",
        "allowed_origins Array(String)",
    ]
    .iter()
    .map(|c| format!("ALTER TABLE {db}.tenants ADD COLUMN {c}"))
    .collect()
}

/// ClickHouse's code for "column with this name already exists": an
/// `ADD COLUMN` that ran before a crash ended its migration (18.16 has no
/// `ADD COLUMN IF NOT EXISTS`).
const DUPLICATE_COLUMN: u32 = 44;

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        statements: events_ddl,
    },
    Migration {
        version: 2,
        name: "tenants",
        statements: tenants_ddl,
    },
    Migration {
        version: 3,
        name: "dashboard_views",
        statements: views_ddl,
    },
    Migration {
        version: 4,
        name: "tenant_keys_and_origins",
        statements: tenant_keys_ddl,
    },
];

/// All statements of a fresh install, for inspection and the chdb check.
pub fn full_ddl(db: &str, server: ServerVersion) -> Vec<String> {
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {db}")];
    for m in MIGRATIONS {
        out.extend((m.statements)(db, server));
    }
    out
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub server: ServerVersion,
    pub applied: Vec<u32>,
    pub already: Vec<u32>,
}

/// Creates or upgrades database `db`; runs each missing migration once.
pub fn migrate(client: &Client, db: &str) -> Result<MigrateReport, Error> {
    let server = client.version()?;
    client.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
    client.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog"
    ))?;
    let done: Vec<u32> = client
        .query(&format!(
            "SELECT DISTINCT version FROM {db}.schema_migrations FORMAT TabSeparated"
        ))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut report = MigrateReport {
        server,
        applied: Vec::new(),
        already: Vec::new(),
    };
    for m in MIGRATIONS {
        if done.contains(&m.version) {
            report.already.push(m.version);
            continue;
        }
        for stmt in (m.statements)(db, server) {
            match client.execute(&stmt) {
                Err(Error::Server {
                    code: Some(DUPLICATE_COLUMN),
                    ..
                }) if stmt.contains(" ADD COLUMN ") => {}
                other => other?,
            }
        }
        client.execute(&format!(
            "INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES ({}, '{}', now())",
            m.version, m.name
        ))?;
        info!(version = m.version, name = m.name, %server, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_only_where_supported() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        let new = ServerVersion::parse("25.8.1").unwrap();
        assert!(!events_ddl("db", old)[0].contains("TTL"));
        assert!(events_ddl("db", new)[0].contains("TTL event_time + toIntervalDay(retention_days)"));
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
