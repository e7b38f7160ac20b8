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
//! Two shapes. **Per event**: `events` (or, for pageviews by hour and page,
//! the `pageviews_hourly` roll-up) filtered and grouped directly. **Per
//! session** (session metrics such as `bounce_rate`, or any `visit:*`
//! dimension): one row per visit from the `sessions` roll-up, which is built
//! from pageviews (entry and exit page, the landing pageview's referrer, URL
//! and user agent, first and last pageview, pageviews). A visit belongs to
//! the range it started in; `visit:*` filters apply to visits, and `event:*`
//! filters keep the visits with a matching event. [`source`] picks the table.

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
    /// `events` itself: any per-event query.
    Events,
    /// The `sessions` roll-up: every per-session query (visit metrics,
    /// `visit:*` dimensions); filters on single events pick the sessions
    /// through a look-up in `events`.
    Sessions,
    /// The `pageviews_hourly` roll-up: pageviews, and visitors of pageviews,
    /// by hour and page, over whole hours.
    PageviewsHourly,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Sessions => "sessions",
            Source::PageviewsHourly => "pageviews_hourly",
        }
    }
}

/// Whether a dimension describes the visit (session) rather than one event.
fn per_visit(d: Dimension) -> bool {
    !d.per_event() && !matches!(d, Dimension::Time(_))
}

/// Whether the filter is `is event:type ["pageview"]`.
fn pageviews_only(f: &Filter) -> bool {
    f.op == Op::Is && f.dimension == Dimension::EventType && f.values == ["pageview"]
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

/// Whether the query is answered per session (see the module docs).
fn per_session(q: &Query) -> bool {
    let visit_dimension = q
        .dimensions
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .any(|d| per_visit(*d));
    let visit_metrics = q.metrics.iter().all(|m| m.in_session_shape())
        && !q.dimensions.iter().any(|d| d.per_event());
    q.per_session() || (visit_dimension && visit_metrics)
}

/// Which table answers `q`: a roll-up whenever it holds what the query asks
/// (the same numbers from fewer rows), `events` otherwise.
pub fn source(q: &Query) -> Source {
    if per_session(q) {
        return Source::Sessions;
    }
    // Visitors of pageviews only when the query says pageviews: visitors of
    // a page otherwise count every event on it.
    let typed = q.filters.iter().any(pageviews_only);
    let metrics = q.metrics.iter().all(|m| match m {
        Metric::Pageviews => true,
        Metric::Visitors => typed,
        _ => false,
    });
    let hourly = |d: &Dimension| {
        matches!(d, Dimension::EventPage) || matches!(d, Dimension::Time(g) if *g != Grain::Minute)
    };
    let dimensions = q.dimensions.iter().all(hourly)
        && q.filters
            .iter()
            .all(|f| pageviews_only(f) || hourly(&f.dimension));
    let r = q.range;
    let whole_hours = r.from % 3600 == 0 && (r.to % 3600 == 0 || r.open);
    let zone = q.timezone.as_str();
    if metrics
        && dimensions
        && whole_hours
        && whole_hour_offset(zone, r.from)
        && whole_hour_offset(zone, r.to)
    {
        Source::PageviewsHourly
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
/// Sessions from the `sessions` roll-up.
const SESSION: Columns = Columns {
    time: "s_start",
    referrer: "s_referrer",
    url: "s_url",
    selector: "''",
    browser: "s_browser",
    os: "s_os",
    device: "s_device",
};
/// `pageviews_hourly` (only time and page reach it: [`source`]).
const HOURLY: Columns = Columns {
    time: "hour",
    referrer: "''",
    url: "''",
    selector: "''",
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

/// One visitor: a hash of `user_id`, else of the session (as `pageviews_hourly`
/// keeps it).
const VISITOR: &str =
    "if(user_id != '', cityHash64(user_id), cityHash64(reinterpretAsString(session_id)))";

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
    if source == Source::PageviewsHourly {
        return match m {
            Metric::Visitors => "uniqMerge(visitors)".into(),
            Metric::Pageviews => "sum(pageviews)".into(),
            // Never routed here (`source`).
            _ => "NULL".into(),
        };
    }
    match m {
        Metric::Visitors => format!("uniq({VISITOR})"),
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
    // The type column itself, not its name: the primary key is
    // (tenant_id, event_type, event_time). Values are known types
    // (`request::EVENT_TYPES`).
    let e = match (f.dimension, f.op) {
        (Dimension::EventType, Op::Is | Op::IsNot) => "event_type".to_string(),
        _ => e,
    };
    match f.op {
        Op::Is => format!("{e} IN ({})", values.join(", ")),
        Op::IsNot => format!("{e} NOT IN ({})", values.join(", ")),
        Op::Contains => any(&|v| format!("position({e}, {v}) > 0")),
        Op::Matches => any(&|v| format!("match({e}, {v})")),
    }
}

/// The one event type every metric counts, if there is one: the query then
/// reads that type's rows alone (the primary key starts with tenant and type).
fn implied_type(metrics: &[Metric]) -> Option<&'static str> {
    let of = |m: &Metric| match m {
        Metric::Vital(..) => Some("performance"),
        Metric::ScrollDepth => Some("scroll"),
        Metric::Clicks => Some("click"),
        Metric::Pageviews => Some("pageview"),
        _ => None,
    };
    let first = of(metrics.first()?)?;
    metrics
        .iter()
        .all(|m| of(m) == Some(first))
        .then_some(first)
}

/// `tenant_id = …`: always the first condition.
fn tenant_condition(tenant: Uuid) -> String {
    format!("tenant_id = toUUID('{}')", tenant.hyphenated())
}

/// Sessions from the `sessions` roll-up that started in the range. A session
/// has a row per day it ran; the day before and after the range are read too,
/// so one that crosses midnight is whole. `event_filters` (on single events)
/// keep the sessions with at least one matching event in the range.
fn sessions(q: &Query, db: &str, tenant: Uuid, event_filters: &[String]) -> String {
    let (from, to) = (q.range.from.max(0), q.range.to.max(0));
    let tenant = tenant_condition(tenant);
    let mut picked = String::new();
    if !event_filters.is_empty() {
        let _ = write!(
            picked,
            " AND session_id IN (SELECT session_id FROM {db}.events WHERE {tenant} \
             AND event_time >= toDateTime({from}) AND event_time < toDateTime({to}) AND {})",
            event_filters.join(" AND ")
        );
    }
    format!(
        "(SELECT session_id, \
         if(maxMerge(visitor) != '', cityHash64(maxMerge(visitor)), cityHash64(reinterpretAsString(session_id))) AS s_visitor, \
         argMinMerge(entry_page) AS s_entry, argMaxMerge(exit_page) AS s_exit, \
         argMinMerge(referrer) AS s_referrer, argMinMerge(url) AS s_url, \
         anyMerge(browser) AS s_browser, anyMerge(os) AS s_os, anyMerge(device) AS s_device, \
         minMerge(started) AS s_start, maxMerge(ended) AS s_end, sum(pageviews) AS s_pageviews \
         FROM {db}.sessions WHERE {tenant} \
         AND day >= toDate(toDateTime({from})) - 1 AND day <= toDate(toDateTime({to})) + 1{picked} \
         GROUP BY session_id HAVING s_start >= toDateTime({from}) AND s_start < toDateTime({to}))"
    )
}

/// The query's SQL against database `db` for `tenant`, answering in
/// `JSONCompact` with columns `d0…` (dimensions, as strings) then `m0…`.
pub fn build(q: &Query, db: &str, tenant: Uuid) -> String {
    let source = source(q);
    let per_session = source == Source::Sessions;
    let tz = q.timezone.as_str();
    let cols = match source {
        Source::Sessions => &SESSION,
        Source::PageviewsHourly => &HOURLY,
        Source::Events => &EVENT,
    };
    let mut select = Vec::new();
    for (i, d) in q.dimensions.iter().enumerate() {
        select.push(format!("{} AS d{i}", dimension(*d, cols, tz)));
    }
    if !q.breakdowns.is_empty() {
        // `d0` is the breakdown's index in the request, named by the
        // service: grouping and sorting on a number instead of its name cut
        // the query's time by a quarter (measured).
        select.push("breakdown AS d0".into());
        select.push("breakdown_value AS d1".into());
    }
    for (i, m) in q.metrics.iter().enumerate() {
        select.push(format!("{} AS m{i}", metric(*m, source, per_session)));
    }
    let mut sql = format!("SELECT {} FROM ", select.join(", "));
    if per_session {
        let (mut on_events, mut on_sessions) = (Vec::new(), Vec::new());
        for f in &q.filters {
            if f.dimension.per_event() {
                on_events.push(filter(f, &EVENT, tz));
            } else {
                on_sessions.push(filter(f, &SESSION, tz));
            }
        }
        sql.push_str(&sessions(q, db, tenant, &on_events));
        if !q.breakdowns.is_empty() {
            // Each session once per breakdown, as (index, value).
            let indexes: Vec<String> = (0..q.breakdowns.len()).map(|i| i.to_string()).collect();
            let values: Vec<String> = (q.breakdowns.iter())
                .map(|d| dimension(*d, cols, tz))
                .collect();
            let _ = write!(
                sql,
                " ARRAY JOIN [{}] AS breakdown, [{}] AS breakdown_value",
                indexes.join(", "),
                values.join(", ")
            );
        }
        if !on_sessions.is_empty() {
            let _ = write!(sql, " WHERE {}", on_sessions.join(" AND "));
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
        // Without dimensions no group can lose its zero row by it.
        if source == Source::Events && q.dimensions.is_empty() {
            if let Some(t) = implied_type(&q.metrics) {
                let _ = write!(sql, " AND event_type = '{t}'");
            }
        }
        for f in &q.filters {
            // The hourly roll-up holds pageviews only: that filter is its table.
            if source == Source::PageviewsHourly && pageviews_only(f) {
                continue;
            }
            let _ = write!(sql, " AND {}", filter(f, cols, tz));
        }
    }
    let dims = q.answer_dimensions();
    if dims > 0 {
        let groups: Vec<String> = (0..dims).map(|i| format!("d{i}")).collect();
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
    if !q.breakdowns.is_empty() {
        // Breakdown by breakdown, then as asked (largest first by default).
        if order.is_empty() {
            order.push("m0 DESC".into());
        }
        order.insert(0, "d0 ASC".into());
    } else if order.is_empty() && !q.dimensions.is_empty() {
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
    order.extend((0..dims).map(|i| format!("d{i} ASC")));
    if !order.is_empty() {
        let _ = write!(sql, " ORDER BY {}", order.join(", "));
    }
    if !q.breakdowns.is_empty() {
        let _ = write!(sql, " LIMIT {} BY d0", q.limit);
    }
    let _ = write!(
        sql,
        " LIMIT {} FORMAT JSONCompact",
        q.limit * q.breakdowns.len().max(1) as u64
    );
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
                sql.get(first_where..).unwrap().starts_with(
                    " WHERE tenant_id = toUUID('00000000-0000-0000-0000-000000000007') AND "
                ),
                "{sql}"
            );
            assert!(sql.ends_with(" FORMAT JSONCompact"), "{sql}");
        }
    }
}
