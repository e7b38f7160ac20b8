//! Segment's wire format (the tracking API that analytics.js,
//! `@segment/analytics-node` and `segment-analytics-python` speak), mapped
//! onto the engine's events. The mapping table is in the README
//! ("Switching from Segment or PostHog").
//!
//! - `POST /v1/batch` and `/v1/b`: `{"batch":[message…], "sentAt", "writeKey"}`;
//!   `/v1/p` `/v1/t` `/v1/i` `/v1/s` `/v1/g` `/v1/a` (and `/v1/page`, `/v1/track`,
//!   …): one message, whose `type` the path gives when the message lacks it.
//! - `page` → `pageview` (path, URL, referrer and title from `properties`,
//!   else `context.page`); `track` → `custom` (`event` → `name`), except the
//!   conventions `Element Clicked` → `click`, `Page Scrolled` → `scroll`,
//!   `Web Vitals` → `performance` (their fields from `properties`);
//!   `identify`, `screen`, `group`, `alias` → `custom` named so.
//! - `messageId` → `id`, `anonymousId` (else `userId`) → `session_id`, each a
//!   UUID v5 in the tenant's namespace when not a UUID; `userId` → `user_id`;
//!   `context.userAgent`, `locale`, `screen`; `context.campaign` → `utm_*`
//!   on the URL when the URL has none.

use std::borrow::Cow;

use engine_core::event::{RawEvent, Screen, Text};
use engine_core::validate::{check_event_size, Limits, Reason, Rejection};
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};
use uuid::Uuid;

use super::wire::{content_id, path_of, timestamp_text, uuid_text};
use super::{Mapped, Source};

/// Segment's call types, the `kind` label of `ingest_compat_events_total`.
pub const KINDS: [&str; 6] = ["page", "screen", "track", "identify", "group", "alias"];

/// A Segment body: a batch, or one message.
#[derive(Debug, Default, Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<LazyValue<'a>>>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Option<Text<'a>>,
    #[serde(borrow, default, rename = "writeKey")]
    write_key: Option<Text<'a>>,
}

/// A string, or a number the library did not stringify (`userId: 42`).
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
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
struct Message<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    properties: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    traits: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<Id<'a>>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<Id<'a>>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Text<'a>>,
    #[serde(borrow, default, rename = "originalTimestamp")]
    original_timestamp: Option<Text<'a>>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Option<Text<'a>>,
    #[serde(borrow, default)]
    context: Option<Context<'a>>,
    #[serde(borrow, default, rename = "writeKey")]
    write_key: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Context<'a> {
    #[serde(borrow, default)]
    page: Option<Page<'a>>,
    #[serde(borrow, default, rename = "userAgent")]
    user_agent: Option<Text<'a>>,
    #[serde(borrow, default)]
    locale: Option<Text<'a>>,
    #[serde(default)]
    screen: Option<Screen>,
    #[serde(borrow, default)]
    campaign: Option<Campaign<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    path: Option<Text<'a>>,
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    referrer: Option<Text<'a>>,
    #[serde(borrow, default)]
    title: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Campaign<'a> {
    #[serde(borrow, default)]
    source: Option<Text<'a>>,
    #[serde(borrow, default)]
    medium: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    term: Option<Text<'a>>,
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
}

/// A message's `properties`, typed (parsed from the message's own text, so
/// they borrow from the body like the rest).
#[derive(Debug, Default, Deserialize)]
struct Typed<'a> {
    #[serde(borrow, default)]
    properties: Option<Props<'a>>,
}

/// What a `page` or convention `track` carries in `properties`.
#[derive(Debug, Default, Deserialize)]
struct Props<'a> {
    #[serde(borrow, default)]
    path: Option<Text<'a>>,
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    referrer: Option<Text<'a>>,
    #[serde(borrow, default)]
    title: Option<Text<'a>>,
    #[serde(borrow, default)]
    selector: Option<Text<'a>>,
    #[serde(borrow, default)]
    element: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    href: Option<Text<'a>>,
    #[serde(default)]
    x: Option<f64>,
    #[serde(default)]
    y: Option<f64>,
    #[serde(default)]
    depth_pct: Option<f64>,
    #[serde(default)]
    lcp: Option<f64>,
    #[serde(default)]
    fcp: Option<f64>,
    #[serde(default)]
    inp: Option<f64>,
    #[serde(default)]
    cls: Option<f64>,
    #[serde(default)]
    ttfb: Option<f64>,
    #[serde(default)]
    fid: Option<f64>,
}

/// The call a single-message path names (`/v1/p` is a `page`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `/v1/batch`, `/v1/b`: a batch.
    Batch,
    /// One message of this type (its index in [`KINDS`]).
    One(usize),
}

/// A parsed body, borrowing from the JSON.
#[derive(Debug)]
pub struct Parsed<'a> {
    messages: Vec<LazyValue<'a>>,
    sent_at: Option<Text<'a>>,
    write_key: Option<Text<'a>>,
    /// The type a single-message path gives.
    path_kind: Option<usize>,
}

fn malformed(message: String) -> super::Refusal {
    super::Refusal::new(400, "invalid_json", message)
}

/// Parses a body of `call` (the JSON is UTF-8-checked first: sonic-rs
/// does not check what it keeps raw).
pub fn parse(json: &str, call: Call) -> Result<Parsed<'_>, super::Refusal> {
    match call {
        Call::Batch => {
            let body: Body<'_> = sonic_rs::from_str(json).map_err(|e| {
                malformed(format!("body is not a Segment batch: {}", super::short(&e)))
            })?;
            let Some(messages) = body.batch else {
                return Err(super::Refusal::new(
                    400,
                    "invalid_batch",
                    "a Segment batch is a JSON object with a `batch` array".into(),
                ));
            };
            Ok(Parsed {
                messages,
                sent_at: body.sent_at,
                write_key: body.write_key,
                path_kind: None,
            })
        }
        Call::One(kind) => {
            let one: LazyValue<'_> = sonic_rs::from_str(json)
                .map_err(|e| malformed(format!("body is not JSON: {}", super::short(&e))))?;
            // The key and the send time of a single message are its own.
            let head: Message<'_> = sonic_rs::from_str(json).unwrap_or_default();
            Ok(Parsed {
                messages: vec![one],
                sent_at: head.sent_at,
                write_key: head.write_key,
                path_kind: Some(kind),
            })
        }
    }
}

impl Source for Parsed<'_> {
    fn key(&self) -> Option<String> {
        if let Some(k) = &self.write_key {
            return Some(k.to_string());
        }
        // A batch without a top-level key: its first message's.
        let first = self.messages.first()?;
        let m: Message<'_> = sonic_rs::from_str(first.as_raw_str()).ok()?;
        m.write_key.map(|k| k.to_string())
    }

    fn len(&self) -> usize {
        self.messages.len()
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
        let mut out = Mapped::with_capacity(self.messages.len());
        for raw in &self.messages {
            let text = raw.as_raw_str();
            if let Err(r) = check_event_size(text.len(), limits) {
                out.reject(r);
                continue;
            }
            match self.one(raw, tenant, tenant_text, now) {
                Ok((ev, kind)) => out.accept(ev, text.len(), kind),
                Err(r) => out.reject(r),
            }
        }
        out
    }
}

fn reject<T>(reason: Reason, field: &'static str) -> Result<T, Rejection> {
    Err(Rejection { reason, field })
}

impl Parsed<'_> {
    fn one<'a>(
        &self,
        raw: &'a LazyValue<'_>,
        tenant: &Uuid,
        tenant_text: &'a str,
        now: i64,
    ) -> Result<(RawEvent<'a>, usize), Rejection> {
        if !raw.is_object() {
            return reject(Reason::MalformedEvent, "");
        }
        let text: &'a str = raw.as_raw_str();
        let m: Message<'a> = sonic_rs::from_str(text).map_err(|_| Rejection {
            reason: Reason::MalformedEvent,
            field: "",
        })?;
        let kind = match m.kind.as_deref() {
            Some(k) => KINDS.iter().position(|n| *n == k).ok_or(Rejection {
                reason: Reason::UnknownType,
                field: "type",
            })?,
            None => self.path_kind.ok_or(Rejection {
                reason: Reason::MissingField,
                field: "type",
            })?,
        };
        let session = m
            .anonymous_id
            .as_ref()
            .or(m.user_id.as_ref())
            .ok_or(Rejection {
                reason: Reason::MissingField,
                field: "anonymousId",
            })?;
        let id = match &m.message_id {
            Some(id) => uuid_text(tenant, id),
            None => content_id(tenant, text),
        };
        let timestamp = m
            .timestamp
            .as_ref()
            .or(m.original_timestamp.as_ref())
            .or(m.sent_at.as_ref())
            .map_or_else(|| super::wire::time_text(now), timestamp_text);
        let ctx = m.context.unwrap_or_default();
        let page = ctx.page.unwrap_or_default();
        let mut ev = RawEvent {
            id: Some(id),
            tenant_id: Some(Text(Cow::Borrowed(tenant_text))),
            session_id: Some(uuid_text(tenant, &session.0)),
            timestamp: Some(timestamp),
            user_id: m.user_id.map(|u| u.0),
            user_agent: ctx.user_agent,
            locale: ctx.locale,
            screen: ctx.screen,
            ..RawEvent::default()
        };
        let props = || -> Props<'a> {
            sonic_rs::from_str::<Typed<'a>>(text)
                .ok()
                .and_then(|t| t.properties)
                .unwrap_or_default()
        };
        let custom = |ev: &mut RawEvent<'a>, name: Text<'a>, body: Option<LazyValue<'a>>| {
            ev.event_type = Some(Text(Cow::Borrowed("custom")));
            ev.name = Some(name);
            ev.properties = body;
        };
        match KINDS[kind] {
            "page" => {
                let p = props();
                ev.event_type = Some(Text(Cow::Borrowed("pageview")));
                let url = p.url.or(page.url);
                ev.path = p
                    .path
                    .or(page.path)
                    .or_else(|| url.as_ref().and_then(|u| owned_path(u)));
                ev.url = url.map(|u| with_campaign(u, ctx.campaign.as_ref()));
                ev.referrer = p.referrer.or(page.referrer);
                ev.title = p.title.or(page.title).or(m.name);
            }
            "track" => {
                let name = m.event.ok_or(Rejection {
                    reason: Reason::MissingField,
                    field: "event",
                })?;
                match &*name {
                    "Element Clicked" => {
                        let p = props();
                        ev.event_type = Some(Text(Cow::Borrowed("click")));
                        (ev.selector, ev.element, ev.text, ev.href) =
                            (p.selector, p.element, p.text, p.href);
                        (ev.x, ev.y) = (p.x, p.y);
                        context_page(&mut ev, page);
                    }
                    "Page Scrolled" => {
                        let p = props();
                        ev.event_type = Some(Text(Cow::Borrowed("scroll")));
                        ev.depth_pct = p.depth_pct;
                        context_page(&mut ev, page);
                    }
                    "Web Vitals" => {
                        let p = props();
                        ev.event_type = Some(Text(Cow::Borrowed("performance")));
                        (ev.lcp, ev.fcp, ev.inp, ev.cls, ev.ttfb, ev.fid) =
                            (p.lcp, p.fcp, p.inp, p.cls, p.ttfb, p.fid);
                        context_page(&mut ev, page);
                    }
                    _ => {
                        custom(&mut ev, name, m.properties);
                        context_page(&mut ev, page);
                    }
                }
            }
            "screen" => {
                custom(&mut ev, Text(Cow::Borrowed("screen")), m.properties);
                ev.title = m.name;
            }
            call @ ("identify" | "group") => {
                custom(&mut ev, Text(Cow::Borrowed(call)), m.traits);
            }
            _ => custom(&mut ev, Text(Cow::Borrowed("alias")), None),
        }
        Ok((ev, kind))
    }
}

/// A page's URL, path and referrer on an event that is not a pageview.
fn context_page<'a>(ev: &mut RawEvent<'a>, page: Page<'a>) {
    ev.path = page.path;
    ev.url = page.url;
    ev.referrer = page.referrer;
}

/// The path of `url`, owned (the URL is moved on).
fn owned_path<'a>(url: &Text<'a>) -> Option<Text<'a>> {
    path_of(url).map(|p| Text(Cow::Owned(p.to_owned())))
}

/// `url` with `context.campaign` as `utm_*` parameters, when it has none of
/// its own: the engine reads campaigns from the URL.
fn with_campaign<'a>(url: Text<'a>, campaign: Option<&Campaign<'a>>) -> Text<'a> {
    let Some(c) = campaign else {
        return url;
    };
    if url.contains("utm_") {
        return url;
    }
    let params = [
        ("utm_source", &c.source),
        ("utm_medium", &c.medium),
        ("utm_campaign", &c.name),
        ("utm_term", &c.term),
        ("utm_content", &c.content),
    ];
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in params {
        if let Some(v) = v {
            query.append_pair(k, v);
            any = true;
        }
    }
    if !any {
        return url;
    }
    let (base, fragment) = url
        .split_once('#')
        .map_or((&*url, None), |(b, f)| (b, Some(f)));
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut s = format!("{base}{sep}{}", query.finish());
    if let Some(f) = fragment {
        s.push('#');
        s.push_str(f);
    }
    Text(Cow::Owned(s))
}
