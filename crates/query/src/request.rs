//! The request of `POST /api/v1/query`, in the shape of Plausible's Stats
//! API v2, and its validation into a [`Query`].
//!
//! Everything a request names is checked against a closed vocabulary
//! ([`Metric`], [`Dimension`], [`Op`]); only filter values and the timezone
//! are free text, and both are bounded here ([`MAX_VALUE_BYTES`],
//! [`MAX_PATTERN_BYTES`], a known IANA zone). Every refusal is a
//! [`QueryError`] whose message names the offending part; none carries a
//! ClickHouse error, because nothing reaches ClickHouse before this passes.

use serde::Deserialize;

use crate::QueryError;

/// Most metrics in one request.
pub const MAX_METRICS: usize = 20;
/// Most dimensions in one request.
pub const MAX_DIMENSIONS: usize = 4;
/// Most breakdowns in one request.
pub const MAX_BREAKDOWNS: usize = 12;
/// Most filters in one request.
pub const MAX_FILTERS: usize = 20;
/// Most values of one filter.
pub const MAX_FILTER_VALUES: usize = 100;
/// Longest filter value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest `matches` pattern, in bytes (RE2 runs in linear time; this bounds
/// its program).
pub const MAX_PATTERN_BYTES: usize = 256;
/// Largest `limit`.
pub const MAX_LIMIT: u64 = 10_000;
/// `limit` when the request gives none.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// Longest explicit date range, in days (two years: a year and its previous
/// period).
pub const MAX_RANGE_DAYS: i64 = 731;
/// The values of `event:type`.
pub const EVENT_TYPES: [&str; 5] = ["pageview", "click", "scroll", "performance", "custom"];
/// What `"realtime"` covers, in seconds.
pub const REALTIME_SECS: i64 = 300;

/// A web vital.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vital {
    Lcp,
    Inp,
    Cls,
    Fcp,
    Ttfb,
}

impl Vital {
    /// The `events` column.
    pub fn column(self) -> &'static str {
        match self {
            Vital::Lcp => "lcp",
            Vital::Inp => "inp",
            Vital::Cls => "cls",
            Vital::Fcp => "fcp",
            Vital::Ttfb => "ttfb",
        }
    }
}

/// What a request may count. Session metrics need the session shape of the
/// query ([`Metric::per_session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Distinct `user_id`, else `session_id`.
    Visitors,
    /// Distinct sessions.
    Visits,
    Pageviews,
    Events,
    /// Percent of sessions with at most one pageview.
    BounceRate,
    /// Mean session length, in seconds.
    VisitDuration,
    ViewsPerVisit,
    Clicks,
    /// Mean of each page's maximum scroll depth (the SDK sends one `scroll`
    /// event per pageview, holding its maximum).
    ScrollDepth,
    /// A percentile (50, 75, 95 or 99) of a web vital.
    Vital(Vital, u8),
}

impl Metric {
    /// Parses a metric name (`lcp_p75`, `visitors`, …).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "visitors" => Metric::Visitors,
            "visits" => Metric::Visits,
            "pageviews" => Metric::Pageviews,
            "events" => Metric::Events,
            "bounce_rate" => Metric::BounceRate,
            "visit_duration" => Metric::VisitDuration,
            "views_per_visit" => Metric::ViewsPerVisit,
            "clicks" => Metric::Clicks,
            "scroll_depth" => Metric::ScrollDepth,
            _ => {
                let (vital, pct) = name.split_once("_p")?;
                let vital = match vital {
                    "lcp" => Vital::Lcp,
                    "inp" => Vital::Inp,
                    "cls" => Vital::Cls,
                    "fcp" => Vital::Fcp,
                    "ttfb" => Vital::Ttfb,
                    _ => return None,
                };
                let pct = match pct {
                    "50" => 50,
                    "75" => 75,
                    "95" => 95,
                    "99" => 99,
                    _ => return None,
                };
                Metric::Vital(vital, pct)
            }
        })
    }

    /// Whether the metric is a property of whole sessions.
    pub fn per_session(self) -> bool {
        matches!(
            self,
            Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
        )
    }

    /// Whether the session shape can compute it.
    pub fn in_session_shape(self) -> bool {
        self.per_session() || matches!(self, Metric::Visitors | Metric::Visits | Metric::Pageviews)
    }
}

/// A time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

/// A `utm_*` parameter of the page URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utm {
    Source,
    Medium,
    Campaign,
}

impl Utm {
    pub fn param(self) -> &'static str {
        match self {
            Utm::Source => "utm_source",
            Utm::Medium => "utm_medium",
            Utm::Campaign => "utm_campaign",
        }
    }
}

/// What a request may group and filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Time(Grain),
    EventType,
    EventPage,
    EventName,
    EventSelector,
    EntryPage,
    ExitPage,
    Referrer,
    /// The referrer's host, without `www.`.
    Source,
    Utm(Utm),
    /// Browser, OS and device type, classified from `user_agent` by the sink.
    Browser,
    Os,
    Device,
}

impl Dimension {
    /// Every dimension with its name.
    pub const ALL: [(&'static str, Dimension); 19] = [
        ("time:minute", Dimension::Time(Grain::Minute)),
        ("time:hour", Dimension::Time(Grain::Hour)),
        ("time:day", Dimension::Time(Grain::Day)),
        ("time:week", Dimension::Time(Grain::Week)),
        ("time:month", Dimension::Time(Grain::Month)),
        ("event:type", Dimension::EventType),
        ("event:page", Dimension::EventPage),
        ("event:name", Dimension::EventName),
        ("event:selector", Dimension::EventSelector),
        ("visit:entry_page", Dimension::EntryPage),
        ("visit:exit_page", Dimension::ExitPage),
        ("visit:referrer", Dimension::Referrer),
        ("visit:source", Dimension::Source),
        ("visit:utm_source", Dimension::Utm(Utm::Source)),
        ("visit:utm_medium", Dimension::Utm(Utm::Medium)),
        ("visit:utm_campaign", Dimension::Utm(Utm::Campaign)),
        ("visit:browser", Dimension::Browser),
        ("visit:os", Dimension::Os),
        ("visit:device", Dimension::Device),
    ];

    /// Parses a dimension name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    /// The dimension's name in requests and answers.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, d)| *d == self)
            .map_or("", |(n, _)| n)
    }

    /// Every dimension name, for error messages.
    pub fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }

    /// Whether only the session shape has it (entry and exit pages).
    pub fn per_session(self) -> bool {
        matches!(self, Dimension::EntryPage | Dimension::ExitPage)
    }

    /// Whether it describes one event (only the event shape groups by it).
    pub fn per_event(self) -> bool {
        matches!(
            self,
            Dimension::EventType
                | Dimension::EventPage
                | Dimension::EventName
                | Dimension::EventSelector
        )
    }
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Is,
    IsNot,
    Contains,
    /// RE2 regular expression, any of the values.
    Matches,
}

/// One filter: `dimension op any-of values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub op: Op,
    pub dimension: Dimension,
    pub values: Vec<String>,
}

/// The queried interval, `[from, to)` in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    /// `to` is just past the moment of the request (a named range): no event
    /// after it exists yet.
    pub open: bool,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// What to order by: a requested metric or dimension, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    Metric(usize),
    Dimension(usize),
}

/// A validated query. The tenant is not part of it: the server adds it from
/// the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub metrics: Vec<Metric>,
    pub dimensions: Vec<Dimension>,
    /// An extension of the Plausible shape: several `visit:*` dimensions at
    /// once, each grouped alone over one fold of the sessions. Rows then have
    /// two dimensions, the breakdown's name and its value, and `limit`
    /// applies per breakdown.
    pub breakdowns: Vec<Dimension>,
    pub filters: Vec<Filter>,
    pub range: Range,
    /// IANA name; `UTC` when not given.
    pub timezone: String,
    pub order_by: Vec<(OrderKey, Direction)>,
    pub limit: u64,
}

impl Query {
    /// How many dimension values each answer row has.
    pub fn answer_dimensions(&self) -> usize {
        if self.breakdowns.is_empty() {
            self.dimensions.len()
        } else {
            2
        }
    }

    /// Whether the query is answered per session (session metrics or
    /// dimensions); otherwise per event.
    pub fn per_session(&self) -> bool {
        self.metrics.iter().any(|m| m.per_session())
            || !self.breakdowns.is_empty()
            || self.dimensions.iter().any(|d| d.per_session())
            || self.filters.iter().any(|f| f.dimension.per_session())
    }
}

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

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::Invalid(message.into())
}

/// A short, printable rendering of user input for messages.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
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

fn check_value(op: Op, v: &str) -> Result<(), QueryError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(bad(format!(
            "a filter value is longer than {MAX_VALUE_BYTES} bytes"
        )));
    }
    if v.contains('\0') {
        return Err(bad("a filter value holds a NUL character"));
    }
    if op == Op::Matches {
        if v.len() > MAX_PATTERN_BYTES {
            return Err(bad(format!(
                "a `matches` pattern is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
        regex_syntax::ParserBuilder::new()
            .nest_limit(16)
            .build()
            .parse(v)
            .map_err(|_| {
                bad(format!(
                    "{} is not a valid regular expression (RE2 syntax)",
                    shown(v)
                ))
            })?;
    }
    Ok(())
}

/// Parses and validates a request body at `now` (Unix seconds).
pub fn parse(body: &[u8], now: i64) -> Result<Query, QueryError> {
    let raw: RawQuery = sonic_rs::from_slice(body).map_err(|e| {
        // sonic-rs messages quote the input around the error; keep them short.
        let mut m = e.to_string();
        m.truncate(200);
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
    let dim = |d: &str| {
        Dimension::parse(d).ok_or_else(|| {
            bad(format!(
                "unknown dimension {} (one of {})",
                shown(d),
                Dimension::names()
            ))
        })
    };
    let dimensions = raw
        .dimensions
        .iter()
        .map(|d| dim(d))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.filters.len() > MAX_FILTERS {
        return Err(bad(format!("give at most {MAX_FILTERS} filters")));
    }
    let filters = raw
        .filters
        .iter()
        .map(|(op, d, values)| {
            let op = match op.as_str() {
                "is" => Op::Is,
                "is_not" => Op::IsNot,
                "contains" => Op::Contains,
                "matches" => Op::Matches,
                other => {
                    return Err(bad(format!(
                        "unknown filter operator {} (is, is_not, contains, matches)",
                        shown(other)
                    )))
                }
            };
            if values.is_empty() || values.len() > MAX_FILTER_VALUES {
                return Err(bad(format!(
                    "a filter takes 1 to {MAX_FILTER_VALUES} values"
                )));
            }
            for v in values {
                check_value(op, v)?;
            }
            let dimension = dim(d)?;
            // Compared to the column itself (its index serves it), so only
            // the types there are.
            if dimension == Dimension::EventType && matches!(op, Op::Is | Op::IsNot) {
                if let Some(v) = values.iter().find(|v| !EVENT_TYPES.contains(&v.as_str())) {
                    return Err(bad(format!(
                        "unknown event type {} (one of {})",
                        shown(v),
                        EVENT_TYPES.join(", ")
                    )));
                }
            }
            Ok(Filter {
                op,
                dimension,
                values: values.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
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
        .map(|d| dim(d))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28T12:00:00Z.
    const NOW: i64 = 1_795_867_200;

    fn ok(json: &str) -> Query {
        parse(json.as_bytes(), NOW).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn err(json: &str) -> String {
        match parse(json.as_bytes(), NOW) {
            Err(QueryError::Invalid(m)) => m,
            Ok(q) => panic!("accepted {json}: {q:?}"),
        }
    }

    #[test]
    fn the_plausible_shaped_example() {
        let q = ok(r#"{"metrics": ["visitors", "pageviews"],
            "date_range": ["2026-11-01T00:00:00Z", "2026-11-28T00:00:00Z"],
            "dimensions": ["event:page"],
            "filters": [["is", "event:type", ["pageview"]], ["contains", "event:page", ["/blog"]]],
            "order_by": [["pageviews", "desc"]],
            "limit": 10}"#);
        assert_eq!(q.metrics, [Metric::Visitors, Metric::Pageviews]);
        assert_eq!(q.dimensions, [Dimension::EventPage]);
        assert_eq!(q.filters.len(), 2);
        assert_eq!(q.filters[1].op, Op::Contains);
        assert_eq!(q.range.to - q.range.from, 27 * 86_400);
        assert_eq!(q.order_by, [(OrderKey::Metric(1), Direction::Desc)]);
        assert_eq!((q.limit, q.timezone.as_str()), (10, "UTC"));
        assert!(!q.per_session());
    }

    #[test]
    fn named_ranges_and_timezones() {
        let q = ok(r#"{"metrics":["visitors"],"date_range":"realtime"}"#);
        assert_eq!((q.range.from, q.range.to), (NOW - 300, NOW + 1));
        let q = ok(r#"{"metrics":["visitors"],"date_range":"day"}"#);
        assert_eq!(q.range.from, NOW - 12 * 3600);
        // Midnight in Tokyo (UTC+9) was 03:00 UTC... of the next day there.
        let q = ok(r#"{"metrics":["visitors"],"date_range":"day","timezone":"Asia/Tokyo"}"#);
        assert_eq!(q.range.from, NOW - 21 * 3600);
        let q = ok(r#"{"metrics":["visitors"],"date_range":"7d"}"#);
        assert_eq!(q.range.from, NOW - 12 * 3600 - 6 * 86_400);
        let q = ok(r#"{"metrics":["visitors"],"date_range":["2026-11-01","2026-11-02"]}"#);
        assert_eq!(q.range.to - q.range.from, 86_400);
        assert!(
            err(r#"{"metrics":["visitors"],"date_range":"day","timezone":"Mars/Base"}"#)
                .contains("unknown timezone")
        );
        assert!(err(r#"{"metrics":["visitors"],"date_range":"1y"}"#).contains("date_range"));
        assert!(
            err(r#"{"metrics":["visitors"],"date_range":["2026-11-02","2026-11-01"]}"#)
                .contains("end after")
        );
        assert!(
            err(r#"{"metrics":["visitors"],"date_range":["2020-01-01","2026-11-01"]}"#)
                .contains("731 days")
        );
        assert!(
            err(r#"{"metrics":["visitors"],"date_range":["2026-11-01"]}"#).contains("[from, to]")
        );
    }

    #[test]
    fn vocabulary_and_shapes() {
        let q = ok(
            r#"{"metrics":["bounce_rate","visit_duration","visitors"],"date_range":"30d",
            "dimensions":["visit:entry_page","time:day"],"filters":[["is","event:type",["pageview"]]]}"#,
        );
        assert!(q.per_session());
        assert_eq!(
            Metric::parse("ttfb_p99"),
            Some(Metric::Vital(Vital::Ttfb, 99))
        );
        for bad in ["lcp_p80", "lcp_", "foo", "", "visitors "] {
            assert!(Metric::parse(bad).is_none(), "{bad}");
        }
        assert!(
            err(r#"{"metrics":["bounce_rate","clicks"],"date_range":"day"}"#).contains("clicks")
        );
        assert!(err(r#"{"metrics":["visits"],"date_range":"day","dimensions":["visit:exit_page","event:page"]}"#)
            .contains("event:*"));
        assert!(
            err(r#"{"metrics":["visits"],"date_range":"day","dimensions":["visit:country"]}"#)
                .contains("unknown dimension")
        );
        assert!(err(r#"{"metrics":[],"date_range":"day"}"#).contains("1 to 20 metrics"));
        assert!(
            err(r#"{"metrics":["visits"],"date_range":"day","order_by":[["clicks","desc"]]}"#)
                .contains("order_by")
        );
        assert!(
            err(r#"{"metrics":["visits"],"date_range":"day","limit":10001}"#).contains("limit")
        );
        assert!(
            err(r#"{"metrics":["visits"],"date_range":"day","tenant_id":"x"}"#)
                .contains("not a valid query"),
            "unknown fields are refused, tenant_id above all"
        );
    }

    #[test]
    fn hostile_values_are_bounded() {
        let filters: Vec<String> = (0..10_000)
            .map(|_| r#"["is","event:page",["/"]]"#.to_string())
            .collect();
        let many = format!(
            r#"{{"metrics":["visits"],"date_range":"day","filters":[{}]}}"#,
            filters.join(",")
        );
        assert!(err(&many).contains("at most 20 filters"));
        let long = format!(
            r#"{{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["{}"]]]}}"#,
            "x".repeat(1 << 20)
        );
        assert!(err(&long).contains("longer than 1024 bytes"));
        let nul = r#"{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["a\u0000b"]]]}"#;
        let m = err(nul);
        assert!(m.contains("NUL"), "{m}");
        let regex = r#"{"metrics":["visits"],"date_range":"day","filters":[["matches","event:page",["a(b"]]]}"#;
        assert!(err(regex).contains("regular expression"));
        // Quotes, backslashes and SQL comments are values like any other.
        let q = ok(
            r#"{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["' OR 1=1 --","\\'; DROP TABLE x; /*","ünï🙂"]]]}"#,
        );
        assert_eq!(q.filters[0].values[0], "' OR 1=1 --");
        assert!(err("[1,2]").contains("not a valid query"));
        assert!(err("{").contains("not a valid query"));
    }
}
