//! Database `overwatch`: tables, materialized views and migrations.
//!
//! Migrations are numbered and run in order; `schema_migrations` records each
//! one that ran, so `migrate` is idempotent and upgrades an older database.
//! Every statement is itself idempotent (`IF NOT EXISTS`, an `ADD COLUMN`
//! that finds its column, a roll-up dropped before it is rebuilt), so a
//! migration interrupted half-way simply runs again. The DDL works on ClickHouse 18.16
//! and on modern servers: retention is enforced by dropping partitions
//! everywhere (`events` is partitioned by retention class and day), and a table
//! TTL is added where the server has TTL (19.6+).

use tracing::info;

use crate::transport::Client;
use crate::version::ServerVersion;
use crate::Error;

pub mod cluster;
pub mod lease;

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
    // Migration 5: from `user_agent`, classified by the sink.
    ("browser", "String"),
    ("os", "String"),
    ("device", "String"),
    // Migration 8: which insert of the sink wrote the row (see `receipts`).
    ("insert_id", "UUID"),
];

/// How many of [`EVENTS_COLUMNS`] migration 1 created; later ones are added
/// by the migration that introduced them.
const EVENTS_V1_COLUMNS: usize = 38;
/// How many of [`EVENTS_COLUMNS`] exist after migration 5.
const EVENTS_V5_COLUMNS: usize = 41;

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
    /// Its statements on a cluster (`ON CLUSTER`), for a migration after
    /// [`cluster::CLUSTER_BASE_VERSION`]; `None` up to it (a cluster
    /// database starts with all of them, [`cluster::base_ddl`]).
    pub on_cluster: Option<ClusterStatements>,
}

/// A migration's statements on a cluster, for a server version.
pub type ClusterStatements = fn(db: &str, server: ServerVersion, cluster: &str) -> Vec<String>;

fn events_ddl(db: &str, server: ServerVersion) -> Vec<String> {
    let columns: Vec<String> = EVENTS_COLUMNS[..EVENTS_V1_COLUMNS]
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

/// Tables that migration 7 retires (where 3 built them): partitioned by month, so retention could
/// not drop a retention class's roll-ups.
const RETIRED_ROLLUPS: &[&str] = &[
    "events_per_minute",
    "pageviews_daily",
    "web_vitals_hourly",
    "clicks_daily",
    "scroll_daily",
];

/// Roll-ups the query API reads, each partitioned like `events` by
/// `(retention_days, day)` so retention drops them with the events.
pub const ROLLUPS: &[&str] = &["sessions", "pageviews_hourly"];

// Every view is work on every insert into `events`, so both roll-ups read
// pageviews only (a third of the events or fewer) and keep few states:
// measured on 18.16, each costs 12-31% of the insert they ride on, where a
// view over every event keyed by page, type, name and click target cost 140%.

/// One row per session and day, from its pageviews: what the visit metrics
/// and dimensions need. Summed columns add up, aggregate states merge
/// (SummingMergeTree does both). A session crossing midnight has a row per
/// day; the query API merges them. Browser, OS and device are `any` (one
/// user agent per session).
const SESSIONS_COLUMNS: &str = "tenant_id UUID,\n    day Date,\n    session_id UUID,\n    retention_days UInt16,\n    \
    pageviews UInt64,\n    started AggregateFunction(min, DateTime),\n    \
    ended AggregateFunction(max, DateTime),\n    visitor AggregateFunction(max, String),\n    \
    entry_page AggregateFunction(argMin, String, DateTime),\n    \
    exit_page AggregateFunction(argMax, String, DateTime),\n    \
    referrer AggregateFunction(argMin, String, DateTime),\n    url AggregateFunction(argMin, String, DateTime),\n    \
    browser AggregateFunction(any, String),\n    os AggregateFunction(any, String),\n    \
    device AggregateFunction(any, String)";

const SESSIONS_SELECT: &str = "SELECT tenant_id, toDate(event_time) AS day, session_id, retention_days,\n\
    count() AS pageviews, minState(event_time) AS started, maxState(event_time) AS ended,\n\
    maxState(user_id) AS visitor, argMinState(path, event_time) AS entry_page,\n\
    argMaxState(path, event_time) AS exit_page, argMinState(referrer, event_time) AS referrer,\n\
    argMinState(url, event_time) AS url, anyState(browser) AS browser, anyState(os) AS os,\n\
    anyState(device) AS device\n\
    FROM {events} WHERE event_type = 'pageview' GROUP BY tenant_id, day, session_id, retention_days";

/// One row per tenant, hour and page: pageviews and a `uniq` state of their
/// visitors (the top-pages panel and the pageview time series).
const PAGEVIEWS_HOURLY_COLUMNS: &str =
    "tenant_id UUID,\n    hour DateTime,\n    path String,\n    \
    retention_days UInt16,\n    pageviews UInt64,\n    visitors AggregateFunction(uniq, UInt64)";

const PAGEVIEWS_HOURLY_SELECT: &str = "SELECT tenant_id, toStartOfHour(event_time) AS hour, path, retention_days,\n\
    count() AS pageviews,\n\
    uniqState(if(user_id != '', cityHash64(user_id), cityHash64(reinterpretAsString(session_id)))) AS visitors\n\
    FROM {events} WHERE event_type = 'pageview' GROUP BY tenant_id, hour, path, retention_days";

/// Each roll-up and its view's `SELECT`, reading from `source` (a table, or
/// a subquery in parentheses): what the views push, and what the sink runs
/// to repair a roll-up for exactly one insert's rows.
pub fn rollup_selects(source: &str) -> [(&'static str, String); 2] {
    [
        ("sessions", SESSIONS_SELECT.replace("{events}", source)),
        (
            "pageviews_hourly",
            PAGEVIEWS_HOURLY_SELECT.replace("{events}", source),
        ),
    ]
}

/// Rows per index mark of the roll-ups. A tenant's rows of a day are a few
/// hundred among every tenant's, in each day's partition: with ClickHouse's
/// 8192 a 30-day panel read ~25 times the rows it needed (254k rows for a
/// tenant's 10k sessions, 143 ms); with 1024, 34k rows and 62 ms.
pub const ROLLUP_INDEX_GRANULARITY: u32 = 1024;

/// Each roll-up table: name, columns, its day (the partition's), its
/// `ORDER BY`, its TTL expression, and its view's `SELECT` over `{events}`.
type RollupTable = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// The roll-ups, on one server and (as `*_local`) on a cluster.
const ROLLUP_TABLES: [RollupTable; 2] = [
    (
        "sessions",
        SESSIONS_COLUMNS,
        "day",
        "tenant_id, day, session_id, retention_days",
        "day + toIntervalDay(retention_days + 1)",
        SESSIONS_SELECT,
    ),
    (
        "pageviews_hourly",
        PAGEVIEWS_HOURLY_COLUMNS,
        "toDate(hour)",
        "tenant_id, hour, path, retention_days",
        "hour + toIntervalDay(retention_days)",
        PAGEVIEWS_HOURLY_SELECT,
    ),
];

/// The query API's roll-ups, created empty, attached, then filled from
/// `events`. Each table is dropped first, so a run interrupted half-way
/// starts over instead of counting twice. Run it (`migrate`, or a sink's
/// start) before sinks insert: rows inserted between a view's creation and
/// its backfill would count twice.
fn rollups_ddl(db: &str, server: ServerVersion) -> Vec<String> {
    let mut out = Vec::new();
    for t in RETIRED_ROLLUPS.iter().chain(ROLLUPS) {
        out.push(format!("DROP TABLE IF EXISTS {db}.{t}_mv"));
        out.push(format!("DROP TABLE IF EXISTS {db}.{t}"));
    }
    let events = format!("{db}.events");
    for (name, columns, day, order, ttl, select) in ROLLUP_TABLES {
        let ttl = if server.supports_ttl() {
            format!("\nTTL {ttl}")
        } else {
            String::new()
        };
        let select = select.replace("{events}", &events);
        out.push(format!(
            "CREATE TABLE {db}.{name} (\n    {columns}\n) ENGINE = SummingMergeTree\n\
             PARTITION BY (retention_days, {day})\nORDER BY ({order}){ttl}\n\
             SETTINGS index_granularity = {ROLLUP_INDEX_GRANULARITY}"
        ));
        out.push(format!(
            "CREATE MATERIALIZED VIEW {db}.{name}_mv TO {db}.{name} AS\n{select}"
        ));
        out.push(format!("INSERT INTO {db}.{name} {select}"));
    }
    out
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

/// Browser, OS and device columns, filled by the sink from `user_agent`.
fn agent_columns_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    EVENTS_COLUMNS[EVENTS_V1_COLUMNS..EVENTS_V5_COLUMNS]
        .iter()
        .map(|(n, t)| format!("ALTER TABLE {db}.events ADD COLUMN {n} {t}"))
        .collect()
}

/// The sink's insert receipts (see [`crate::receipts`]): each row names the
/// insert that wrote it, and the offsets an older sink stored are kept
/// where the new one reads them (records at or below are fully stored: the
/// older sink resumed from that maximum). Sinks of an older version must be
/// stopped before this runs (`crates/worker/README.md`).
fn insert_receipts_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    let mut out: Vec<String> = EVENTS_COLUMNS[EVENTS_V5_COLUMNS..]
        .iter()
        .map(|(n, t)| format!("ALTER TABLE {db}.events ADD COLUMN {n} {t}"))
        .collect();
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{LEGACY_OFFSETS} ENGINE = TinyLog AS \
         SELECT broker_partition, max(broker_offset) AS stored FROM {db}.events \
         GROUP BY broker_partition"
    ));
    out
}

/// Per broker partition, the highest offset a sink from before receipts
/// stored (migration 8).
pub const LEGACY_OFFSETS: &str = "sink_legacy_offsets";

/// Per broker partition, the accepted resets of its topic (`ingestion-engine
/// sink accept-reset`): receipts written up to `after_us` belong to a log
/// the broker no longer has (migration 9).
pub const TOPIC_EPOCHS: &str = "sink_topic_epochs";

/// The table of accepted topic resets (see [`TOPIC_EPOCHS`]). A MergeTree,
/// not a Log table: sinks read it while an operator writes it.
fn topic_epochs_ddl(db: &str, _: ServerVersion) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TOPIC_EPOCHS} (topic String, broker_partition Int32, \
         after_us Int64, from_offset Int64, accepted_at DateTime DEFAULT now()) \
         ENGINE = MergeTree ORDER BY (topic, broker_partition, after_us)"
    )]
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
        on_cluster: None,
    },
    Migration {
        version: 2,
        name: "tenants",
        statements: tenants_ddl,
        on_cluster: None,
    },
    Migration {
        version: 3,
        name: "dashboard_views",
        // Its month-partitioned roll-ups are gone: migration 7 drops them
        // where they exist and builds the ones retention can drop.
        statements: |_, _| Vec::new(),
        on_cluster: None,
    },
    Migration {
        version: 4,
        name: "tenant_keys_and_origins",
        statements: tenant_keys_ddl,
        on_cluster: None,
    },
    Migration {
        version: 5,
        name: "agent_columns",
        statements: agent_columns_ddl,
        on_cluster: None,
    },
    Migration {
        version: 6,
        name: "rollups_by_retention",
        // Its roll-ups had ClickHouse's default index granularity: migration
        // 7 rebuilds them, so a database migrating now builds them once.
        statements: |_, _| Vec::new(),
        on_cluster: None,
    },
    Migration {
        version: 7,
        name: "rollups_fine_granularity",
        statements: rollups_ddl,
        on_cluster: None,
    },
    Migration {
        version: 8,
        name: "insert_receipts",
        statements: insert_receipts_ddl,
        on_cluster: None,
    },
    Migration {
        version: 9,
        name: "topic_epochs",
        statements: topic_epochs_ddl,
        on_cluster: None,
    },
    Migration {
        version: 10,
        name: "node_registry",
        statements: |db, _| vec![crate::nodes::table_ddl(db)],
        on_cluster: Some(cluster::nodes_ddl),
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

/// How long one migration statement may run: a backfill of migration 7 on
/// a database within retention (3 min 20 s for 10M events on 2 cores).
pub const MIGRATION_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

fn done_migrations(client: &Client, db: &str) -> Result<Vec<u32>, Error> {
    Ok(client
        .query(&format!(
            "SELECT DISTINCT version FROM {db}.schema_migrations FORMAT TabSeparated"
        ))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Creates or upgrades database `db`; runs each missing migration once,
/// holding the database's [migration lease](lease) while it does. Each
/// statement may take up to [`MIGRATION_STATEMENT_TIMEOUT`] (a backfill of a
/// large `events`), whatever bound `client` has.
pub fn migrate(client: &Client, db: &str) -> Result<MigrateReport, Error> {
    migrate_unless_stopped(client, db, &|| false)
}

/// [`migrate`], giving up with [`Error::Stopped`] if `stop` says so while it
/// waits for another migrator.
pub fn migrate_unless_stopped(
    client: &Client,
    db: &str,
    stop: &dyn Fn() -> bool,
) -> Result<MigrateReport, Error> {
    let client = &client.with_timeout(MIGRATION_STATEMENT_TIMEOUT);
    let server = client.version()?;
    client.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
    client.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog"
    ))?;
    let mut report = MigrateReport {
        server,
        applied: Vec::new(),
        already: Vec::new(),
    };
    let pending = |done: &[u32]| MIGRATIONS.iter().any(|m| !done.contains(&m.version));
    if pending(&done_migrations(client, db)?) {
        lease::with_lease(client, db, stop, || {
            run_pending(client, db, server, &mut report)
        })?;
    } else {
        report.already = MIGRATIONS.iter().map(|m| m.version).collect();
    }
    Ok(report)
}

/// Where [`migrate_to`] creates or upgrades the database.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One server: the client's.
    Single,
    /// A cluster: every statement `ON CLUSTER name` ([`cluster`]). The
    /// migration lease lives on `lease`'s server, which must be the same for
    /// every migrator: the first replica of the first shard
    /// (`clickhouse.shards[0].replicas[0]`).
    Cluster { name: &'a str, lease: &'a Client },
}

/// How long one distributed DDL statement waits for every node to run it
/// (`distributed_ddl_task_timeout`; 18.16's default is 180 s). A node that
/// is down runs it when it is back, but `migrate` fails and records
/// nothing: run it again once every node is up.
pub const CLUSTER_DDL_TIMEOUT_SECS: u64 = 60;
/// How long `migrate` waits for this node's copy of `schema_migrations` to
/// catch up before reading it (a stale read only repeats idempotent work).
const SYNC_REPLICA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// ClickHouse's "database doesn't exist".
const UNKNOWN_DATABASE: u32 = 81;
/// ClickHouse's "table doesn't exist".
const UNKNOWN_TABLE: u32 = 60;

/// [`migrate_unless_stopped`] on `target`: one server or a cluster.
pub fn migrate_to(
    client: &Client,
    db: &str,
    target: Target<'_>,
    stop: &dyn Fn() -> bool,
) -> Result<MigrateReport, Error> {
    match target {
        Target::Single => migrate_unless_stopped(client, db, stop),
        Target::Cluster { name, lease } => migrate_cluster(client, db, name, lease, stop),
    }
}

fn migrate_cluster(
    client: &Client,
    db: &str,
    name: &str,
    lease_client: &Client,
    stop: &dyn Fn() -> bool,
) -> Result<MigrateReport, Error> {
    let client = &client.with_timeout(MIGRATION_STATEMENT_TIMEOUT);
    let server = client.version()?;
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let pending = |done: &[u32]| all.iter().any(|v| !done.contains(v));
    refuse_single_server(client, db, name)?;
    // Nothing to do: no distributed DDL at all (a node may be down).
    match done_migrations(client, db) {
        Ok(done) if !pending(&done) => {
            return Ok(MigrateReport {
                server,
                applied: Vec::new(),
                already: all,
            })
        }
        Ok(_) => {}
        Err(Error::Server {
            code: Some(UNKNOWN_DATABASE | UNKNOWN_TABLE),
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    let timeout = CLUSTER_DDL_TIMEOUT_SECS.to_string();
    let ddl = |sql: &str| {
        client
            .query_with_settings(sql, &[("distributed_ddl_task_timeout", timeout.as_str())])
            .map(drop)
    };
    ddl(&format!(
        "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {name}"
    ))?;
    ddl(&cluster::migrations_table_ddl(db, name))?;
    let mut report = MigrateReport {
        server,
        applied: Vec::new(),
        already: Vec::new(),
    };
    lease::with_lease(lease_client, db, stop, || {
        // Another migrator may have just finished, on another node.
        if let Err(e) = client
            .with_timeout(SYNC_REPLICA_TIMEOUT)
            .execute(&format!("SYSTEM SYNC REPLICA {db}.schema_migrations"))
        {
            tracing::warn!(error = %e, "schema_migrations did not catch up; reading it as it is");
        }
        let done = done_migrations(client, db)?;
        let record = |versions: &[&Migration]| -> Result<(), Error> {
            let rows: Vec<String> = versions
                .iter()
                .map(|m| format!("({}, '{}', now())", m.version, m.name))
                .collect();
            client.execute(&format!(
                "INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES {}",
                rows.join(", ")
            ))
        };
        let base: Vec<&Migration> = MIGRATIONS
            .iter()
            .filter(|m| m.version <= cluster::CLUSTER_BASE_VERSION)
            .collect();
        if base.iter().any(|m| !done.contains(&m.version)) {
            for stmt in cluster::base_ddl(db, server, name) {
                ddl(&stmt)?;
            }
            let missing: Vec<&Migration> = base
                .iter()
                .copied()
                .filter(|m| !done.contains(&m.version))
                .collect();
            record(&missing)?;
            report.applied.extend(missing.iter().map(|m| m.version));
            info!(version = cluster::CLUSTER_BASE_VERSION, cluster = name, %server, "cluster schema created");
        } else {
            report.already.extend(base.iter().map(|m| m.version));
        }
        for m in MIGRATIONS
            .iter()
            .filter(|m| m.version > cluster::CLUSTER_BASE_VERSION)
        {
            if done.contains(&m.version) {
                report.already.push(m.version);
                continue;
            }
            let statements = m.on_cluster.ok_or_else(|| {
                Error::Protocol(format!(
                    "migration {} ({}) has no cluster statements",
                    m.version, m.name
                ))
            })?;
            for stmt in statements(db, server, name) {
                ddl(&stmt)?;
            }
            record(&[m])?;
            info!(version = m.version, name = m.name, cluster = name, %server, "migration applied");
            report.applied.push(m.version);
        }
        Ok(())
    })?;
    Ok(report)
}

/// [`migrate_to`] the configured ClickHouse: `client`'s server, or
/// `config.cluster` with the lease on its first listed replica.
pub fn migrate_configured(
    client: &Client,
    config: &engine_core::config::ClickhouseConfig,
    stop: &dyn Fn() -> bool,
) -> Result<MigrateReport, Error> {
    let db = &config.database;
    let Some(first) = config.shards.first().and_then(|s| s.replicas.first()) else {
        return migrate_unless_stopped(client, db, stop);
    };
    if !config.is_cluster() {
        return migrate_unless_stopped(client, db, stop);
    }
    let lease = Client::for_node(config, first.as_str(), lease::HEARTBEAT * 2);
    migrate_to(
        client,
        db,
        Target::Cluster {
            name: &config.cluster,
            lease: &lease,
        },
        stop,
    )
}

/// Refuses a database this node holds as a single server's (an `events`
/// that is not `Distributed`): it is not turned into a cluster's in place.
fn refuse_single_server(client: &Client, db: &str, cluster: &str) -> Result<(), Error> {
    let engine = client.query(&format!(
        "SELECT engine FROM system.tables WHERE database = {} AND name = 'events' FORMAT TabSeparated",
        crate::receipts::quote(db)
    ))?;
    let engine = engine.trim();
    if engine.is_empty() || engine == "Distributed" {
        return Ok(());
    }
    Err(Error::SingleServerSchema {
        db: db.to_string(),
        cluster: cluster.to_string(),
        engine: engine_text::shown(engine, 40).into_owned(),
    })
}

fn run_pending(
    client: &Client,
    db: &str,
    server: ServerVersion,
    report: &mut MigrateReport,
) -> Result<(), Error> {
    // Read again under the lock: another migrator may have just finished.
    let done = done_migrations(client, db)?;
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
    Ok(())
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
        assert_eq!(EVENTS_COLUMNS[EVENTS_V1_COLUMNS - 1].0, "broker_offset");
        assert_eq!(EVENTS_COLUMNS[EVENTS_V5_COLUMNS - 1].0, "device");
        assert_eq!(rollup_selects("x")[0].0, ROLLUPS[0]);
        assert_eq!(rollup_selects("x")[1].0, ROLLUPS[1]);
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
