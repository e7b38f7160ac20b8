//! What a validated query is made of: closed vocabularies and the
//! [`Query`] itself.

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
