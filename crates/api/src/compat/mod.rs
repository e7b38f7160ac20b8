//! Segment- and PostHog-compatible ingestion: thin adapters onto the native
//! path, so a team changes one host name and keeps the libraries it has.
//!
//! Each adapter parses its wire format in place (`segment.rs`,
//! `posthog.rs`) into the engine's own [`RawEvent`]s, and from there the
//! native path does the rest, unchanged: the same validation, records,
//! ring, broker acknowledgement and exactly-once sink (`ingest::seal`,
//! `ingest::send`). Tenants and keys are the native ones: the Segment write
//! key and the PostHog project key are a tenant's write key (`pk_…`), which
//! alone names its tenant (`TenantRegistry::authenticate_public_key`); it
//! comes from the `Authorization` header (Basic user, or Bearer) when there
//! is one, checked on the head like `/ingest`'s, else from the body
//! (`writeKey`, `api_key`, `properties.token`), checked once the body is
//! parsed. Secret keys are refused on these public paths. Origins and CORS
//! are `/ingest`'s (the route table's `Cors::Tenant`).
//!
//! Answers are what each library expects: Segment `{"success":true}`,
//! PostHog `{"status":1}`, with the per-event detail added when an event was
//! refused. A PostHog path answers a tenant over its rate limit `503` with
//! `Retry-After`, not `429`: posthog-js drops a batch answered 429 and
//! retries a 503, so the 503 loses nothing.
//!
//! `docs.rs` answers the start-up documents the browser libraries fetch
//! before they send anything.

pub mod docs;
pub mod posthog;
pub mod segment;
pub mod wire;

use edge_http::ErrorCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine_core::event::RawEvent;
use engine_core::tenant::AuthError;
use engine_core::timestamp::parse_rfc3339_us;
use engine_core::validate::{check_event_size, Limits, Rejection};
use engine_core::Tenant;
use sonic_rs::LazyValue;
use uuid::Uuid;

use crate::http::{RequestHead, Response};
use crate::ingest::{self, Prepared};
use crate::metrics::Stage;
use crate::routes::Admitted;
use crate::shard::Shard;
use crate::state::{Authed, Tenants};

/// Which library's wire format (the `api` label of the compat counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Segment,
    Posthog,
}

impl Api {
    /// Both, in metric order.
    pub const ALL: [Api; 2] = [Api::Segment, Api::Posthog];

    /// The `api` label.
    pub fn name(self) -> &'static str {
        match self {
            Api::Segment => "segment",
            Api::Posthog => "posthog",
        }
    }

    /// The `kind` labels of its events.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Api::Segment => &segment::KINDS,
            Api::Posthog => &posthog::KINDS,
        }
    }
}

/// What a compat route answers (the route table's handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Segment's tracking API: a batch, or one message.
    Segment(segment::Call),
    /// PostHog's capture endpoints.
    Posthog,
    /// `GET /v1/projects/<writeKey>/settings` (analytics.js's CDN document).
    SegmentSettings,
    /// `POST /flags`, `/decide` (posthog-js's feature flags: none).
    PosthogFlags,
    /// `GET /array/<key>/config` and `config.js` (posthog-js's remote config).
    PosthogConfig { js: bool },
}

impl Endpoint {
    /// The adapter it belongs to.
    pub fn api(self) -> Api {
        match self {
            Endpoint::Segment(_) | Endpoint::SegmentSettings => Api::Segment,
            Endpoint::Posthog | Endpoint::PosthogFlags | Endpoint::PosthogConfig { .. } => {
                Api::Posthog
            }
        }
    }

    /// Whether it carries events (the others are documents).
    pub fn ingests(self) -> bool {
        matches!(self, Endpoint::Segment(_) | Endpoint::Posthog)
    }
}

/// A refusal of a whole body, before any event is looked at.
#[derive(Debug)]
pub struct Refusal {
    status: u16,
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub fn new(status: u16, code: ErrorCode, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    fn response(&self) -> Response {
        Response::error(self.status, self.code, &self.message)
    }
}

/// 413 for a body of more than `max` events (`http.max_batch_events`).
pub fn too_many(max: usize) -> Refusal {
    Refusal::new(
        413,
        ErrorCode::BatchTooLarge,
        format!("the batch holds more than {max} events, the limit"),
    )
}

/// Longest parser message quoted in an answer.
const MAX_PARSE_MESSAGE_BYTES: usize = 256;

/// A parser's message, cut on a character boundary (it quotes the input).
pub fn short(e: &sonic_rs::Error) -> String {
    engine_text::shown(&e.to_string(), MAX_PARSE_MESSAGE_BYTES).into_owned()
}

/// Events mapped from a body: each the engine's [`RawEvent`] and its size
/// on the wire, or `None` with its rejection; the adapter's kind of each.
#[derive(Debug)]
pub struct Mapped<'a> {
    events: Vec<Option<(RawEvent<'a>, usize)>>,
    rejected: Vec<(usize, Rejection)>,
    /// The kind of each event (its index in [`Api::kinds`]); `None` when
    /// refused by the mapping.
    kinds: Vec<Option<usize>>,
}

impl<'a> Mapped<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
            rejected: Vec::new(),
            kinds: Vec::with_capacity(n),
        }
    }

    fn accept(&mut self, ev: RawEvent<'a>, size: usize, kind: usize) {
        self.events.push(Some((ev, size)));
        self.kinds.push(Some(kind));
    }

    fn reject(&mut self, r: Rejection) {
        self.rejected.push((self.events.len(), r));
        self.events.push(None);
        self.kinds.push(None);
    }
}

/// A parsed body of one adapter.
pub trait Source {
    /// The write key the body carries, if any.
    fn key(&self) -> Option<String>;
    /// Its events, raw (bounded by `http.max_batch_events` when parsed).
    fn raw_events(&self) -> &[LazyValue<'_>];
    /// When the client sent it (RFC 3339), for the clock-skew correction.
    fn sent_at(&self) -> Option<&str>;
    /// One event as the engine's, and its kind (an index in
    /// [`Api::kinds`]); `tenant_text` is the tenant id as text, which the
    /// event borrows; `base` the time, in µs, of an event stamped by the
    /// engine (the request's time as the client's clock has it: the batch's
    /// skew correction then makes it the time it arrived).
    fn one<'a>(
        &self,
        raw: &'a LazyValue<'_>,
        tenant: &Uuid,
        tenant_text: &'a str,
        base: i64,
    ) -> Result<(RawEvent<'a>, usize), Rejection>;

    /// How many events it holds.
    fn len(&self) -> usize {
        self.raw_events().len()
    }
    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps every event, each bounded by `limits.max_event_bytes` first.
    fn map<'s>(
        &'s self,
        tenant: &Uuid,
        tenant_text: &'s str,
        base: i64,
        limits: &Limits,
    ) -> Mapped<'s> {
        let events = self.raw_events();
        let mut out = Mapped::with_capacity(events.len());
        for raw in events {
            let size = raw.as_raw_str().len();
            if let Err(r) = check_event_size(size, limits) {
                out.reject(r);
                continue;
            }
            match self.one(raw, tenant, tenant_text, base) {
                Ok((ev, kind)) => out.accept(ev, size, kind),
                Err(r) => out.reject(r),
            }
        }
        out
    }
}

/// The checks of a compat route's head that need no tenant: shutdown, a
/// body type these libraries send (JSON, `text/plain`, a form, or none), an
/// encoding the edge decodes.
pub fn gate(shard: &Shard, head: &RequestHead) -> Result<(), Response> {
    ingest::gate(shard, head, true)
}

/// The checks of a compat ingest head once the header named `tenant` (or
/// none did: the key is in the body): a body at all, the tenant's rate, the
/// broker.
pub fn admit(
    shard: &Shard,
    head: &RequestHead,
    api: Api,
    tenants: &Tenants,
    tenant: Option<&Tenant>,
) -> Result<Option<Authed>, Response> {
    if head.framing == crate::http::Framing::None {
        return Err(Response::error(
            400,
            ErrorCode::EmptyBody,
            "request body is empty",
        ));
    }
    let authed = match tenant {
        Some(t) => {
            let a = ingest::admit(shard, head, tenants, t).map_err(|r| adapt(api, r))?;
            Some(a)
        }
        None => {
            if !shard.state.broker_up() {
                return Err(Response::error(
                    503,
                    ErrorCode::BrokerUnavailable,
                    "the broker is not reachable; retry later",
                )
                .retry_after(shard.retry_after_secs()));
            }
            None
        }
    };
    Ok(authed)
}

/// An answer as `api`'s libraries need it: PostHog's 429 becomes a 503 with
/// the same `Retry-After` (posthog-js would drop the batch; module docs).
pub fn adapt(api: Api, resp: Response) -> Response {
    if api == Api::Posthog && resp.status == 429 {
        let secs = resp.retry_after_secs.unwrap_or(1);
        return Response::error(
            503,
            ErrorCode::RateLimited,
            "the project is over its rate limit; retry later",
        )
        .retry_after(secs);
    }
    resp
}

/// The tenant a body's key names, with the checks `/ingest` makes on its
/// head: a known write key, an allowed origin.
fn tenant_of_body(
    shard: &Shard,
    head: &RequestHead,
    buf: &[u8],
    key: Option<String>,
) -> Result<Authed, Response> {
    let Some(key) = key else {
        return Err(Response::error(
            401,
            ErrorCode::Unauthorized,
            "no write key: send it as the Basic user (Segment), in `writeKey`, `api_key` or `properties.token`",
        ));
    };
    let tenants = shard.state.tenants.load();
    let tenant = public_tenant(&tenants, &key)?;
    crate::cors::check_origin(tenant, head, buf)?;
    Ok(Authed {
        tenant: tenant.clone(),
        limiter: tenants.limiters.get(&tenant.id).cloned(),
    })
}

/// The tenant whose write key `key` is (401/403 otherwise).
pub fn public_tenant<'t>(tenants: &'t Tenants, key: &str) -> Result<&'t Tenant, Response> {
    match tenants.registry.authenticate_public_key(key) {
        Ok(a) => Ok(a.tenant),
        Err(AuthError::SecretInQuery) => Err(Response::error(
            401,
            ErrorCode::SecretKeyOnPublicPath,
            "a secret key (sk_) must never be sent where pages and apps can read it: use the \
             tenant's write key (pk_); consider rotating this key",
        )),
        Err(AuthError::Disabled) => Err(Response::error(
            403,
            ErrorCode::TenantDisabled,
            "this tenant is disabled",
        )),
        Err(_) => Err(Response::error(
            401,
            ErrorCode::Unauthorized,
            "unknown write key",
        )),
    }
}

/// What a body became: its records, its tenant, and how many accepted
/// events of each kind.
struct Ready {
    prepared: Prepared,
    authed: Authed,
    kinds: Vec<u64>,
}

/// Maps and seals a parsed body (synchronous).
fn prepare(
    shard: &Shard,
    admitted: &Admitted,
    (head, buf): (&RequestHead, &[u8]),
    api: Api,
    src: &impl Source,
) -> Result<Ready, Response> {
    let state = &*shard.state;
    let authed = match admitted.authed() {
        Some(a) => a.clone(),
        None => tenant_of_body(shard, head, buf, src.key())?,
    };
    if src.is_empty() {
        return Err(Response::error(
            400,
            ErrorCode::EmptyBatch,
            "the batch holds no events",
        ));
    }
    let now = ingest::received_now_us();
    // A malformed `sentAt` corrects nothing (these libraries' own servers
    // ignore it too), it refuses nothing.
    let sent_at_us = src.sent_at().and_then(parse_rfc3339_us);
    let tenant_text = authed.tenant.id.hyphenated().to_string();
    let base = sent_at_us.unwrap_or(now);
    let mapped = src.map(&authed.tenant.id, &tenant_text, base, &state.limits);
    let prepared = ingest::seal(
        state,
        &authed.tenant,
        (now, sent_at_us),
        &mapped.events,
        mapped.rejected,
    )?;
    let mut kinds = vec![0u64; api.kinds().len()];
    let mut refused = prepared.rejected.iter().map(|(i, _)| *i).peekable();
    for (i, k) in mapped.kinds.iter().enumerate() {
        if refused.peek() == Some(&i) {
            refused.next();
            continue;
        }
        if let Some(slot) = k.and_then(|k| kinds.get_mut(k)) {
            *slot += 1;
        }
    }
    Ok(Ready {
        prepared,
        authed,
        kinds,
    })
}

/// Handles a compat ingest request once its body is read: `buf` is the
/// connection's buffer (the head's ranges point into it).
pub async fn ingest(
    shard: &Shard,
    admitted: &Admitted,
    (head, buf): (&RequestHead, &[u8]),
    body: &[u8],
    started: Instant,
    endpoint: Endpoint,
) -> Response {
    let api = endpoint.api();
    let counters = shard.counters();
    counters
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let t_parse = Instant::now();
    let ready = wire::with_json(shard, head, buf, body, |json| {
        let json = std::str::from_utf8(json).map_err(|e| {
            Response::error(
                400,
                ErrorCode::InvalidJson,
                &format!("body is not valid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let max = shard.state.config.http.max_batch_events;
        match endpoint {
            Endpoint::Segment(call) => {
                let src = segment::parse(json, call, max).map_err(|r| r.response())?;
                prepare(shard, admitted, (head, buf), api, &src)
            }
            _ => {
                let src = posthog::parse(json, max).map_err(|r| r.response())?;
                prepare(shard, admitted, (head, buf), api, &src)
            }
        }
    });
    Stage::ParseValidate.record(
        &mut shard.histograms.borrow_mut(),
        t_parse.elapsed().as_micros() as u64,
    );
    let Ready {
        mut prepared,
        authed,
        kinds,
    } = match ready {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    for (_, r) in &prepared.rejected {
        counters.events_rejected[r.reason.index()].fetch_add(1, Ordering::Relaxed);
        counters.compat_dropped(api, r.reason.index());
    }
    if prepared.accepted == 0 {
        return ingest::batch_response(400, "error", &prepared, started);
    }
    if let Err(resp) = ingest::send(shard, admitted.client, &authed, &mut prepared, started).await {
        return adapt(api, resp);
    }
    for (k, n) in kinds.iter().enumerate() {
        counters.compat_events(api, k, *n);
    }
    success(api, &prepared)
}

/// 200 as `api`'s libraries expect it, with the refused events' detail
/// when there are any.
fn success(api: Api, p: &Prepared) -> Response {
    use std::io::Write;
    let mut b = Vec::with_capacity(64 + p.rejected.len() * 64);
    b.extend_from_slice(match api {
        Api::Segment => br#"{"success":true"#.as_slice(),
        Api::Posthog => br#"{"status":1"#.as_slice(),
    });
    if !p.rejected.is_empty() {
        let _ = write!(
            b,
            ",\"events_accepted\":{},\"events_rejected\":{},\"errors\":",
            p.accepted,
            p.rejected.len()
        );
        ingest::push_rejections(&mut b, &p.rejected);
    }
    b.push(b'}');
    Response::json(200, b)
}
