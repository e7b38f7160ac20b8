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

use clickhouse_client::schema::ROLLUPS;
use clickhouse_client::Client;
use time::{Date, Duration as Days};
use tracing::info;

use crate::Error;

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
    let tables: Vec<String> = std::iter::once("events")
        .chain(ROLLUPS.iter().copied())
        .map(|t| format!("'{t}'"))
        .collect();
    let parts = client.query(&format!(
        "SELECT DISTINCT table, partition FROM system.parts WHERE database = '{db}' AND table IN ({}) AND active \
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
            client.execute(&format!("ALTER TABLE {db}.{table} DROP PARTITION {value}"))?;
            info!(table, partition = %value, retention_days = days, "retention: partition dropped");
            report.dropped.push(format!("{table} {value}"));
        } else {
            report.kept += 1;
        }
    }
    info!(dropped = report.dropped.len(), kept = report.kept, %today, "retention run");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

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
