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
//! Two shapes. **Per event** (the default): `events` filtered and grouped
//! directly. **Per session** (session metrics such as `bounce_rate`, or
//! entry/exit pages): events are first folded into one row per session
//! (entry and exit page, first referrer and URL, start, end, pageviews),
//! `event:*` filters apply to the events before folding, `visit:*` filters
//! to the sessions after.

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

/// The columns a dimension reads, in each shape.
struct Columns {
    time: &'static str,
    referrer: &'static str,
    url: &'static str,
}

const EVENT: Columns = Columns {
    time: "event_time",
    referrer: "referrer",
    url: "url",
};
const SESSION: Columns = Columns {
    time: "s_start",
    referrer: "s_referrer",
    url: "s_url",
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
        Dimension::EventSelector => "if(selector != '', selector, element)".into(),
        Dimension::EntryPage => "s_entry".into(),
        Dimension::ExitPage => "s_exit".into(),
        Dimension::Referrer => cols.referrer.into(),
        Dimension::Source => format!("domainWithoutWWW({})", cols.referrer),
        Dimension::Utm(u) => format!("extractURLParameter({}, '{}')", cols.url, u.param()),
    }
}

fn metric(m: Metric, per_session: bool) -> String {
    if per_session {
        return match m {
            Metric::Visitors => "uniqExact(s_visitor)".into(),
            Metric::Visits => "count()".into(),
            Metric::Pageviews => "sum(s_pageviews)".into(),
            Metric::BounceRate => "round(100 * countIf(s_pageviews <= 1) / count(), 1)".into(),
            Metric::VisitDuration => "round(avg(s_end - s_start), 1)".into(),
            Metric::ViewsPerVisit => "round(sum(s_pageviews) / count(), 2)".into(),
            // Refused by validation (`Metric::in_session_shape`).
            _ => "NULL".into(),
        };
    }
    match m {
        Metric::Visitors => "uniqExact(if(user_id != '', user_id, toString(session_id)))".into(),
        Metric::Visits => "uniqExact(session_id)".into(),
        Metric::Pageviews => "countIf(event_type = 'pageview')".into(),
        Metric::Events => "count()".into(),
        Metric::Clicks => "countIf(event_type = 'click')".into(),
        Metric::ScrollDepth => "round(avgIf(assumeNotNull(depth_pct), event_type = 'scroll' AND isNotNull(depth_pct)), 1)".into(),
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

/// Where a filter applies in the session shape: before folding (on events)
/// or after (on sessions).
fn on_events(d: Dimension) -> bool {
    d.per_event() || matches!(d, Dimension::Time(_))
}

/// The query's SQL against database `db` for `tenant`, answering in
/// `JSONCompact` with columns `d0…` (dimensions, as strings) then `m0…`.
pub fn build(q: &Query, db: &str, tenant: Uuid) -> String {
    let per_session = q.per_session();
    let tz = q.timezone.as_str();
    let mut event_where = format!(
        "tenant_id = toUUID('{}') AND event_time >= toDateTime({}) AND event_time < toDateTime({})",
        tenant.hyphenated(),
        q.range.from.max(0),
        q.range.to.max(0)
    );
    let mut session_where = Vec::new();
    for f in &q.filters {
        if per_session && !on_events(f.dimension) {
            session_where.push(filter(f, &SESSION, tz));
        } else {
            let _ = write!(event_where, " AND {}", filter(f, &EVENT, tz));
        }
    }
    let cols = if per_session { &SESSION } else { &EVENT };
    let mut select = Vec::new();
    for (i, d) in q.dimensions.iter().enumerate() {
        select.push(format!("{} AS d{i}", dimension(*d, cols, tz)));
    }
    for (i, m) in q.metrics.iter().enumerate() {
        select.push(format!("{} AS m{i}", metric(*m, per_session)));
    }
    let from = if per_session {
        format!(
            "(SELECT session_id, \
             if(max(user_id) != '', max(user_id), toString(session_id)) AS s_visitor, \
             argMinIf(path, event_time, event_type = 'pageview') AS s_entry, \
             argMaxIf(path, event_time, event_type = 'pageview') AS s_exit, \
             argMin(referrer, event_time) AS s_referrer, \
             argMin(url, event_time) AS s_url, \
             min(event_time) AS s_start, max(event_time) AS s_end, \
             countIf(event_type = 'pageview') AS s_pageviews \
             FROM {db}.events WHERE {event_where} GROUP BY session_id)"
        )
    } else {
        format!("{db}.events")
    };
    let mut sql = format!("SELECT {} FROM {from}", select.join(", "));
    if per_session {
        if !session_where.is_empty() {
            let _ = write!(sql, " WHERE {}", session_where.join(" AND "));
        }
    } else {
        let _ = write!(sql, " WHERE {event_where}");
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
