//! PostHog's capture format (posthog-js, `posthog-node`, the `posthog`
//! Python library), mapped onto the engine's events. The mapping table is in
//! the README ("Switching from Segment or PostHog").
//!
//! - `POST /batch/` (server libraries): `{"api_key", "batch":[event…],
//!   "sent_at"}`; `/e/`, `/i/v0/e/`, `/capture/` (posthog-js and older
//!   clients): an array of events, one event, or the same object as `/batch/`;
//!   `/i/v1/analytics/events` (capture v1): `{"batch":[…]}` with the key in
//!   `Authorization: Bearer`.
//! - `$pageview` → `pageview` (`$current_url`, `$pathname`, `$referrer`,
//!   `title`); `$autocapture` of a click → `click` (the first of
//!   `$elements`: tag, text, `href`); `$pageleave` with
//!   `$prev_pageview_max_scroll_percentage` → `scroll`; `$web_vitals` →
//!   `performance`; `$identify`, `$set`, `$create_alias`, `$groupidentify` →
//!   `custom` named `identify`, `set`, `alias`, `group`; any other event →
//!   `custom` (`event` → `name`, `properties` kept).
//! - `uuid` → `id`, `$session_id` (else `$device_id`, else `distinct_id`) →
//!   `session_id`, each a UUID v5 in the tenant's namespace when not a UUID;
//!   `distinct_id` → `user_id`; `$raw_user_agent`, `$browser_language`,
//!   `$screen_width`/`$screen_height`. `timestamp`, else `offset` (ms before
//!   the request), else the request's time.

use std::borrow::Cow;

use engine_core::event::{RawEvent, Screen, Text};
use engine_core::validate::{check_event_size, Limits, Reason, Rejection};
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};
use uuid::Uuid;

use super::wire::{content_id, path_of, time_text, timestamp_text, uuid_text};
use super::{Mapped, Source};

/// PostHog's events as the `kind` label of `ingest_compat_events_total`
/// sees them: the special ones, and `capture` for any other.
pub const KINDS: [&str; 9] = [
    "pageview",
    "autocapture",
    "pageleave",
    "web_vitals",
    "identify",
    "set",
    "alias",
    "group",
    "capture",
];

#[derive(Debug, Default, Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<LazyValue<'a>>>,
    #[serde(borrow, default)]
    api_key: Option<Text<'a>>,
    #[serde(borrow, default)]
    sent_at: Option<Text<'a>>,
    /// A single event posted alone.
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
    #[serde(borrow, default)]
    properties: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    distinct_id: Option<Id<'a>>,
    #[serde(borrow, default)]
    uuid: Option<Text<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Text<'a>>,
    #[serde(default)]
    offset: Option<f64>,
    #[serde(borrow, default)]
    api_key: Option<Text<'a>>,
}

/// An event's `properties`, typed (parsed from the event's own text, so
/// they borrow from the body like the rest).
#[derive(Debug, Default, Deserialize)]
struct Typed<'a> {
    #[serde(borrow, default)]
    properties: Option<Props<'a>>,
}

/// What the engine reads of `properties`.
#[derive(Debug, Default, Deserialize)]
struct Props<'a> {
    #[serde(borrow, default)]
    distinct_id: Option<Id<'a>>,
    #[serde(borrow, default)]
    token: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$session_id")]
    session_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$device_id")]
    device_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$current_url")]
    current_url: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$pathname")]
    pathname: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$referrer")]
    referrer: Option<Text<'a>>,
    #[serde(borrow, default)]
    title: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$raw_user_agent")]
    user_agent: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$browser_language")]
    locale: Option<Text<'a>>,
    #[serde(default, rename = "$screen_width")]
    screen_width: Option<f64>,
    #[serde(default, rename = "$screen_height")]
    screen_height: Option<f64>,
    #[serde(borrow, default, rename = "$event_type")]
    event_type: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$elements")]
    elements: Option<Vec<Element<'a>>>,
    #[serde(default, rename = "$prev_pageview_max_scroll_percentage")]
    max_scroll: Option<f64>,
    #[serde(default, rename = "$web_vitals_LCP_value")]
    lcp: Option<f64>,
    #[serde(default, rename = "$web_vitals_FCP_value")]
    fcp: Option<f64>,
    #[serde(default, rename = "$web_vitals_INP_value")]
    inp: Option<f64>,
    #[serde(default, rename = "$web_vitals_CLS_value")]
    cls: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct Element<'a> {
    #[serde(borrow, default)]
    tag_name: Option<Text<'a>>,
    #[serde(borrow, default, rename = "$el_text")]
    text: Option<Text<'a>>,
    #[serde(borrow, default, rename = "attr__href")]
    href: Option<Text<'a>>,
    #[serde(borrow, default, rename = "attr__id")]
    id: Option<Text<'a>>,
}

/// A string, or a number (`distinct_id: 42`).
#[derive(Debug, Clone)]
struct Id<'a>(Text<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
        }
        d.deserialize_any(V)
    }
}

/// A parsed body, borrowing from the JSON.
#[derive(Debug)]
pub struct Parsed<'a> {
    events: Vec<LazyValue<'a>>,
    api_key: Option<Text<'a>>,
    sent_at: Option<Text<'a>>,
}

/// Parses any of the bodies the module docs list.
pub fn parse(json: &str) -> Result<Parsed<'_>, super::Refusal> {
    let bad = |e: sonic_rs::Error| {
        super::Refusal::new(
            400,
            "invalid_json",
            format!("body is not a PostHog batch: {}", super::short(&e)),
        )
    };
    let value: LazyValue<'_> = sonic_rs::from_str(json).map_err(bad)?;
    if value.is_array() {
        let events: Vec<LazyValue<'_>> = sonic_rs::from_str(json).map_err(bad)?;
        return Ok(Parsed {
            events,
            api_key: None,
            sent_at: None,
        });
    }
    let body: Body<'_> = sonic_rs::from_str(json).map_err(bad)?;
    match (body.batch, body.event) {
        (Some(events), _) => Ok(Parsed {
            events,
            api_key: body.api_key,
            sent_at: body.sent_at,
        }),
        (None, Some(_)) => Ok(Parsed {
            events: vec![value],
            api_key: body.api_key,
            sent_at: body.sent_at,
        }),
        (None, None) => Err(super::Refusal::new(
            400,
            "invalid_batch",
            "a PostHog body is an event, an array of events or an object with a `batch` array"
                .into(),
        )),
    }
}

impl Source for Parsed<'_> {
    fn key(&self) -> Option<String> {
        if let Some(k) = &self.api_key {
            return Some(k.to_string());
        }
        // posthog-js: each event's `properties.token` (or its `api_key`).
        let first = self.events.first()?.as_raw_str();
        let ev: Event<'_> = sonic_rs::from_str(first).ok()?;
        if let Some(k) = ev.api_key {
            return Some(k.to_string());
        }
        let typed: Typed<'_> = sonic_rs::from_str(first).ok()?;
        typed.properties?.token.map(|t| t.to_string())
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn sent_at(&self) -> Option<&str> {
        self.sent_at.as_deref()
    }

    fn map<'s>(
        &'s self,
        tenant: &Uuid,
        tenant_text: &'s str,
        now: i64,
        limits: &Limits,
    ) -> Mapped<'s> {
        let mut out = Mapped::with_capacity(self.events.len());
        for raw in &self.events {
            let text = raw.as_raw_str();
            if let Err(r) = check_event_size(text.len(), limits) {
                out.reject(r);
                continue;
            }
            match one(raw, tenant, tenant_text, now) {
                Ok((ev, kind)) => out.accept(ev, text.len(), kind),
                Err(r) => out.reject(r),
            }
        }
        out
    }
}

fn text(s: &'static str) -> Option<Text<'static>> {
    Some(Text(Cow::Borrowed(s)))
}

fn one<'a>(
    raw: &'a LazyValue<'_>,
    tenant: &Uuid,
    tenant_text: &'a str,
    now: i64,
) -> Result<(RawEvent<'a>, usize), Rejection> {
    let malformed = Rejection {
        reason: Reason::MalformedEvent,
        field: "",
    };
    if !raw.is_object() {
        return Err(malformed);
    }
    let raw_text: &'a str = raw.as_raw_str();
    let e: Event<'a> = sonic_rs::from_str(raw_text).map_err(|_| malformed)?;
    let name = e.event.ok_or(Rejection {
        reason: Reason::MissingField,
        field: "event",
    })?;
    if e.properties.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(Rejection {
            reason: Reason::InvalidProperties,
            field: "properties",
        });
    }
    let typed: Typed<'a> = sonic_rs::from_str(raw_text).map_err(|_| Rejection {
        reason: Reason::MalformedEvent,
        field: "properties",
    })?;
    let p = typed.properties.unwrap_or_default();
    let distinct = e.distinct_id.or(p.distinct_id).map(|d| d.0);
    let session = p
        .session_id
        .as_ref()
        .or(p.device_id.as_ref())
        .or(distinct.as_ref())
        .ok_or(Rejection {
            reason: Reason::MissingField,
            field: "distinct_id",
        })?;
    let id = match &e.uuid {
        Some(u) => uuid_text(tenant, u),
        None => content_id(tenant, raw_text),
    };
    let timestamp = match (&e.timestamp, e.offset) {
        (Some(t), _) => timestamp_text(t),
        (None, Some(ms)) if ms.is_finite() && ms >= 0.0 => {
            time_text(now.saturating_sub((ms * 1000.0) as i64))
        }
        _ => time_text(now),
    };
    let screen = match (p.screen_width, p.screen_height) {
        (Some(width), Some(height)) => Some(Screen { width, height }),
        _ => None,
    };
    let session_id = uuid_text(tenant, session);
    let mut ev = RawEvent {
        id: Some(id),
        tenant_id: Some(Text(Cow::Borrowed(tenant_text))),
        session_id: Some(session_id),
        timestamp: Some(timestamp),
        user_id: distinct,
        user_agent: p.user_agent,
        locale: p.locale,
        screen,
        ..RawEvent::default()
    };
    let path = p.pathname.or_else(|| {
        p.current_url
            .as_ref()
            .and_then(|u| path_of(u))
            .map(|s| Text(Cow::Owned(s.to_owned())))
    });
    ev.url = p.current_url;
    ev.path = path;
    // posthog-js names a visit without a referrer `$direct`.
    ev.referrer = p.referrer.filter(|r| &**r != "$direct");
    let custom = |ev: &mut RawEvent<'a>, n: Text<'a>, props: Option<LazyValue<'a>>| {
        ev.event_type = text("custom");
        ev.name = Some(n);
        ev.properties = props;
    };
    let kind = match &*name {
        "$pageview" => {
            ev.event_type = text("pageview");
            ev.title = p.title;
            0
        }
        "$autocapture" if p.event_type.as_deref() == Some("click") => {
            ev.event_type = text("click");
            if let Some(el) = p.elements.and_then(|v| v.into_iter().next()) {
                ev.element = el.tag_name;
                ev.text = el.text;
                ev.href = el.href;
                ev.selector = el.id.map(|id| Text(Cow::Owned(format!("#{}", &*id))));
            }
            1
        }
        "$pageleave" if p.max_scroll.is_some() => {
            ev.event_type = text("scroll");
            ev.depth_pct = p.max_scroll.map(|f| (f * 100.0).clamp(0.0, 100.0));
            2
        }
        "$web_vitals" => {
            ev.event_type = text("performance");
            (ev.lcp, ev.fcp, ev.inp, ev.cls) = (p.lcp, p.fcp, p.inp, p.cls);
            3
        }
        special @ ("$identify" | "$set" | "$create_alias" | "$groupidentify") => {
            let (n, k) = match special {
                "$identify" => ("identify", 4),
                "$set" => ("set", 5),
                "$create_alias" => ("alias", 6),
                _ => ("group", 7),
            };
            custom(&mut ev, Text(Cow::Borrowed(n)), e.properties);
            k
        }
        _ => {
            let k = if name.starts_with("$autocapture") {
                1
            } else if &*name == "$pageleave" {
                2
            } else {
                8
            };
            custom(&mut ev, name.clone(), e.properties);
            k
        }
    };
    Ok((ev, kind))
}
