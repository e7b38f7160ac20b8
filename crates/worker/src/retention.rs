//! Retention: drop whole partitions of `events` and of its roll-ups once every
//! row in them is past its retention.
//!
//! `events` is partitioned by `(retention_days, toDate(event_time))`, and each
//! roll-up the query API reads ([`ROLLUPS`]) by `(retention_days, day)` of the
//! events it sums, so a partition holds one retention class and one day, and a
//! tenant's roll-ups go with its events. Partition `(R, D)` is
//! dropped once `D + R + 1 <= today`: its newest possible row (23:59:59 on day
//! D) is then older than R days. A row therefore lives at most R + 1 days past
//! its event time, plus the job interval; free tier (R = 1): gone within 48 h
//! plus one interval. Servers with TTL (19.6+) also expire rows by TTL.
//!
//! On a cluster (`clickhouse.cluster`) the partitions are the local tables'
//! (`events_local`, `sessions_local`, `pageviews_hourly_local`), listed on
//! every shard (`cluster()` over `system.parts`) and dropped `ON CLUSTER`,
//! so on every replica; a replica that is down drops them when it is back
//! (the distributed DDL queue), and a replicated drop reaches it anyway.
//!
//! Dropping is the one destructive thing the sink does, so the job takes
//! "today" from two clocks: it runs only while this node's clock and
//! ClickHouse's agree within [`MAX_CLOCK_SKEW_SECS`] (a node whose clock
//! jumped two days ahead would otherwise drop the free tier's live data).

use clickhouse_client::schema::ROLLUPS;
use clickhouse_client::Client;
use time::{Date, Duration as Days};
use tracing::info;

use crate::Error;

/// Largest disagreement between this node's clock and ClickHouse's, in
/// seconds, under which the retention job still runs.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Today (UTC) by this node's clock, checked against ClickHouse's: the
/// earlier of the two dates, or [`Error::ClockSkew`] when the clocks are
/// more than [`MAX_CLOCK_SKEW_SECS`] apart.
pub fn today(client: &Client) -> Result<Date, Error> {
    let ours = time::OffsetDateTime::now_utc();
    let theirs: i64 = client
        .query("SELECT toUnixTimestamp(now()) FORMAT TabSeparated")?
        .trim()
        .parse()
        .map_err(|e| clickhouse_client::Error::Protocol(format!("now(): {e}")))?;
    checked_today(ours, theirs)
}

fn checked_today(ours: time::OffsetDateTime, theirs_unix: i64) -> Result<Date, Error> {
    let skew_secs = ours.unix_timestamp() - theirs_unix;
    if skew_secs.abs() > MAX_CLOCK_SKEW_SECS {
        return Err(Error::ClockSkew {
            skew_secs,
            max_secs: MAX_CLOCK_SKEW_SECS,
        });
    }
    let theirs = time::OffsetDateTime::from_unix_timestamp(theirs_unix).unwrap_or(ours);
    Ok(ours.date().min(theirs.date()))
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partitions dropped, as `table (retention_days, 'YYYY-MM-DD')`.
    pub dropped: Vec<String>,
    /// Partitions kept.
    pub kept: usize,
}

/// Parses a partition value of `events` as ClickHouse prints it:
/// `(90,'2026-11-27')`.
fn parse_partition(p: &str) -> Option<(u32, Date)> {
    let inner = p.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (days, date) = inner.split_once(',')?;
    let days = days.trim().parse().ok()?;
    let date = date.trim().trim_matches('\'');
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Some((days, Date::parse(date, &fmt).ok()?))
}

/// Whether partition `(retention_days, day)` is wholly expired on `today`.
pub fn expired(retention_days: u32, day: Date, today: Date) -> bool {
    day.checked_add(Days::days(i64::from(retention_days) + 1))
        .is_some_and(|end| end <= today)
}

/// Drops every expired partition of `db.events` and its roll-ups as of `today`.
pub fn run_once(client: &Client, db: &str, today: Date) -> Result<RetentionReport, Error> {
    run_once_on(client, db, None, today)
}

/// [`run_once`] on one server (`cluster` `None`) or on every node of
/// `cluster`.
pub fn run_once_on(
    client: &Client,
    db: &str,
    cluster: Option<&str>,
    today: Date,
) -> Result<RetentionReport, Error> {
    let suffix = if cluster.is_some() { "_local" } else { "" };
    let tables: Vec<String> = std::iter::once("events")
        .chain(ROLLUPS.iter().copied())
        .map(|t| format!("'{t}{suffix}'"))
        .collect();
    let (parts_of, on) = match cluster {
        Some(c) => (
            format!("cluster('{c}', system, parts)"),
            format!(" ON CLUSTER {c}"),
        ),
        None => ("system.parts".to_string(), String::new()),
    };
    let parts = client.query(&format!(
        "SELECT DISTINCT table, partition FROM {parts_of} WHERE database = '{db}' AND table IN ({}) AND active \
         ORDER BY table, partition FORMAT TabSeparated",
        tables.join(", ")
    ))?;
    let mut report = RetentionReport::default();
    for line in parts.lines() {
        let Some((table, value)) = line.split_once('\t') else {
            continue;
        };
        // TabSeparated escapes the quotes' backslashes; the value has none.
        let value = value.replace("\\'", "'");
        let Some((days, day)) = parse_partition(&value) else {
            report.kept += 1;
            continue;
        };
        if expired(days, day, today) {
            let timeout = clickhouse_client::schema::CLUSTER_DDL_TIMEOUT_SECS.to_string();
            client.query_with_settings(
                &format!("ALTER TABLE {db}.{table}{on} DROP PARTITION {value}"),
                &[("distributed_ddl_task_timeout", timeout.as_str())],
            )?;
            info!(table, partition = %value, retention_days = days, "retention: partition dropped");
            report.dropped.push(format!("{table} {value}"));
        } else {
            report.kept += 1;
        }
    }
    // The node registry keeps a week of heartbeats, by ClickHouse's clock
    // (an operator's `--today` is about the events' retention, not this).
    let registry = client.query(&format!(
        "SELECT DISTINCT partition, toString(today()) FROM {parts_of} WHERE database = '{db}' \
         AND table = '{nodes}' AND active ORDER BY partition FORMAT TabSeparated",
        nodes = clickhouse_client::nodes::TABLE,
    ))?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    for line in registry.lines() {
        let Some((value, server_today)) = line.split_once('\t') else {
            continue;
        };
        let date = value.trim().trim_matches(|c| c == '\\' || c == '\'');
        // Only a date goes into the statement.
        let (Ok(day), Ok(server_today)) =
            (Date::parse(date, &fmt), Date::parse(server_today, &fmt))
        else {
            continue;
        };
        if !expired(clickhouse_client::nodes::KEEP_DAYS - 1, day, server_today) {
            continue;
        }
        let timeout = clickhouse_client::schema::CLUSTER_DDL_TIMEOUT_SECS.to_string();
        client.query_with_settings(
            &format!(
                "ALTER TABLE {db}.{}{on} DROP PARTITION '{date}'",
                clickhouse_client::nodes::TABLE
            ),
            &[("distributed_ddl_task_timeout", timeout.as_str())],
        )?;
        report
            .dropped
            .push(format!("{} '{date}'", clickhouse_client::nodes::TABLE));
    }
    info!(dropped = report.dropped.len(), kept = report.kept, %today, "retention run");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn today_needs_both_clocks_to_agree() {
        let noon = time::macros::datetime!(2026-11-28 12:00 UTC);
        let t = noon.unix_timestamp();
        assert_eq!(checked_today(noon, t + 60).unwrap(), date!(2026 - 11 - 28));
        // Just past midnight here, not yet there: the earlier day.
        let midnight = time::macros::datetime!(2026-11-29 00:00:30 UTC);
        let m = midnight.unix_timestamp();
        assert_eq!(
            checked_today(midnight, m - 60).unwrap(),
            date!(2026 - 11 - 28)
        );
        for off in [2 * 86_400, -86_400, MAX_CLOCK_SKEW_SECS + 1] {
            assert!(
                matches!(
                    checked_today(noon, t - off),
                    Err(Error::ClockSkew { skew_secs, .. }) if skew_secs == off
                ),
                "{off}"
            );
        }
    }

    #[test]
    fn partitions_expire_a_day_after_their_retention() {
        assert_eq!(
            parse_partition("(90,'2026-11-27')"),
            Some((90, date!(2026 - 11 - 27)))
        );
        assert_eq!(
            parse_partition("(1, '2026-01-02')"),
            Some((1, date!(2026 - 01 - 02)))
        );
        assert_eq!(parse_partition("tuple()"), None);
        // Free tier: rows of Nov 25 go on Nov 27 (within 48 h), not before.
        assert!(!expired(1, date!(2026 - 11 - 25), date!(2026 - 11 - 26)));
        assert!(expired(1, date!(2026 - 11 - 25), date!(2026 - 11 - 27)));
        assert!(!expired(90, date!(2026 - 08 - 29), date!(2026 - 11 - 27)));
        assert!(expired(90, date!(2026 - 08 - 28), date!(2026 - 11 - 27)));
    }
}
