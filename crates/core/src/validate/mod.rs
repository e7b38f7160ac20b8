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
mod limits;
#[cfg(test)]
mod tests;
