//! The wire shape and [`parse`]: the checks that need the whole request.

use serde::Deserialize;

use super::filters::parse_filters;
use super::{bad, shown};
use super::{
    Dimension, Direction, Metric, OrderKey, Query, Range, DEFAULT_LIMIT, MAX_BREAKDOWNS,
    MAX_DIMENSIONS, MAX_LIMIT, MAX_METRICS, MAX_RANGE_DAYS, REALTIME_SECS,
};
use crate::QueryError;

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRange {
    Named(String),
    Between(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    metrics: Vec<String>,
    date_range: RawRange,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    breakdowns: Vec<String>,
    #[serde(default)]
    filters: Vec<(String, String, Vec<String>)>,
    #[serde(default)]
    order_by: Vec<(String, String)>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    timezone: Option<String>,
}

/// Start of the day containing `now` (Unix seconds) in `zone`.
fn start_of_day(zone: &str, now: i64) -> Option<i64> {
    use chrono::{TimeZone, Timelike};
    let tz: chrono_tz::Tz = zone.parse().ok()?;
    let local = tz.timestamp_opt(now, 0).single()?;
    Some(now - i64::from(local.num_seconds_from_midnight()))
}

fn parse_instant(s: &str) -> Option<i64> {
    if let Some(us) = engine_core::timestamp::parse_rfc3339_us(s) {
        return Some(us.div_euclid(1_000_000));
    }
    // A bare date: midnight UTC.
    let date =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

fn parse_range(raw: &RawRange, zone: &str, now: i64) -> Result<Range, QueryError> {
    let day = 86_400;
    let range = match raw {
        RawRange::Named(name) => match name.as_str() {
            "realtime" => Range {
                from: now - REALTIME_SECS,
                to: now + 1,
                open: true,
            },
            "day" | "7d" | "30d" => {
                let today = start_of_day(zone, now).ok_or_else(|| bad("unknown timezone"))?;
                let days = match name.as_str() {
                    "day" => 1,
                    "7d" => 7,
                    _ => 30,
                };
                Range {
                    from: today - (days - 1) * day,
                    to: now + 1,
                    open: true,
                }
            }
            other => {
                return Err(bad(format!(
                    "date_range {} is not one of realtime, day, 7d, 30d, or [from, to]",
                    shown(other)
                )))
            }
        },
        RawRange::Between(pair) => {
            let [from, to] = pair.as_slice() else {
                return Err(bad(
                    "date_range must be [from, to] (RFC 3339 or YYYY-MM-DD)",
                ));
            };
            let parse = |s: &str, which: &str| {
                parse_instant(s).ok_or_else(|| {
                    bad(format!(
                        "date_range {which} {} is not RFC 3339 or YYYY-MM-DD",
                        shown(s)
                    ))
                })
            };
            Range {
                from: parse(from, "start")?,
                to: parse(to, "end")?,
                open: false,
            }
        }
    };
    if range.to <= range.from {
        return Err(bad("date_range must end after it starts"));
    }
    if range.to - range.from > MAX_RANGE_DAYS * day {
        return Err(bad(format!(
            "date_range spans more than {MAX_RANGE_DAYS} days"
        )));
    }
    Ok(range)
}

/// A dimension by name.
pub(super) fn parse_dimension(d: &str) -> Result<Dimension, QueryError> {
    Dimension::parse(d).ok_or_else(|| {
        bad(format!(
            "unknown dimension {} (one of {})",
            shown(d),
            Dimension::names()
        ))
    })
}

/// Parses and validates a request body at `now` (Unix seconds).
pub fn parse(body: &[u8], now: i64) -> Result<Query, QueryError> {
    // Checked before sonic-rs sees it: it does not check UTF-8 everywhere
    // (core's `parse_envelope` says where).
    let body = std::str::from_utf8(body).map_err(|e| {
        bad(format!(
            "the request is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let raw: RawQuery = sonic_rs::from_str(body).map_err(|e| {
        // sonic-rs messages quote the input around the error; keep them short.
        let m = e.to_string();
        let m = engine_text::shown(&m, 200);
        bad(format!("the request is not a valid query: {m}"))
    })?;
    if raw.metrics.is_empty() || raw.metrics.len() > MAX_METRICS {
        return Err(bad(format!("give 1 to {MAX_METRICS} metrics")));
    }
    let metrics = raw
        .metrics
        .iter()
        .map(|m| Metric::parse(m).ok_or_else(|| bad(format!("unknown metric {}", shown(m)))))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.dimensions.len() > MAX_DIMENSIONS {
        return Err(bad(format!("give at most {MAX_DIMENSIONS} dimensions")));
    }
    let dimensions = raw
        .dimensions
        .iter()
        .map(|d| parse_dimension(d))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = parse_filters(&raw.filters)?;
    let timezone = raw.timezone.unwrap_or_else(|| "UTC".into());
    if timezone.len() > 64 || timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(bad(format!(
            "unknown timezone {} (an IANA name such as Europe/Berlin)",
            shown(&timezone)
        )));
    }
    let range = parse_range(&raw.date_range, &timezone, now)?;
    let limit = raw.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let mut order_by = Vec::with_capacity(raw.order_by.len());
    for (key, dir) in &raw.order_by {
        let dir = match dir.as_str() {
            "asc" => Direction::Asc,
            "desc" => Direction::Desc,
            other => {
                return Err(bad(format!(
                    "order direction {} is not asc or desc",
                    shown(other)
                )))
            }
        };
        let m = Metric::parse(key).and_then(|m| metrics.iter().position(|x| *x == m));
        let d = Dimension::parse(key).and_then(|d| dimensions.iter().position(|x| *x == d));
        let key = match (m, d) {
            (Some(i), _) => OrderKey::Metric(i),
            (None, Some(i)) => OrderKey::Dimension(i),
            (None, None) => {
                return Err(bad(format!(
                    "order_by {} is not one of the requested metrics or dimensions",
                    shown(key)
                )))
            }
        };
        order_by.push((key, dir));
    }
    if raw.breakdowns.len() > MAX_BREAKDOWNS {
        return Err(bad(format!("give at most {MAX_BREAKDOWNS} breakdowns")));
    }
    let breakdowns = raw
        .breakdowns
        .iter()
        .map(|d| parse_dimension(d))
        .collect::<Result<Vec<_>, _>>()?;
    if !breakdowns.is_empty() {
        if !dimensions.is_empty() {
            return Err(bad("give either dimensions or breakdowns, not both"));
        }
        if let Some(d) = breakdowns
            .iter()
            .find(|d| d.per_event() || matches!(d, Dimension::Time(_)))
        {
            return Err(bad(format!(
                "breakdowns are visit:* dimensions; {} is not",
                d.name()
            )));
        }
    }
    let query = Query {
        metrics,
        dimensions,
        breakdowns,
        filters,
        range,
        timezone,
        order_by,
        limit,
    };
    if query.per_session() {
        if let Some(m) = query.metrics.iter().find(|m| !m.in_session_shape()) {
            return Err(bad(format!(
                "{} cannot be combined with session metrics or visit:entry_page/exit_page; \
                 ask for it in a separate query",
                raw.metrics[query.metrics.iter().position(|x| x == m).unwrap_or(0)]
            )));
        }
        if query.dimensions.iter().any(|d| d.per_event()) {
            return Err(bad(
                "event:* dimensions cannot be combined with session metrics or entry/exit pages; \
                 filter by them instead",
            ));
        }
    }
    Ok(query)
}
