//! PostHog's capture format (posthog-js, `posthog-node`, the `posthog`
//! Python library), mapped onto the engine's events. The mapping table is in
//! docs/segment-posthog.md.
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

use edge_http::ErrorCode;
use std::borrow::Cow;

use engine_core::event::{RawEvent, Screen, Text};
use engine_core::validate::{Reason, Rejection};
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};
use uuid::Uuid;

use super::wire::{
    self, content_id, path_of, reborrow, time_text, timestamp_text, uuid_text, Id, LooseNum,
    LooseText,
};
use super::Source;

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
}

/// What the engine reads of `properties`, leniently: a field of another
/// type is left out, never the event.
#[derive(Debug, Default, Deserialize)]
struct Props<'a> {
    #[serde(borrow, default)]
    distinct_id: Option<Id<'a>>,
    #[serde(borrow, default, rename = "$session_id")]
    session_id: LooseText<'a>,
    #[serde(borrow, default, rename = "$device_id")]
    device_id: LooseText<'a>,
    #[serde(borrow, default, rename = "$current_url")]
    current_url: LooseText<'a>,
    #[serde(borrow, default, rename = "$pathname")]
    pathname: LooseText<'a>,
    #[serde(borrow, default, rename = "$referrer")]
    referrer: LooseText<'a>,
    #[serde(borrow, default)]
    title: LooseText<'a>,
    #[serde(borrow, default, rename = "$raw_user_agent")]
    user_agent: LooseText<'a>,
    #[serde(borrow, default, rename = "$browser_language")]
    locale: LooseText<'a>,
    #[serde(default, rename = "$screen_width")]
    screen_width: LooseNum,
    #[serde(default, rename = "$screen_height")]
    screen_height: LooseNum,
    #[serde(borrow, default, rename = "$event_type")]
    event_type: LooseText<'a>,
    /// Kept raw: only its first element is read.
    #[serde(borrow, default, rename = "$elements")]
    elements: Option<LazyValue<'a>>,
    #[serde(default, rename = "$prev_pageview_max_scroll_percentage")]
    max_scroll: LooseNum,
    #[serde(default, rename = "$web_vitals_LCP_value")]
    lcp: LooseNum,
    #[serde(default, rename = "$web_vitals_FCP_value")]
    fcp: LooseNum,
    #[serde(default, rename = "$web_vitals_INP_value")]
    inp: LooseNum,
    #[serde(default, rename = "$web_vitals_CLS_value")]
    cls: LooseNum,
    /// posthog-js: `false` while the person is anonymous (its `distinct_id`
    /// is then a device's, not a user id).
    #[serde(default, rename = "$is_identified")]
    is_identified: Option<LooseBool>,
}

/// A boolean, or nothing when it holds another type.
#[derive(Debug, Clone, Copy, Default)]
struct LooseBool(Option<bool>);

impl<'de> Deserialize<'de> for LooseBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = sonic_rs::Value::deserialize(d).ok();
        Ok(LooseBool(v.and_then(|v| v.as_bool())))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Element<'a> {
    #[serde(borrow, default)]
    tag_name: LooseText<'a>,
    #[serde(borrow, default, rename = "$el_text")]
    text: LooseText<'a>,
    #[serde(borrow, default, rename = "attr__href")]
    href: LooseText<'a>,
    #[serde(borrow, default, rename = "attr__id")]
    id: LooseText<'a>,
}

/// A body's top level: the batch kept raw (not collected), the key, the
/// send time, and whether it is one event itself.
#[derive(Debug, Default, Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    batch: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    api_key: LooseText<'a>,
    #[serde(borrow, default)]
    sent_at: LooseText<'a>,
    #[serde(default)]
    event: Option<serde::de::IgnoredAny>,
}

/// A parsed body, borrowing from the JSON.
#[derive(Debug)]
pub struct Parsed<'a> {
    events: Vec<LazyValue<'a>>,
    api_key: Option<Text<'a>>,
    sent_at: Option<Text<'a>>,
}

/// Parses any of the bodies the module docs list (UTF-8 already checked),
/// keeping at most `max_events` events (413 beyond).
pub fn parse(json: &str, max_events: usize) -> Result<Parsed<'_>, super::Refusal> {
    let invalid = || {
        super::Refusal::new(
            400,
            ErrorCode::InvalidBatch,
            "a PostHog body is an event, an array of events or an object with a `batch` array"
                .into(),
        )
    };
    fn events(raw: &str, max_events: usize) -> Result<Vec<LazyValue<'_>>, bool> {
        wire::array(raw, max_events)
    }
    let refused = |too_many: bool| {
        if too_many {
            super::too_many(max_events)
        } else {
            invalid()
        }
    };
    if json.trim_start().starts_with('[') {
        return Ok(Parsed {
            events: events(json, max_events).map_err(refused)?,
            api_key: None,
            sent_at: None,
        });
    }
    let top: Top<'_> = sonic_rs::from_str(json).map_err(|e| {
        super::Refusal::new(
            400,
            ErrorCode::InvalidJson,
            format!("body is not a PostHog batch: {}", super::short(&e)),
        )
    })?;
    if let Some(batch) = top
        .batch
        .as_ref()
        .and_then(|b| reborrow(json, b.as_raw_str()))
    {
        return Ok(Parsed {
            events: events(batch, max_events).map_err(refused)?,
            api_key: top.api_key.0,
            sent_at: top.sent_at.0,
        });
    }
    if top.event.is_none() {
        return Err(invalid());
    }
    let one: LazyValue<'_> = sonic_rs::from_str(json).map_err(|_| invalid())?;
    Ok(Parsed {
        events: vec![one],
        api_key: top.api_key.0,
        sent_at: top.sent_at.0,
    })
}

impl Source for Parsed<'_> {
    fn key(&self) -> Option<String> {
        if let Some(k) = &self.api_key {
            return Some(k.to_string());
        }
        // posthog-js: each event's `properties.token` (or its `api_key`),
        // read alone, before the event is bounded or parsed.
        let first = self.events.first()?.as_raw_str();
        let key = |path: &[&str]| {
            sonic_rs::get(first, path)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        key(&["api_key"]).or_else(|| key(&["properties", "token"]))
    }

    fn raw_events(&self) -> &[LazyValue<'_>] {
        &self.events
    }

    fn sent_at(&self) -> Option<&str> {
        self.sent_at.as_deref()
    }

    fn one<'a>(
        &self,
        raw: &'a LazyValue<'_>,
        tenant: &Uuid,
        tenant_text: &'a str,
        base: i64,
    ) -> Result<(RawEvent<'a>, usize), Rejection> {
        event(raw, tenant, tenant_text, base)
    }
}

fn text(s: &'static str) -> Option<Text<'static>> {
    Some(Text(Cow::Borrowed(s)))
}

fn event<'a>(
    raw: &'a LazyValue<'_>,
    tenant: &Uuid,
    tenant_text: &'a str,
    base: i64,
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
    let p: Props<'a> = e
        .properties
        .as_ref()
        .and_then(|v| reborrow(raw_text, v.as_raw_str()))
        .and_then(|raw| sonic_rs::from_str(raw).ok())
        .unwrap_or_default();
    let distinct = e.distinct_id.or(p.distinct_id).map(|d| d.0);
    let session = p
        .session_id
        .0
        .as_ref()
        .or(p.device_id.0.as_ref())
        .or(distinct.as_ref())
        .ok_or(Rejection {
            reason: Reason::MissingField,
            field: "distinct_id",
        })?;
    let id = match &e.uuid {
        Some(u) => uuid_text(tenant, u),
        None => content_id(tenant, raw_text, e.timestamp.is_some()),
    };
    // A time the engine makes (now, or `offset` ms before it) is given as
    // `base`-relative, which the batch's skew correction turns into the
    // time it arrived.
    let timestamp = match (&e.timestamp, e.offset) {
        (Some(t), _) => timestamp_text(t),
        (None, Some(ms)) if ms.is_finite() && ms >= 0.0 => {
            time_text(base.saturating_sub((ms * 1000.0) as i64))
        }
        _ => time_text(base),
    };
    let screen = match (p.screen_width.0, p.screen_height.0) {
        (Some(width), Some(height)) => Some(Screen { width, height }),
        _ => None,
    };
    let session_id = uuid_text(tenant, session);
    let mut ev = RawEvent {
        id: Some(id),
        tenant_id: Some(Text(Cow::Borrowed(tenant_text))),
        session_id: Some(session_id),
        timestamp: Some(timestamp),
        // An anonymous person's `distinct_id` names a device, not a user.
        user_id: distinct.filter(|_| !matches!(p.is_identified, Some(LooseBool(Some(false))))),
        user_agent: p.user_agent.0,
        locale: p.locale.0,
        screen,
        ..RawEvent::default()
    };
    let url = p.current_url.0;
    ev.path = p.pathname.0.or_else(|| {
        url.as_ref()
            .and_then(|u| path_of(u))
            .map(|s| Text(Cow::Owned(s.to_owned())))
    });
    ev.url = url;
    // posthog-js names a visit without a referrer `$direct`.
    ev.referrer = p.referrer.0.filter(|r| &**r != "$direct");
    let custom = |ev: &mut RawEvent<'a>, n: Text<'a>, props: Option<LazyValue<'a>>| {
        ev.event_type = text("custom");
        ev.name = Some(n);
        ev.properties = props;
    };
    let kind = match &*name {
        "$pageview" => {
            ev.event_type = text("pageview");
            ev.title = p.title.0;
            0
        }
        "$autocapture" if p.event_type.0.as_deref() == Some("click") => {
            ev.event_type = text("click");
            let first = p
                .elements
                .as_ref()
                .and_then(|v| reborrow(raw_text, v.as_raw_str()))
                .and_then(|raw| sonic_rs::to_array_iter(raw).next())
                .and_then(Result::ok);
            let el: Element<'a> = first
                .as_ref()
                .and_then(|v| reborrow(raw_text, v.as_raw_str()))
                .and_then(|raw| sonic_rs::from_str(raw).ok())
                .unwrap_or_default();
            ev.element = el.tag_name.0;
            ev.text = el.text.0;
            ev.href = el.href.0;
            ev.selector = el.id.0.map(|id| Text(Cow::Owned(format!("#{}", &*id))));
            1
        }
        "$pageleave" if p.max_scroll.0.is_some() => {
            ev.event_type = text("scroll");
            ev.depth_pct = p.max_scroll.0.map(|f| (f * 100.0).clamp(0.0, 100.0));
            2
        }
        "$web_vitals" => {
            ev.event_type = text("performance");
            (ev.lcp, ev.fcp, ev.inp, ev.cls) = (p.lcp.0, p.fcp.0, p.inp.0, p.cls.0);
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
