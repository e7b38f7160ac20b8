//! Segment's wire format (the tracking API that analytics.js,
//! `@segment/analytics-node` and `segment-analytics-python` speak), mapped
//! onto the engine's events. The mapping table is in
//! docs/segment-posthog.md.
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

use edge_http::ErrorCode;
use std::borrow::Cow;

use engine_core::event::{RawEvent, Screen, Text};
use engine_core::validate::{Reason, Rejection};
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};
use uuid::Uuid;

use super::wire::{
    self, content_id, path_of, reborrow, timestamp_text, uuid_text, Id, LooseNum, LooseText,
};
use super::Source;

/// Segment's call types, the `kind` label of `ingest_compat_events_total`.
pub const KINDS: [&str; 6] = ["page", "screen", "track", "identify", "group", "alias"];

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
    context: Option<LazyValue<'a>>,
}

/// `context`, read leniently: a field of another type is left out.
#[derive(Debug, Default, Deserialize)]
struct Context<'a> {
    #[serde(borrow, default)]
    page: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "userAgent")]
    user_agent: LooseText<'a>,
    #[serde(borrow, default)]
    locale: LooseText<'a>,
    #[serde(borrow, default)]
    screen: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    campaign: Option<LazyValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    path: LooseText<'a>,
    #[serde(borrow, default)]
    url: LooseText<'a>,
    #[serde(borrow, default)]
    referrer: LooseText<'a>,
    #[serde(borrow, default)]
    title: LooseText<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct ScreenSize {
    #[serde(default)]
    width: LooseNum,
    #[serde(default)]
    height: LooseNum,
}

#[derive(Debug, Default, Deserialize)]
struct Campaign<'a> {
    #[serde(borrow, default)]
    source: LooseText<'a>,
    #[serde(borrow, default)]
    medium: LooseText<'a>,
    #[serde(borrow, default)]
    name: LooseText<'a>,
    #[serde(borrow, default)]
    term: LooseText<'a>,
    #[serde(borrow, default)]
    content: LooseText<'a>,
}

/// What a `page` or convention `track` carries in `properties`, read
/// leniently: a field of another type is left out, never the event.
#[derive(Debug, Default, Deserialize)]
struct Props<'a> {
    #[serde(borrow, default)]
    path: LooseText<'a>,
    #[serde(borrow, default)]
    url: LooseText<'a>,
    #[serde(borrow, default)]
    referrer: LooseText<'a>,
    #[serde(borrow, default)]
    title: LooseText<'a>,
    #[serde(borrow, default)]
    selector: LooseText<'a>,
    #[serde(borrow, default)]
    element: LooseText<'a>,
    #[serde(borrow, default)]
    text: LooseText<'a>,
    #[serde(borrow, default)]
    href: LooseText<'a>,
    #[serde(default)]
    x: LooseNum,
    #[serde(default)]
    y: LooseNum,
    #[serde(default)]
    depth_pct: LooseNum,
    #[serde(default)]
    lcp: LooseNum,
    #[serde(default)]
    fcp: LooseNum,
    #[serde(default)]
    inp: LooseNum,
    #[serde(default)]
    cls: LooseNum,
    #[serde(default)]
    ttfb: LooseNum,
    #[serde(default)]
    fid: LooseNum,
}

/// A nested object of `whole` (a message's text), read leniently with
/// `whole`'s lifetime; the default when it is absent or not an object.
fn nested<'a, T: Deserialize<'a> + Default>(whole: &'a str, value: Option<&LazyValue<'_>>) -> T {
    value
        .filter(|v| v.is_object())
        .and_then(|v| reborrow(whole, v.as_raw_str()))
        .and_then(|raw| sonic_rs::from_str(raw).ok())
        .unwrap_or_default()
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
    super::Refusal::new(400, ErrorCode::InvalidJson, message)
}

/// A body's top level: the batch kept raw (not collected), the key and the
/// send time.
#[derive(Debug, Default, Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    batch: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: LooseText<'a>,
    #[serde(borrow, default, rename = "writeKey")]
    write_key: LooseText<'a>,
}

/// Parses a body of `call` (UTF-8 already checked: sonic-rs does not check
/// what it keeps raw), keeping at most `max_events` messages (413 beyond).
pub fn parse(json: &str, call: Call, max_events: usize) -> Result<Parsed<'_>, super::Refusal> {
    let top: Top<'_> = sonic_rs::from_str(json)
        .map_err(|e| malformed(format!("body is not a Segment call: {}", super::short(&e))))?;
    match call {
        Call::Batch => {
            let batch = top
                .batch
                .as_ref()
                .and_then(|b| reborrow(json, b.as_raw_str()))
                .ok_or_else(|| {
                    super::Refusal::new(
                        400,
                        ErrorCode::InvalidBatch,
                        "a Segment batch is a JSON object with a `batch` array".into(),
                    )
                })?;
            let messages = wire::array(batch, max_events).map_err(|too_many| {
                if too_many {
                    super::too_many(max_events)
                } else {
                    malformed("`batch` is not a JSON array".into())
                }
            })?;
            Ok(Parsed {
                messages,
                sent_at: top.sent_at.0,
                write_key: top.write_key.0,
                path_kind: None,
            })
        }
        Call::One(kind) => {
            let one: LazyValue<'_> = sonic_rs::from_str(json)
                .map_err(|e| malformed(format!("body is not JSON: {}", super::short(&e))))?;
            // The key and the send time of a single message are its own.
            Ok(Parsed {
                messages: vec![one],
                sent_at: top.sent_at.0,
                write_key: top.write_key.0,
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
        // A batch without a top-level key: its first message's (read alone,
        // before the message is bounded or parsed).
        let first = self.messages.first()?;
        let v = sonic_rs::get(first.as_raw_str(), ["writeKey"]).ok()?;
        v.as_str().map(str::to_owned)
    }

    fn raw_events(&self) -> &[LazyValue<'_>] {
        &self.messages
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
        self.message(raw, tenant, tenant_text, base)
    }
}

fn reject<T>(reason: Reason, field: &'static str) -> Result<T, Rejection> {
    Err(Rejection { reason, field })
}

impl Parsed<'_> {
    fn message<'a>(
        &self,
        raw: &'a LazyValue<'_>,
        tenant: &Uuid,
        tenant_text: &'a str,
        base: i64,
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
        let client_time = m
            .timestamp
            .as_ref()
            .or(m.original_timestamp.as_ref())
            .or(m.sent_at.as_ref());
        let id = match &m.message_id {
            Some(id) => uuid_text(tenant, id),
            None => content_id(tenant, text, client_time.is_some()),
        };
        // A message without any time is stamped now (`base`: the time the
        // skew correction turns into the time it arrived).
        let timestamp = client_time.map_or_else(|| super::wire::time_text(base), timestamp_text);
        let ctx: Context<'a> = nested(text, m.context.as_ref());
        let page: Page<'a> = nested(text, ctx.page.as_ref());
        let size: ScreenSize = nested(text, ctx.screen.as_ref());
        let screen = match (size.width.0, size.height.0) {
            (Some(width), Some(height)) => Some(Screen { width, height }),
            _ => None,
        };
        let campaign: Option<Campaign<'a>> = ctx.campaign.as_ref().map(|c| nested(text, Some(c)));
        let mut ev = RawEvent {
            id: Some(id),
            tenant_id: Some(Text(Cow::Borrowed(tenant_text))),
            session_id: Some(uuid_text(tenant, &session.0)),
            timestamp: Some(timestamp),
            user_id: m.user_id.map(|u| u.0),
            user_agent: ctx.user_agent.0,
            locale: ctx.locale.0,
            screen,
            ..RawEvent::default()
        };
        let props = || -> Props<'a> { nested(text, m.properties.as_ref()) };
        let custom = |ev: &mut RawEvent<'a>, name: Text<'a>, body: Option<LazyValue<'a>>| {
            ev.event_type = Some(Text(Cow::Borrowed("custom")));
            ev.name = Some(name);
            ev.properties = body;
        };
        match KINDS[kind] {
            "page" => {
                let p = props();
                ev.event_type = Some(Text(Cow::Borrowed("pageview")));
                let url = p.url.0.or(page.url.0);
                ev.path = p
                    .path
                    .0
                    .or(page.path.0)
                    .or_else(|| url.as_ref().and_then(|u| owned_path(u)));
                ev.url = url.map(|u| with_campaign(u, campaign.as_ref()));
                ev.referrer = p.referrer.0.or(page.referrer.0);
                ev.title = p.title.0.or(page.title.0).or(m.name);
                // The page's own properties are kept too.
                ev.properties = m.properties.filter(|p| p.is_object());
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
                            (p.selector.0, p.element.0, p.text.0, p.href.0);
                        (ev.x, ev.y) = (p.x.0, p.y.0);
                        context_page(&mut ev, page);
                    }
                    "Page Scrolled" => {
                        let p = props();
                        ev.event_type = Some(Text(Cow::Borrowed("scroll")));
                        ev.depth_pct = p.depth_pct.0;
                        context_page(&mut ev, page);
                    }
                    "Web Vitals" => {
                        let p = props();
                        ev.event_type = Some(Text(Cow::Borrowed("performance")));
                        (ev.lcp, ev.fcp, ev.inp, ev.cls, ev.ttfb, ev.fid) =
                            (p.lcp.0, p.fcp.0, p.inp.0, p.cls.0, p.ttfb.0, p.fid.0);
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
            // Where the user was when identified, like any other call.
            call @ ("identify" | "group") => {
                custom(&mut ev, Text(Cow::Borrowed(call)), m.traits);
                context_page(&mut ev, page);
            }
            _ => {
                custom(&mut ev, Text(Cow::Borrowed("alias")), None);
                context_page(&mut ev, page);
            }
        }
        Ok((ev, kind))
    }
}

/// A page's URL, path and referrer on an event that is not a pageview.
fn context_page<'a>(ev: &mut RawEvent<'a>, page: Page<'a>) {
    ev.path = page.path.0;
    ev.url = page.url.0;
    ev.referrer = page.referrer.0;
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
        ("utm_source", &c.source.0),
        ("utm_medium", &c.medium.0),
        ("utm_campaign", &c.name.0),
        ("utm_term", &c.term.0),
        ("utm_content", &c.content.0),
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
