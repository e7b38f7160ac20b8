//! Validation rules: a borrowed [`RawEvent`] becomes an [`EventRecord`] that
//! borrows the same strings, or a [`Rejection`] naming a reason and a field.
//!
//! The success path allocates nothing: UUIDs and timestamps are parsed into
//! fixed-size values, strings are length-checked and borrowed.
//!
//! Timestamps: when the batch carries `sent_at`, the client clock's offset
//! (`received_at - sent_at`) is added to each event time before the range
//! checks, so a phone whose clock runs an hour fast does not lose its events.

use sonic_rs::JsonValueTrait;
use uuid::Uuid;

use crate::event::{EventType, RawEvent, Text};
use crate::record::EventRecord;
use crate::timestamp::parse_rfc3339_us;

const US_PER_SEC: i64 = 1_000_000;
const US_PER_DAY: i64 = 86_400 * US_PER_SEC;

/// Size and time bounds applied to each event. Every field is a documented
/// setting under `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted value of an ordinary string field, in bytes.
    pub max_string_bytes: usize,
    /// Longest accepted `url`, `referrer` or `href`, in bytes.
    pub max_url_bytes: usize,
    /// Largest accepted `properties` object (raw JSON), in bytes.
    pub max_properties_bytes: usize,
    /// Largest accepted event (raw JSON), in bytes.
    pub max_event_bytes: usize,
    /// How far past the server clock a (skew-corrected) event time may be.
    pub max_future_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_bytes: 1024,
            max_url_bytes: 4096,
            max_properties_bytes: 16 * 1024,
            max_event_bytes: 32 * 1024,
            max_future_secs: 600,
        }
    }
}

/// Machine-readable reason an event was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a JSON object, or a field of the wrong JSON type.
    MalformedEvent,
    MissingField,
    InvalidUuid,
    InvalidTimestamp,
    /// `tenant_id` differs from the authenticated tenant.
    TenantMismatch,
    UnknownType,
    /// `path` does not start with `/`.
    InvalidPath,
    /// A number outside its documented range, or not finite.
    OutOfRange,
    StringTooLong,
    EventTooLarge,
    TimestampInFuture,
    /// Older than the tenant's retention.
    TimestampTooOld,
    /// A `performance` event without any web-vital metric.
    MissingMetric,
    /// `properties` is not a JSON object.
    InvalidProperties,
}

impl Reason {
    /// All reasons, in metric-index order.
    pub const ALL: [Reason; 14] = [
        Reason::MalformedEvent,
        Reason::MissingField,
        Reason::InvalidUuid,
        Reason::InvalidTimestamp,
        Reason::TenantMismatch,
        Reason::UnknownType,
        Reason::InvalidPath,
        Reason::OutOfRange,
        Reason::StringTooLong,
        Reason::EventTooLarge,
        Reason::TimestampInFuture,
        Reason::TimestampTooOld,
        Reason::MissingMetric,
        Reason::InvalidProperties,
    ];

    /// [`Reason::as_str`] of every reason, in [`Reason::ALL`] order.
    pub const NAMES: [&'static str; 14] = [
        "malformed_event",
        "missing_field",
        "invalid_uuid",
        "invalid_timestamp",
        "tenant_mismatch",
        "unknown_type",
        "invalid_path",
        "out_of_range",
        "string_too_long",
        "event_too_large",
        "timestamp_in_future",
        "timestamp_too_old",
        "missing_metric",
        "invalid_properties",
    ];

    /// The reason as it appears in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedEvent => "malformed_event",
            Reason::MissingField => "missing_field",
            Reason::InvalidUuid => "invalid_uuid",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TenantMismatch => "tenant_mismatch",
            Reason::UnknownType => "unknown_type",
            Reason::InvalidPath => "invalid_path",
            Reason::OutOfRange => "out_of_range",
            Reason::StringTooLong => "string_too_long",
            Reason::EventTooLarge => "event_too_large",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::TimestampTooOld => "timestamp_too_old",
            Reason::MissingMetric => "missing_metric",
            Reason::InvalidProperties => "invalid_properties",
        }
    }

    /// Index into [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why one event was rejected: reported with its index in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// The offending field (`""` when the event as a whole is at fault).
    pub field: &'static str,
}

fn reject<T>(reason: Reason, field: &'static str) -> Result<T, Rejection> {
    Err(Rejection { reason, field })
}

/// What validation needs to know about the request an event came in.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext<'l> {
    pub tenant_id: Uuid,
    /// Server receive time, µs since the epoch.
    pub received_at_us: i64,
    /// `received_at - sent_at` when the batch carried a valid `sent_at`, else 0.
    pub skew_us: i64,
    pub retention_days: u32,
    pub limits: &'l Limits,
}

impl<'l> BatchContext<'l> {
    /// Builds a context; `sent_at_us` is the batch `sent_at`, when present.
    pub fn new(
        tenant_id: Uuid,
        received_at_us: i64,
        sent_at_us: Option<i64>,
        retention_days: u32,
        limits: &'l Limits,
    ) -> Self {
        Self {
            tenant_id,
            received_at_us,
            skew_us: sent_at_us.map_or(0, |s| received_at_us.saturating_sub(s)),
            retention_days,
            limits,
        }
    }
}

/// An empty or whitespace-only string is no value: a required field holding
/// one is missing.
fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn required<'b>(v: &'b Option<Text<'_>>, field: &'static str) -> Result<&'b str, Rejection> {
    match v.as_deref() {
        Some(s) if !is_blank(s) => Ok(s),
        _ => reject(Reason::MissingField, field),
    }
}

fn uuid(v: &Option<Text<'_>>, field: &'static str) -> Result<[u8; 16], Rejection> {
    let s = required(v, field)?;
    match Uuid::try_parse(s) {
        Ok(u) => Ok(u.into_bytes()),
        Err(_) => reject(Reason::InvalidUuid, field),
    }
}

fn bounded<'b>(
    v: &'b Option<Text<'_>>,
    max: usize,
    field: &'static str,
) -> Result<Option<&'b str>, Rejection> {
    match v.as_deref() {
        Some(s) if s.len() > max => reject(Reason::StringTooLong, field),
        other => Ok(other),
    }
}

fn number(
    v: Option<f64>,
    min: f64,
    max: f64,
    field: &'static str,
) -> Result<Option<f64>, Rejection> {
    match v {
        Some(n) if !n.is_finite() || n < min || n > max => reject(Reason::OutOfRange, field),
        other => Ok(other),
    }
}

/// Largest accepted screen dimension, in pixels.
pub const MAX_SCREEN_PX: f64 = 100_000.0;
/// Largest accepted click coordinate, in pixels.
pub const MAX_COORDINATE_PX: f64 = 10_000_000.0;
/// Largest accepted timing metric (`lcp`, `fcp`, `inp`, `ttfb`, `fid`), in ms.
pub const MAX_TIMING_MS: f64 = 3_600_000.0;
/// Largest accepted `cls` score.
pub const MAX_CLS: f64 = 1_000.0;
/// Longest accepted `locale` (a BCP 47 tag), in bytes.
pub const MAX_LOCALE_BYTES: usize = 35;
/// Longest accepted `timestamp` string, in bytes.
pub const MAX_TIMESTAMP_BYTES: usize = 64;

fn screen(v: Option<f64>, field: &'static str) -> Result<Option<u32>, Rejection> {
    // In range and finite, so the cast cannot wrap.
    Ok(number(v, 0.0, MAX_SCREEN_PX, field)?.map(|n| n.round() as u32))
}

/// Checks the raw size of an event before parsing it.
pub fn check_event_size(raw_len: usize, limits: &Limits) -> Result<(), Rejection> {
    if raw_len > limits.max_event_bytes {
        return reject(Reason::EventTooLarge, "");
    }
    Ok(())
}

/// Validates one parsed event. Allocates nothing.
pub fn validate_event<'a>(
    ev: &'a RawEvent<'_>,
    ctx: &BatchContext<'_>,
) -> Result<EventRecord<'a>, Rejection> {
    let l = ctx.limits;
    let id = uuid(&ev.id, "id")?;
    let tenant = uuid(&ev.tenant_id, "tenant_id")?;
    if tenant != *ctx.tenant_id.as_bytes() {
        return reject(Reason::TenantMismatch, "tenant_id");
    }
    let session_id = uuid(&ev.session_id, "session_id")?;

    let ts = required(&ev.timestamp, "timestamp")?;
    if ts.len() > MAX_TIMESTAMP_BYTES {
        return reject(Reason::InvalidTimestamp, "timestamp");
    }
    let client_timestamp_us = match parse_rfc3339_us(ts) {
        Some(t) => t,
        None => return reject(Reason::InvalidTimestamp, "timestamp"),
    };
    let timestamp_us = client_timestamp_us.saturating_add(ctx.skew_us);
    let newest = ctx
        .received_at_us
        .saturating_add(i64::from(l.max_future_secs) * US_PER_SEC);
    if timestamp_us > newest {
        return reject(Reason::TimestampInFuture, "timestamp");
    }
    let oldest = ctx
        .received_at_us
        .saturating_sub(i64::from(ctx.retention_days) * US_PER_DAY);
    if timestamp_us < oldest {
        return reject(Reason::TimestampTooOld, "timestamp");
    }

    let event_type = match EventType::from_name(required(&ev.event_type, "type")?) {
        Some(t) => t,
        None => return reject(Reason::UnknownType, "type"),
    };

    let s = l.max_string_bytes;
    let u = l.max_url_bytes;
    let screen_width = screen(ev.screen.map(|sc| sc.width), "screen")?;
    let screen_height = screen(ev.screen.map(|sc| sc.height), "screen")?;
    let mut rec = EventRecord {
        id,
        session_id,
        event_type: event_type.code(),
        timestamp_us,
        client_timestamp_us,
        user_id: bounded(&ev.user_id, s, "user_id")?,
        url: bounded(&ev.url, u, "url")?,
        path: bounded(&ev.path, s, "path")?,
        referrer: bounded(&ev.referrer, u, "referrer")?,
        title: bounded(&ev.title, s, "title")?,
        user_agent: bounded(&ev.user_agent, s, "user_agent")?,
        locale: bounded(&ev.locale, MAX_LOCALE_BYTES, "locale")?,
        screen_width,
        screen_height,
        selector: bounded(&ev.selector, s, "selector")?,
        element: bounded(&ev.element, s, "element")?,
        text: bounded(&ev.text, s, "text")?,
        href: bounded(&ev.href, u, "href")?,
        x: number(ev.x, 0.0, MAX_COORDINATE_PX, "x")?,
        y: number(ev.y, 0.0, MAX_COORDINATE_PX, "y")?,
        depth_pct: number(ev.depth_pct, 0.0, 100.0, "depth_pct")?,
        lcp: number(ev.lcp, 0.0, MAX_TIMING_MS, "lcp")?,
        fcp: number(ev.fcp, 0.0, MAX_TIMING_MS, "fcp")?,
        inp: number(ev.inp, 0.0, MAX_TIMING_MS, "inp")?,
        cls: number(ev.cls, 0.0, MAX_CLS, "cls")?,
        ttfb: number(ev.ttfb, 0.0, MAX_TIMING_MS, "ttfb")?,
        fid: number(ev.fid, 0.0, MAX_TIMING_MS, "fid")?,
        name: bounded(&ev.name, s, "name")?,
        properties: None,
    };
    if let Some(p) = &ev.properties {
        if !p.is_object() {
            return reject(Reason::InvalidProperties, "properties");
        }
        let raw = p.as_raw_str();
        if raw.len() > l.max_properties_bytes {
            return reject(Reason::StringTooLong, "properties");
        }
        rec.properties = Some(raw);
    }

    match event_type {
        EventType::Pageview => match rec.path {
            None => return reject(Reason::MissingField, "path"),
            Some(p) if is_blank(p) => return reject(Reason::MissingField, "path"),
            Some(p) if !p.starts_with('/') => return reject(Reason::InvalidPath, "path"),
            Some(_) => {}
        },
        EventType::Click => {
            let given = |v: Option<&str>| v.is_some_and(|s| !is_blank(s));
            if !given(rec.selector) && !given(rec.element) {
                return reject(Reason::MissingField, "selector");
            }
        }
        EventType::Scroll => {
            if rec.depth_pct.is_none() {
                return reject(Reason::MissingField, "depth_pct");
            }
        }
        EventType::Performance => {
            let any = [rec.lcp, rec.fcp, rec.inp, rec.cls, rec.ttfb, rec.fid]
                .iter()
                .any(Option::is_some);
            if !any {
                return reject(Reason::MissingMetric, "lcp");
            }
        }
        EventType::Custom => {
            if rec.name.is_none_or(is_blank) {
                return reject(Reason::MissingField, "name");
            }
        }
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_envelope, parse_event};
    use crate::timestamp::parse_rfc3339_us;
    use proptest::prelude::*;

    const TENANT: &str = "00000000-0000-0000-0000-000000000000";
    const NOW: &str = "2026-11-27T12:00:00Z";

    fn ctx(limits: &Limits, sent_at: Option<i64>, retention_days: u32) -> BatchContext<'_> {
        BatchContext::new(
            Uuid::nil(),
            parse_rfc3339_us(NOW).unwrap(),
            sent_at,
            retention_days,
            limits,
        )
    }

    fn base(extra: &str, ty: &str) -> String {
        format!(
            r#"{{"id":"550e8400-e29b-41d4-a716-446655440000","tenant_id":"{TENANT}",
            "session_id":"11111111-1111-1111-1111-111111111111",
            "timestamp":"2026-11-27T11:59:00Z","type":"{ty}"{extra}}}"#
        )
    }

    fn check_with(json: &str, sent_at: Option<i64>, retention: u32) -> Result<u8, Rejection> {
        let limits = Limits::default();
        let body = format!(r#"{{"events":[{json}]}}"#);
        let env = parse_envelope(body.as_bytes()).unwrap();
        let events = env.events.unwrap();
        let raw = parse_event(&events[0]).unwrap();
        validate_event(&raw, &ctx(&limits, sent_at, retention)).map(|r| r.event_type)
    }

    fn check(json: &str) -> Result<u8, Rejection> {
        check_with(json, None, 30)
    }

    fn rej(reason: Reason, field: &'static str) -> Result<u8, Rejection> {
        Err(Rejection { reason, field })
    }

    #[test]
    fn accepts_each_type() {
        assert_eq!(
            check(&base(r#","path":"/","title":"Home""#, "pageview")),
            Ok(0)
        );
        assert_eq!(
            check(&base(r#","selector":"button","x":1,"y":2"#, "click")),
            Ok(1)
        );
        assert_eq!(check(&base(r#","element":"a""#, "click")), Ok(1));
        assert_eq!(check(&base(r#","depth_pct":100"#, "scroll")), Ok(2));
        assert_eq!(
            check(&base(r#","lcp":1200.5,"cls":0.1"#, "performance")),
            Ok(3)
        );
        assert_eq!(
            check(&base(
                r#","name":"signup","properties":{"plan":"pro"}"#,
                "custom"
            )),
            Ok(4)
        );
    }

    #[test]
    fn the_reference_example_is_valid_for_a_long_retention() {
        let ev = r#"{"id":"550e8400-e29b-41d4-a716-446655440000",
         "tenant_id":"00000000-0000-0000-0000-000000000000",
         "session_id":"11111111-1111-1111-1111-111111111111",
         "timestamp":"2024-01-01T00:00:00Z","type":"pageview",
         "title":"Home","path":"/"}"#;
        assert_eq!(check_with(ev, None, 3650), Ok(0));
        assert_eq!(
            check_with(ev, None, 365),
            rej(Reason::TimestampTooOld, "timestamp")
        );
    }

    #[test]
    fn required_common_fields() {
        let no_id =
            base("", "pageview").replace(r#""id":"550e8400-e29b-41d4-a716-446655440000","#, "");
        assert_eq!(check(&no_id), rej(Reason::MissingField, "id"));
        let no_session = base(r#","path":"/""#, "pageview").replace(
            r#""session_id":"11111111-1111-1111-1111-111111111111","#,
            "",
        );
        assert_eq!(check(&no_session), rej(Reason::MissingField, "session_id"));
        let no_type = base(r#","path":"/""#, "pageview").replace(r#","type":"pageview""#, "");
        assert_eq!(check(&no_type), rej(Reason::MissingField, "type"));
        let no_ts = base(r#","path":"/""#, "pageview")
            .replace(r#""timestamp":"2026-11-27T11:59:00Z","#, "");
        assert_eq!(check(&no_ts), rej(Reason::MissingField, "timestamp"));
    }

    #[test]
    fn uuids_tenant_and_type() {
        let bad = base(r#","path":"/""#, "pageview").replace("550e8400-e29b", "zzze8400-e29b");
        assert_eq!(check(&bad), rej(Reason::InvalidUuid, "id"));
        let other = base(r#","path":"/""#, "pageview")
            .replace(TENANT, "22222222-2222-2222-2222-222222222222");
        assert_eq!(check(&other), rej(Reason::TenantMismatch, "tenant_id"));
        assert_eq!(check(&base("", "hover")), rej(Reason::UnknownType, "type"));
    }

    #[test]
    fn per_type_rules() {
        assert_eq!(
            check(&base("", "pageview")),
            rej(Reason::MissingField, "path")
        );
        assert_eq!(
            check(&base(r#","path":"home""#, "pageview")),
            rej(Reason::InvalidPath, "path")
        );
        assert_eq!(
            check(&base("", "click")),
            rej(Reason::MissingField, "selector")
        );
        assert_eq!(
            check(&base("", "scroll")),
            rej(Reason::MissingField, "depth_pct")
        );
        assert_eq!(
            check(&base(r#","depth_pct":101"#, "scroll")),
            rej(Reason::OutOfRange, "depth_pct")
        );
        assert_eq!(
            check(&base(r#","depth_pct":-1"#, "scroll")),
            rej(Reason::OutOfRange, "depth_pct")
        );
        assert_eq!(
            check(&base("", "performance")),
            rej(Reason::MissingMetric, "lcp")
        );
        assert_eq!(
            check(&base(r#","fid":-3"#, "performance")),
            rej(Reason::OutOfRange, "fid")
        );
        assert_eq!(
            check(&base("", "custom")),
            rej(Reason::MissingField, "name")
        );
        assert_eq!(
            check(&base(r#","name":"","properties":{}"#, "custom")),
            rej(Reason::MissingField, "name")
        );
        assert_eq!(
            check(&base(r#","name":" \t\n""#, "custom")),
            rej(Reason::MissingField, "name")
        );
        assert_eq!(
            check(&base(r#","path":"""#, "pageview")),
            rej(Reason::MissingField, "path")
        );
        assert_eq!(
            check(&base(r#","path":"  ""#, "pageview")),
            rej(Reason::MissingField, "path")
        );
        assert_eq!(
            check(&base(r#","selector":"","element":" ""#, "click")),
            rej(Reason::MissingField, "selector")
        );
        assert_eq!(
            check(&base(r#","selector":"","element":"a""#, "click")),
            Ok(1)
        );
        assert_eq!(
            check(
                &base(r#","path":"/""#, "pageview").replace(r#""type":"pageview""#, r#""type":"""#)
            ),
            rej(Reason::MissingField, "type")
        );
        assert_eq!(
            check(&base(r#","name":"n","properties":[1]"#, "custom")),
            rej(Reason::InvalidProperties, "properties")
        );
        assert_eq!(
            check(&base(r#","selector":"b","x":-5"#, "click")),
            rej(Reason::OutOfRange, "x")
        );
        assert_eq!(
            check(&base(
                r#","path":"/","screen":{"width":1e9,"height":10}"#,
                "pageview"
            )),
            rej(Reason::OutOfRange, "screen")
        );
    }

    #[test]
    fn string_limits() {
        let long = "a".repeat(1025);
        assert_eq!(
            check(&base(
                &format!(r#","path":"/","title":"{long}""#),
                "pageview"
            )),
            rej(Reason::StringTooLong, "title")
        );
        // URLs have their own, larger limit.
        assert_eq!(
            check(&base(&format!(r#","path":"/","url":"{long}""#), "pageview")),
            Ok(0)
        );
        let huge = "a".repeat(4097);
        assert_eq!(
            check(&base(&format!(r#","path":"/","url":"{huge}""#), "pageview")),
            rej(Reason::StringTooLong, "url")
        );
        let big_props = format!(
            r#","name":"n","properties":{{"k":"{}"}}"#,
            "v".repeat(17_000)
        );
        assert_eq!(
            check(&base(&big_props, "custom")),
            rej(Reason::StringTooLong, "properties")
        );
        let limits = Limits::default();
        assert_eq!(check_event_size(limits.max_event_bytes, &limits), Ok(()));
        assert_eq!(
            check_event_size(limits.max_event_bytes + 1, &limits),
            Err(Rejection {
                reason: Reason::EventTooLarge,
                field: ""
            })
        );
    }

    #[test]
    fn timestamps_and_skew() {
        let future = base(r#","path":"/""#, "pageview")
            .replace("2026-11-27T11:59:00Z", "2026-11-27T13:00:00Z");
        assert_eq!(check(&future), rej(Reason::TimestampInFuture, "timestamp"));
        // The client clock is one hour fast: sent_at says 13:00 while we receive at 12:00.
        let sent = parse_rfc3339_us("2026-11-27T13:00:30Z");
        assert_eq!(check_with(&future, sent, 30), Ok(0));
        let garbage =
            base(r#","path":"/""#, "pageview").replace("2026-11-27T11:59:00Z", "yesterday");
        assert_eq!(check(&garbage), rej(Reason::InvalidTimestamp, "timestamp"));
        let old = base(r#","path":"/""#, "pageview")
            .replace("2026-11-27T11:59:00Z", "2026-10-01T00:00:00Z");
        assert_eq!(check(&old), rej(Reason::TimestampTooOld, "timestamp"));
    }

    #[test]
    fn escaped_strings_are_accepted() {
        assert_eq!(
            check(&base(r#","path":"/a\u00e9","title":"q\"t""#, "pageview")),
            Ok(0)
        );
    }

    #[test]
    fn reasons_index_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Reason::NAMES[i], r.as_str());
        }
    }

    proptest! {
        #[test]
        fn parse_and_validate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let limits = Limits::default();
            let c = ctx(&limits, None, 30);
            if let Ok(env) = parse_envelope(&bytes) {
                for raw in env.events.iter().flatten() {
                    if let Ok(ev) = parse_event(raw) {
                        let _ = validate_event(&ev, &c);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_field_values_never_panic(
            id in ".{0,40}", ts in ".{0,40}", ty in "(pageview|click|scroll|performance|custom|.{0,8})",
            n in -1e4f64..1e4, path in ".{0,20}",
        ) {
            let json = sonic_rs::to_string(&sonic_rs::json!({
                "events": [{"id": id, "tenant_id": TENANT, "session_id": id, "timestamp": ts,
                            "type": ty, "path": path, "depth_pct": n, "lcp": n, "name": path}]
            })).unwrap();
            let limits = Limits::default();
            let c = ctx(&limits, None, 30);
            let env = parse_envelope(json.as_bytes()).unwrap();
            let events = env.events.unwrap();
            if let Ok(ev) = parse_event(&events[0]) {
                let _ = validate_event(&ev, &c);
            }
        }
    }
}
