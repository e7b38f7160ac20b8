//! A validated [`Query`] as ClickHouse SQL.
//!
//! Safety rules, which the tests check on hostile input:
//! - The tenant comes from the authenticated key (a [`Uuid`], formatted by
//!   us) and is always the first condition; nothing in a request can remove
//!   or widen it.
//! - Names (columns, functions, aliases) come only from the closed
//!   vocabulary of [`crate::request`]; no request text becomes a name.
//! - Every request value is a string literal made by [`literal`]: quoted, with
//!   `\` and `'` escaped and control bytes written as `\xHH`. ClickHouse 18.16
//!   has no query parameters over HTTP, so this is the one way values enter.
//!
//! Two shapes. **Per event**: events (or the hourly roll-up of them)
//! filtered and grouped directly. **Per session** (session metrics such as
//! `bounce_rate`, or any `visit:*` dimension): one row per session (entry and
//! exit page, first referrer, URL and user agent, start, end, pageviews),
//! read from the `sessions` roll-up, or folded from `events` when a filter
//! names single events (`event:*` filters then apply to the events before
//! folding, `visit:*` filters to the sessions after). A session from the
//! roll-up belongs to the range it started in. [`source`] picks the table.

use std::fmt::Write as _;

use uuid::Uuid;

use crate::request::{Dimension, Direction, Filter, Grain, Metric, Op, OrderKey, Query};

/// `s` as a ClickHouse string literal.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Where a query's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `events` itself: any query.
    Events,
    /// The `sessions` roll-up: visit metrics and `visit:*` dimensions, with
    /// no filter on single events.
    Sessions,
    /// The `pages_hourly` roll-up: per-event counts by hour, page, event
    /// type, name and click target, over whole hours.
    PagesHourly,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Sessions => "sessions",
            Source::PagesHourly => "pages_hourly",
        }
    }
}

/// Whether a dimension describes the visit (session) rather than one event.
fn per_visit(d: Dimension) -> bool {
    !d.per_event() && !matches!(d, Dimension::Time(_))
}

/// Whether `pages_hourly` holds what the dimension needs.
fn in_pages_hourly(d: Dimension) -> bool {
    d.per_event() || matches!(d, Dimension::Time(g) if g != Grain::Minute)
}

/// Whether `zone`'s offset from UTC is whole hours at `at` (Unix seconds), so
/// that hourly buckets fall on its day boundaries.
fn whole_hour_offset(zone: &str, at: i64) -> bool {
    use chrono::{Offset, TimeZone};
    let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
        return false;
    };
    match tz.timestamp_opt(at, 0).single() {
        Some(t) => t.offset().fix().local_minus_utc() % 3600 == 0,
        None => false,
    }
}

/// Which table answers `q`: a roll-up whenever it holds what the query asks
/// (same numbers, fewer rows), `events` otherwise.
pub fn source(q: &Query) -> Source {
    let event_filter = q.filters.iter().any(|f| f.dimension.per_event());
    let visit_dimension = q
        .dimensions
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .any(|d| per_visit(*d));
    let visit_metrics = q.metrics.iter().all(|m| m.in_session_shape())
        && !q.dimensions.iter().any(|d| d.per_event());
    if q.per_session() || (visit_dimension && visit_metrics) {
        return if event_filter {
            Source::Events
        } else {
            Source::Sessions
        };
    }
    let hourly_metrics = q.metrics.iter().all(|m| {
        matches!(
            m,
            Metric::Visitors
                | Metric::Visits
                | Metric::Pageviews
                | Metric::Events
                | Metric::Clicks
                | Metric::ScrollDepth
        )
    });
    let hourly_dimensions = q
        .dimensions
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .all(|d| in_pages_hourly(*d));
    let r = q.range;
    let whole_hours = r.from % 3600 == 0 && (r.to % 3600 == 0 || r.open);
    let zone = q.timezone.as_str();
    if hourly_metrics
        && hourly_dimensions
        && whole_hours
        && whole_hour_offset(zone, r.from)
        && whole_hour_offset(zone, r.to)
    {
        Source::PagesHourly
    } else {
        Source::Events
    }
}

/// The column expressions a dimension reads, per source.
struct Columns {
    time: &'static str,
    referrer: &'static str,
    url: &'static str,
    selector: &'static str,
    browser: &'static str,
    os: &'static str,
    device: &'static str,
}

const EVENT: Columns = Columns {
    time: "event_time",
    referrer: "referrer",
    url: "url",
    selector: "if(selector != '', selector, element)",
    browser: "browser",
    os: "os",
    device: "device",
};
/// The folded sessions (from `events` or from the `sessions` roll-up).
const SESSION: Columns = Columns {
    time: "s_start",
    referrer: "s_referrer",
    url: "s_url",
    selector: "''",
    browser: "s_browser",
    os: "s_os",
    device: "s_device",
};
/// `pages_hourly` (visit dimensions never reach it: [`source`]).
const HOURLY: Columns = Columns {
    time: "hour",
    referrer: "''",
    url: "''",
    selector: "target",
    browser: "''",
    os: "''",
    device: "''",
};

fn dimension(d: Dimension, cols: &Columns, tz: &str) -> String {
    let t = format!("toTimeZone({}, {})", cols.time, literal(tz));
    match d {
        Dimension::Time(Grain::Minute) => format!("toString(toStartOfMinute({t}))"),
        Dimension::Time(Grain::Hour) => format!("toString(toStartOfHour({t}))"),
        Dimension::Time(Grain::Day) => format!("toString(toDate({t}))"),
        Dimension::Time(Grain::Week) => format!("toString(toMonday({t}))"),
        Dimension::Time(Grain::Month) => format!("toString(toStartOfMonth({t}))"),
        Dimension::EventType => "toString(event_type)".into(),
        Dimension::EventPage => "path".into(),
        Dimension::EventName => "name".into(),
        Dimension::EventSelector => cols.selector.into(),
        Dimension::EntryPage => "s_entry".into(),
        Dimension::ExitPage => "s_exit".into(),
        Dimension::Referrer => cols.referrer.into(),
        Dimension::Source => format!("domainWithoutWWW({})", cols.referrer),
        Dimension::Utm(u) => format!("extractURLParameter({}, '{}')", cols.url, u.param()),
        Dimension::Browser => cols.browser.into(),
        Dimension::Os => cols.os.into(),
        Dimension::Device => cols.device.into(),
    }
}

/// Visitors and visits are `uniq` everywhere (exact to tens of thousands,
/// then within about 1%), so a roll-up and `events` give the same answer.
fn metric(m: Metric, source: Source, per_session: bool) -> String {
    if per_session {
        return match m {
            Metric::Visitors => "uniq(s_visitor)".into(),
            Metric::Visits => "count()".into(),
            Metric::Pageviews => "sum(s_pageviews)".into(),
            Metric::BounceRate => "round(100 * countIf(s_pageviews <= 1) / count(), 1)".into(),
            Metric::VisitDuration => "round(avg(s_end - s_start), 1)".into(),
            Metric::ViewsPerVisit => "round(sum(s_pageviews) / count(), 2)".into(),
            // Refused by validation (`Metric::in_session_shape`).
            _ => "NULL".into(),
        };
    }
    if source == Source::PagesHourly {
        return match m {
            Metric::Visitors => "uniqMerge(visitors)".into(),
            Metric::Visits => "uniqMerge(visits)".into(),
            Metric::Pageviews => "sumIf(events, event_type = 'pageview')".into(),
            Metric::Events => "sum(events)".into(),
            Metric::Clicks => "sumIf(events, event_type = 'click')".into(),
            Metric::ScrollDepth => "round(sum(depth_sum) / sum(depths), 1)".into(),
            // Never routed here (`source`).
            _ => "NULL".into(),
        };
    }
    match m {
        Metric::Visitors => "uniq(if(user_id != '', user_id, toString(session_id)))".into(),
        Metric::Visits => "uniq(session_id)".into(),
        Metric::Pageviews => "countIf(event_type = 'pageview')".into(),
        Metric::Events => "count()".into(),
        Metric::Clicks => "countIf(event_type = 'click')".into(),
        Metric::ScrollDepth => "round(sumIf(assumeNotNull(depth_pct), isNotNull(depth_pct)) / countIf(isNotNull(depth_pct)), 1)".into(),
        Metric::Vital(v, p) => format!("quantileExact(0.{p})({})", v.column()),
        // Refused by validation (`Query::per_session`).
        Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit => "NULL".into(),
    }
}

fn filter(f: &Filter, cols: &Columns, tz: &str) -> String {
    let e = dimension(f.dimension, cols, tz);
    let values: Vec<String> = f.values.iter().map(|v| literal(v)).collect();
    let any = |each: &dyn Fn(&str) -> String| {
        let parts: Vec<String> = values.iter().map(|v| each(v)).collect();
        format!("({})", parts.join(" OR "))
    };
    match f.op {
        Op::Is => format!("{e} IN ({})", values.join(", ")),
        Op::IsNot => format!("{e} NOT IN ({})", values.join(", ")),
        Op::Contains => any(&|v| format!("position({e}, {v}) > 0")),
        Op::Matches => any(&|v| format!("match({e}, {v})")),
    }
}

/// Where a filter applies when sessions are folded from `events`: before
/// folding (on events) or after (on sessions).
fn on_events(d: Dimension) -> bool {
    d.per_event() || matches!(d, Dimension::Time(_))
}

/// `tenant_id = …`: always the first condition.
fn tenant_condition(tenant: Uuid) -> String {
    format!("tenant_id = toUUID('{}')", tenant.hyphenated())
}

/// Sessions folded from `events` in the range: `event:*` filters apply to the
/// events before folding.
fn sessions_from_events(q: &Query, db: &str, tenant: Uuid, event_filters: &[String]) -> String {
    let mut w = format!(
        "{} AND event_time >= toDateTime({}) AND event_time < toDateTime({})",
        tenant_condition(tenant),
        q.range.from.max(0),
        q.range.to.max(0)
    );
    for f in event_filters {
        let _ = write!(w, " AND {f}");
    }
    format!(
        "(SELECT session_id, \
         if(max(user_id) != '', max(user_id), toString(session_id)) AS s_visitor, \
         argMinIf(path, event_time, event_type = 'pageview') AS s_entry, \
         argMaxIf(path, event_time, event_type = 'pageview') AS s_exit, \
         argMin(referrer, event_time) AS s_referrer, argMin(url, event_time) AS s_url, \
         argMin(browser, event_time) AS s_browser, argMin(os, event_time) AS s_os, \
         argMin(device, event_time) AS s_device, \
         min(event_time) AS s_start, max(event_time) AS s_end, \
         countIf(event_type = 'pageview') AS s_pageviews \
         FROM {db}.events WHERE {w} GROUP BY session_id)"
    )
}

/// Sessions from the `sessions` roll-up that started in the range. A session
/// has a row per day it ran; the day before and after the range are read too,
/// so one that crosses midnight is whole.
fn sessions_from_rollup(q: &Query, db: &str, tenant: Uuid) -> String {
    let (from, to) = (q.range.from.max(0), q.range.to.max(0));
    format!(
        "(SELECT session_id, \
         if(maxMerge(visitor) != '', maxMerge(visitor), toString(session_id)) AS s_visitor, \
         argMinIfMerge(entry_page) AS s_entry, argMaxIfMerge(exit_page) AS s_exit, \
         argMinMerge(referrer) AS s_referrer, argMinMerge(url) AS s_url, \
         argMinMerge(browser) AS s_browser, argMinMerge(os) AS s_os, argMinMerge(device) AS s_device, \
         minMerge(started) AS s_start, maxMerge(ended) AS s_end, sum(pageviews) AS s_pageviews \
         FROM {db}.sessions WHERE {} \
         AND day >= toDate(toDateTime({from})) - 1 AND day <= toDate(toDateTime({to})) + 1 \
         GROUP BY session_id HAVING s_start >= toDateTime({from}) AND s_start < toDateTime({to}))",
        tenant_condition(tenant)
    )
}

/// The query's SQL against database `db` for `tenant`, answering in
/// `JSONCompact` with columns `d0…` (dimensions, as strings) then `m0…`.
pub fn build(q: &Query, db: &str, tenant: Uuid) -> String {
    let source = source(q);
    let per_session = q.per_session() || source == Source::Sessions;
    let tz = q.timezone.as_str();
    let cols = match (per_session, source) {
        (true, _) => &SESSION,
        (false, Source::PagesHourly) => &HOURLY,
        (false, _) => &EVENT,
    };
    let mut select = Vec::new();
    for (i, d) in q.dimensions.iter().enumerate() {
        select.push(format!("{} AS d{i}", dimension(*d, cols, tz)));
    }
    for (i, m) in q.metrics.iter().enumerate() {
        select.push(format!("{} AS m{i}", metric(*m, source, per_session)));
    }
    let mut sql = format!("SELECT {} FROM ", select.join(", "));
    if per_session {
        let mut event_filters = Vec::new();
        let mut session_filters = Vec::new();
        for f in &q.filters {
            if source == Source::Events && on_events(f.dimension) {
                event_filters.push(filter(f, &EVENT, tz));
            } else {
                session_filters.push(filter(f, &SESSION, tz));
            }
        }
        sql.push_str(&match source {
            Source::Sessions => sessions_from_rollup(q, db, tenant),
            _ => sessions_from_events(q, db, tenant, &event_filters),
        });
        if !session_filters.is_empty() {
            let _ = write!(sql, " WHERE {}", session_filters.join(" AND "));
        }
    } else {
        let (from, to) = (q.range.from.max(0), q.range.to.max(0));
        let _ = write!(
            sql,
            "{db}.{} WHERE {} AND {t} >= toDateTime({from}) AND {t} < toDateTime({to})",
            source.name(),
            tenant_condition(tenant),
            t = cols.time,
        );
        for f in &q.filters {
            let _ = write!(sql, " AND {}", filter(f, cols, tz));
        }
    }
    if !q.dimensions.is_empty() {
        let groups: Vec<String> = (0..q.dimensions.len()).map(|i| format!("d{i}")).collect();
        let _ = write!(sql, " GROUP BY {}", groups.join(", "));
    }
    let mut order: Vec<String> = q
        .order_by
        .iter()
        .map(|(k, dir)| {
            let col = match k {
                OrderKey::Metric(i) => format!("m{i}"),
                OrderKey::Dimension(i) => format!("d{i}"),
            };
            let dir = match dir {
                Direction::Asc => "ASC",
                Direction::Desc => "DESC",
            };
            format!("{col} {dir}")
        })
        .collect();
    if order.is_empty() && !q.dimensions.is_empty() {
        // Time series in time order; anything else largest first.
        match q
            .dimensions
            .iter()
            .position(|d| matches!(d, Dimension::Time(_)))
        {
            Some(i) => order.push(format!("d{i} ASC")),
            None => order.push("m0 DESC".into()),
        }
    }
    // Ties broken by every dimension, so pages of results are stable.
    order.extend((0..q.dimensions.len()).map(|i| format!("d{i} ASC")));
    if !order.is_empty() {
        let _ = write!(sql, " ORDER BY {}", order.join(", "));
    }
    let _ = write!(sql, " LIMIT {} FORMAT JSONCompact", q.limit);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a literal back as ClickHouse does (the escapes `literal` writes).
    fn unescape(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('\'')?.strip_suffix('\'')?;
        let mut out = String::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            match c {
                '\\' => match it.next()? {
                    '\\' => out.push('\\'),
                    '\'' => out.push('\''),
                    'x' => {
                        let h: String = [it.next()?, it.next()?].iter().collect();
                        out.push(char::from(u8::from_str_radix(&h, 16).ok()?));
                    }
                    _ => return None,
                },
                // An unescaped quote would end the literal early.
                '\'' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn literals_round_trip_and_never_end_early(s in any::<String>()) {
            let lit = literal(&s);
            prop_assert_eq!(unescape(&lit), Some(s));
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_literal() {
        for s in [
            "' OR 1=1 --",
            "\\'; DROP TABLE x; /*",
            "\\",
            "'",
            "a\nb\rc\td\x1b",
            "ü🙂",
        ] {
            assert_eq!(unescape(&literal(s)).as_deref(), Some(s));
        }
        assert_eq!(literal("' OR 1=1 --"), r"'\' OR 1=1 --'");
    }

    #[test]
    fn the_tenant_comes_first_in_both_shapes() {
        let tenant = Uuid::from_u128(7);
        for body in [
            r#"{"metrics":["visitors","pageviews"],"date_range":"7d","dimensions":["event:page"],"filters":[["is","visit:referrer",["x"]]]}"#,
            r#"{"metrics":["bounce_rate"],"date_range":"7d","dimensions":["visit:entry_page"],"filters":[["is","visit:source",["x"]],["contains","event:page",["/a"]]]}"#,
        ] {
            let q = crate::parse(body.as_bytes(), 1_795_867_200).unwrap();
            let sql = build(&q, "overwatch", tenant);
            let first_where = sql.find(" WHERE ").unwrap();
            assert!(
                sql[first_where..].starts_with(
                    " WHERE tenant_id = toUUID('00000000-0000-0000-0000-000000000007') AND "
                ),
                "{sql}"
            );
            assert!(sql.ends_with(" FORMAT JSONCompact"), "{sql}");
        }
    }
}
