//! The edge's route table: every path a node answers, each declared once.
//!
//! A [`Route`] says in one place what the rest of the edge needs to know of
//! it: its paths and methods, its body limit, the key it needs, its CORS
//! policy, which listener serves it ([`Surface`], `admin.rs`) and its
//! [`Handler`]. The connection loop (`conn.rs`) knows no route: it asks
//! [`lookup`] for the head's route, runs [`Route::on_head`] before any body
//! byte is read, reads the body under the limit that returns, and hands it
//! to [`Route::on_body`]. The binary's sink-only status listener looks routes
//! up here too, so both listeners agree on paths, methods and surfaces.
//!
//! The stages of a request, in order; each may answer, and a refusal on the
//! head never reads the body:
//!
//! 1. the client's request rate (`[clients]`; never the probes);
//! 2. the listener and the admin token ([`Surface`], [`Key::Admin`]);
//! 3. path (404) and method (405 with `Allow`);
//! 4. a route with [`Cors::Tenant`] answers `OPTIONS` as the CORS preflight
//!    (`cors.rs`); an embedded file is answered in full (`assets.rs`);
//! 5. the handler's own checks that need no tenant ([`Handler::Ingest`]:
//!    shutdown, content type, encoding);
//! 6. the tenant's key, as [`Key::Tenant`] says (`auth.rs`), and with
//!    [`Cors::Tenant`] the tenant's `allowed_origins` against `Origin`;
//! 7. the handler's checks that need the tenant (ingest: a body at all, the
//!    tenant's rate, the broker);
//! 8. the body, read under [`BodyRule`] (`http::reader`), then the handler.
//!
//! Every answer of a [`Cors::Tenant`] route to a request with a well-formed
//! `Origin` lets that origin read it (errors too: [`Route::answer_origin`]).
//!
//! Adding a route is one entry in [`ROUTES`]; a new kind of handler is one
//! [`Handler`] variant and its arms in [`Route::on_head`] and
//! [`Route::on_body`]. Handlers are an enum, not boxed futures: dispatch is a
//! `match`, with no allocation per request.

use edge_http::ErrorCode;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine_core::config::HttpConfig;

use crate::admin::{self, Listener};
use crate::assets::{self, Asset};
use crate::auth::{self, Key, TenantKey};
use crate::clients::Request;
use crate::compat::segment::Call;
use crate::compat::{self, docs, Endpoint};
use crate::health::{self, NodeRoute};
use crate::http::{BodyLimit, Method, RequestHead, Response};
use crate::metrics::Stage;
use crate::shard::Shard;
use crate::state::Authed;
use crate::{cors, ingest};

/// Largest body of a query request (a query is a few hundred bytes; its
/// values are bounded by `query::request` anyway).
pub const QUERY_BODY_BYTES: usize = 64 * 1024;
/// Largest Segment body: Segment's own limit of a batch (500 KB); each
/// event is at most `limits.max_event_bytes` (32 KiB, as Segment's).
pub const SEGMENT_BODY_BYTES: usize = 500 * 1024;

/// A set of methods and its `Allow` header.
#[derive(Debug)]
pub struct Methods {
    list: &'static [Method],
    allow: &'static str,
}

impl Methods {
    /// Whether `m` is one of them.
    pub fn allows(&self, m: Method) -> bool {
        self.list.contains(&m)
    }

    /// The `Allow` header of a 405.
    pub fn allow(&self) -> &'static str {
        self.allow
    }
}

/// `GET` and `HEAD`: documents and files.
pub const GET_HEAD: Methods = Methods {
    list: &[Method::Get, Method::Head],
    allow: "GET, HEAD",
};
/// `POST` only.
pub const POST: Methods = Methods {
    list: &[Method::Post],
    allow: "POST",
};
/// `POST`, and `OPTIONS` for the CORS preflight.
pub const POST_OPTIONS: Methods = Methods {
    list: &[Method::Post, Method::Options],
    allow: "POST, OPTIONS",
};
/// Every method (the unknown path: 404 whatever the method).
const ANY: Methods = Methods {
    list: &[
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Options,
        Method::Other,
    ],
    allow: "GET, HEAD, POST, OPTIONS",
};

/// What a route does with a request body.
#[derive(Debug)]
pub enum BodyRule {
    /// Reads none: at most `BODILESS_DRAIN_BYTES` are read and discarded
    /// (413 beyond; `http::reader`).
    Discard,
    /// Reads one of at most this many bytes (413 beyond), from the config.
    Max(fn(&HttpConfig) -> usize),
}

impl BodyRule {
    /// The limit the request reader applies.
    pub fn limit(&self, http: &HttpConfig) -> BodyLimit {
        match self {
            BodyRule::Discard => BodyLimit::Discard,
            BodyRule::Max(f) => BodyLimit::Read(f(http)),
        }
    }
}

/// A route's CORS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// No `Access-Control-*` headers (same-origin pages, servers, tools).
    None,
    /// A tenant's public endpoint, for pages of the tenant's sites: `OPTIONS`
    /// is the preflight, every answer is readable by the requesting origin,
    /// and sending is checked against the tenant's `allowed_origins`
    /// (`cors.rs` has the policy and why).
    Tenant,
}

/// Which listener answers a route (`admin.rs` has the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Tenants' routes and files: the main listener.
    Public,
    /// `/health/live` and `/health/ready`: every listener, no token, no
    /// client limit (load balancers).
    Probe,
    /// The operators' routes: on the admin listener when there is one.
    Admin,
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `POST /ingest` (`ingest`).
    Ingest,
    /// `POST /api/v1/query` (`query`).
    Query,
    /// A route every node answers the same (`health`).
    Node(NodeRoute),
    /// An embedded file (`assets`), answered on the head.
    Asset(Asset),
    /// The Segment and PostHog adapters and their start-up documents
    /// (`compat`).
    Compat(Endpoint),
    /// No such path.
    NotFound,
}

/// One entry of the route table.
#[derive(Debug)]
pub struct Route {
    /// The paths it answers, without a query, matched exactly; a `*` stands
    /// for one non-empty segment (a key: [`Route::param`]).
    pub paths: &'static [&'static str],
    pub methods: &'static Methods,
    pub body: BodyRule,
    pub key: Key,
    pub cors: Cors,
    pub surface: Surface,
    pub handler: Handler,
}

fn ingest_body(http: &HttpConfig) -> usize {
    http.max_body_bytes
}

fn query_body(http: &HttpConfig) -> usize {
    http.max_body_bytes.min(QUERY_BODY_BYTES)
}

fn segment_body(http: &HttpConfig) -> usize {
    http.max_body_bytes.min(SEGMENT_BODY_BYTES)
}

/// A Segment or PostHog ingest route.
const fn compat(paths: &'static [&'static str], endpoint: Endpoint) -> Route {
    let body = match endpoint {
        Endpoint::Segment(_) => BodyRule::Max(segment_body),
        _ => BodyRule::Max(ingest_body),
    };
    Route {
        paths,
        methods: &POST_OPTIONS,
        body,
        key: Key::Tenant(TenantKey::Public),
        cors: Cors::Tenant,
        surface: Surface::Public,
        handler: Handler::Compat(endpoint),
    }
}

/// A start-up document of a browser library: its key is in the path.
const fn compat_doc(paths: &'static [&'static str], endpoint: Endpoint) -> Route {
    let (methods, body) = match endpoint {
        // posthog-js posts its flags request (a small JSON body, read and
        // ignored).
        Endpoint::PosthogFlags => (&POST_OPTIONS, BodyRule::Max(query_body)),
        _ => (&GET_HEAD, BodyRule::Discard),
    };
    Route {
        paths,
        methods,
        body,
        key: Key::None,
        cors: Cors::Tenant,
        surface: Surface::Public,
        handler: Handler::Compat(endpoint),
    }
}

/// A route every node answers, for operators (`Key::Admin`: the admin
/// token guards it when one is set).
const fn node(paths: &'static [&'static str], route: NodeRoute, surface: Surface) -> Route {
    let key = match surface {
        Surface::Admin => Key::Admin,
        Surface::Public | Surface::Probe => Key::None,
    };
    Route {
        paths,
        methods: &GET_HEAD,
        body: BodyRule::Discard,
        key,
        cors: Cors::None,
        surface,
        handler: Handler::Node(route),
    }
}

/// An embedded file: the page's files hold no data, so even the on-call
/// page's are served without the admin token.
const fn file(paths: &'static [&'static str], asset: Asset, surface: Surface) -> Route {
    Route {
        paths,
        methods: &GET_HEAD,
        body: BodyRule::Discard,
        key: Key::None,
        cors: Cors::None,
        surface,
        handler: Handler::Asset(asset),
    }
}

/// Every route the shards answer.
pub static ROUTES: &[Route] = &[
    Route {
        paths: &["/ingest"],
        methods: &POST_OPTIONS,
        body: BodyRule::Max(ingest_body),
        key: Key::Tenant(TenantKey::Write),
        cors: Cors::Tenant,
        surface: Surface::Public,
        handler: Handler::Ingest,
    },
    Route {
        paths: &["/api/v1/query"],
        methods: &POST,
        body: BodyRule::Max(query_body),
        key: Key::Tenant(TenantKey::Secret),
        cors: Cors::None,
        surface: Surface::Public,
        handler: Handler::Query,
    },
    node(&["/health/live"], NodeRoute::Live, Surface::Probe),
    node(&["/health/ready"], NodeRoute::Ready, Surface::Probe),
    node(&["/health"], NodeRoute::Health, Surface::Admin),
    node(&["/metrics"], NodeRoute::Metrics, Surface::Admin),
    node(&["/debug/latency"], NodeRoute::DebugLatency, Surface::Admin),
    node(&["/debug/stats"], NodeRoute::DebugStats, Surface::Admin),
    file(&["/sdk.js", "/sdk/v1.js"], Asset::Sdk, Surface::Public),
    file(
        &["/dashboard", "/dashboard/"],
        Asset::DashboardHtml,
        Surface::Public,
    ),
    file(&["/dashboard/app.js"], Asset::DashboardJs, Surface::Public),
    file(
        &["/dashboard/app.css"],
        Asset::DashboardCss,
        Surface::Public,
    ),
    file(
        &["/debug/dashboard", "/debug/dashboard/"],
        Asset::OncallHtml,
        Surface::Admin,
    ),
    file(
        &["/debug/dashboard/oncall.js"],
        Asset::OncallJs,
        Surface::Admin,
    ),
    file(
        &["/debug/dashboard/oncall.css"],
        Asset::OncallCss,
        Surface::Admin,
    ),
    compat(&["/v1/batch", "/v1/b"], Endpoint::Segment(Call::Batch)),
    compat(&["/v1/p", "/v1/page"], Endpoint::Segment(Call::One(0))),
    compat(&["/v1/s", "/v1/screen"], Endpoint::Segment(Call::One(1))),
    compat(&["/v1/t", "/v1/track"], Endpoint::Segment(Call::One(2))),
    compat(&["/v1/i", "/v1/identify"], Endpoint::Segment(Call::One(3))),
    compat(&["/v1/g", "/v1/group"], Endpoint::Segment(Call::One(4))),
    compat(&["/v1/a", "/v1/alias"], Endpoint::Segment(Call::One(5))),
    compat_doc(&["/v1/projects/*/settings"], Endpoint::SegmentSettings),
    compat(
        &[
            "/batch",
            "/batch/",
            "/e",
            "/e/",
            "/i/v0/e",
            "/i/v0/e/",
            "/capture",
            "/capture/",
            "/track",
            "/track/",
            "/i/v1/analytics/events",
        ],
        Endpoint::Posthog,
    ),
    compat_doc(
        &["/flags", "/flags/", "/decide", "/decide/"],
        Endpoint::PosthogFlags,
    ),
    compat_doc(
        &["/array/*/config.js"],
        Endpoint::PosthogConfig { js: true },
    ),
    compat_doc(&["/array/*/config"], Endpoint::PosthogConfig { js: false }),
];

/// The route of every other path: 404, whatever the method.
pub static NOT_FOUND: Route = Route {
    paths: &[],
    methods: &ANY,
    body: BodyRule::Discard,
    key: Key::None,
    cors: Cors::None,
    surface: Surface::Public,
    handler: Handler::NotFound,
};

/// The route of `path` (the request target without its query).
pub fn lookup(path: &[u8]) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.paths.iter().any(|p| matched(p, path).is_some()))
        .unwrap_or(&NOT_FOUND)
}

/// Whether `path` matches `pattern`, and the segment its `*` stood for
/// (empty for a pattern without one).
fn matched<'p>(pattern: &str, path: &'p [u8]) -> Option<&'p [u8]> {
    let Some((before, after)) = pattern.split_once('*') else {
        return (pattern.as_bytes() == path).then_some(&path[..0]);
    };
    let rest = path.strip_prefix(before.as_bytes())?;
    let segment = rest.strip_suffix(after.as_bytes())?;
    (!segment.is_empty() && !segment.contains(&b'/')).then_some(segment)
}

/// What [`Route::on_head`] decided.
#[derive(Debug)]
pub enum Next {
    /// Answered on the head alone; the body, if any, is never read.
    Answer(Response),
    /// Read the body under `limit`, then call [`Route::on_body`].
    Read(Admitted),
}

/// A request its route admitted on the head.
#[derive(Debug)]
pub struct Admitted {
    /// The body's limit, for the request reader.
    pub limit: BodyLimit,
    /// The client the request's bytes count for (`[clients]`, `budget.rs`).
    pub client: IpAddr,
    /// The tenant its key named, for a route that needs one (`None` for a
    /// compat route whose key is in the body).
    authed: Option<Authed>,
}

impl Admitted {
    /// The tenant its key named on the head.
    pub fn authed(&self) -> Option<&Authed> {
        self.authed.as_ref()
    }
}

impl Route {
    /// The segment a `*` of this route's paths stood for in `path`.
    pub fn param<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        self.paths
            .iter()
            .filter(|p| p.contains('*'))
            .find_map(|p| matched(p, path))
    }

    /// 404 for the unknown path, 405 (with `Allow`) for a wrong method.
    pub fn refuse(&self, m: Method) -> Option<Response> {
        if self.handler == Handler::NotFound {
            return Some(Response::error(
                404,
                ErrorCode::NotFound,
                "no such endpoint; see /health, /ingest, /metrics",
            ));
        }
        if self.methods.allows(m) {
            return None;
        }
        let allow = self.methods.allow();
        let mut r = Response::error(405, ErrorCode::MethodNotAllowed, &format!("use {allow}"));
        r.allow = Some(allow);
        Some(r)
    }

    /// The origin every answer to this request lets read it (a preflight
    /// has its own headers), copied out of the head once: the read buffer
    /// changes (drained, or lost with a cancelled read) before some answers
    /// are written.
    pub fn answer_origin(&self, head: &RequestHead, buf: &[u8]) -> Option<String> {
        if self.cors == Cors::Tenant && head.method != Method::Options {
            cors::origin(head, buf).map(str::to_owned)
        } else {
            None
        }
    }

    /// Stages 1 to 7 (module docs), on the head of a request that came in
    /// from `peer` on the main listener (over TLS when `secure`).
    pub fn on_head(
        &self,
        shard: &Shard,
        head: &RequestHead,
        (peer, secure): (IpAddr, bool),
        buf: &[u8],
    ) -> Next {
        match self.check_head(shard, head, (peer, secure), buf) {
            Ok(authed) => Next::Read(Admitted {
                limit: self.body.limit(&shard.state.config.http),
                client: client_of(shard, head, peer, buf),
                authed,
            }),
            Err(answer) => Next::Answer(answer),
        }
    }

    fn check_head(
        &self,
        shard: &Shard,
        head: &RequestHead,
        (peer, secure): (IpAddr, bool),
        buf: &[u8],
    ) -> Result<Option<Authed>, Response> {
        if self.surface != Surface::Probe {
            client_check(shard, head, peer, buf).map_err(|r| match self.handler {
                // posthog-js drops a batch answered 429 (compat.rs).
                Handler::Compat(e) => compat::adapt(e.api(), r),
                _ => r,
            })?;
        }
        let authorization = head.authorization.clone().map(|r| &buf[r]);
        let admin = &shard.state.config.admin;
        if let Some(refused) = admin::refusal(self, Listener::Main, authorization, admin) {
            return Err(refused);
        }
        if let Some(refused) = self.refuse(head.method) {
            return Err(refused);
        }
        if self.cors == Cors::Tenant && head.method == Method::Options {
            return Err(cors::preflight(&shard.state, head, buf));
        }
        match self.handler {
            Handler::Asset(a) => return Err(assets::answer(a, head, buf)),
            Handler::Compat(e) if !e.ingests() => {
                if e != Endpoint::PosthogFlags {
                    return Err(self.document(shard, head, secure, buf, e));
                }
            }
            Handler::Ingest => ingest::gate(shard, head, false)?,
            Handler::Compat(_) => compat::gate(shard, head)?,
            Handler::Query | Handler::Node(_) | Handler::NotFound => {}
        }
        let Key::Tenant(need) = self.key else {
            return Ok(None);
        };
        let tenants = shard.state.tenants.load();
        let tenant = auth::tenant(need, &tenants, head, buf)?;
        if let (Cors::Tenant, Some(t)) = (self.cors, tenant) {
            cors::check_origin(t, head, buf)?;
        }
        match (self.handler, tenant) {
            (Handler::Compat(e), t) => compat::admit(shard, head, e.api(), &tenants, t),
            (Handler::Ingest, Some(t)) => ingest::admit(shard, head, &tenants, t).map(Some),
            (_, Some(t)) => Ok(Some(Authed {
                tenant: t.clone(),
                limiter: None,
            })),
            (_, None) => Ok(None),
        }
    }

    /// A start-up document, answered on the head.
    fn document(
        &self,
        shard: &Shard,
        head: &RequestHead,
        secure: bool,
        buf: &[u8],
        endpoint: Endpoint,
    ) -> Response {
        let tenants = shard.state.tenants.load();
        let key = self.param(&buf[head.path.clone()]);
        match endpoint {
            Endpoint::SegmentSettings => {
                let host = head
                    .host
                    .clone()
                    .and_then(|r| std::str::from_utf8(&buf[r]).ok())
                    .filter(|h| cors::is_host(h))
                    .unwrap_or("127.0.0.1");
                let https = docs::https(secure, head, buf, host);
                docs::segment_settings(&tenants, key, host, https, |t| {
                    cors::check_origin(t, head, buf)
                })
            }
            Endpoint::PosthogConfig { js } => docs::posthog_config(&tenants, key, js),
            _ => Response::error(404, ErrorCode::NotFound, "no such endpoint"),
        }
    }

    /// Stage 8: the handler, once the body (`body`) is read; `buf` is the
    /// connection's buffer, which the head's ranges point into.
    pub async fn on_body(
        &self,
        shard: &Shard,
        admitted: &Admitted,
        (head, buf): (&RequestHead, &[u8]),
        body: &[u8],
        started: Instant,
    ) -> Response {
        match (self.handler, &admitted.authed) {
            (Handler::Ingest, Some(authed)) => {
                let resp =
                    ingest::ingest(shard, admitted.client, authed, head.encoding, body, started)
                        .await;
                Stage::Request.record(
                    &mut shard.histograms.borrow_mut(),
                    started.elapsed().as_micros() as u64,
                );
                resp
            }
            (Handler::Query, Some(authed)) => crate::query::answer(shard, authed, body).await,
            (Handler::Compat(Endpoint::PosthogFlags), _) => docs::posthog_flags(head),
            (Handler::Compat(e), _) if e.ingests() => {
                let resp = compat::ingest(shard, admitted, (head, buf), body, started, e).await;
                Stage::Request.record(
                    &mut shard.histograms.borrow_mut(),
                    started.elapsed().as_micros() as u64,
                );
                resp
            }
            (Handler::Node(route), _) => health::answer(route, &*shard.state),
            // Answered on the head, or no such path.
            _ => Response::error(404, ErrorCode::NotFound, "no such endpoint"),
        }
    }
}

/// The client a request comes from: the peer, or the client a trusted
/// proxy names (`[clients]`), IPv6 by its prefix (`clients.ipv6_prefix_len`);
/// the key of its limits and of its share of the shard's budget.
fn client_of(shard: &Shard, head: &RequestHead, peer: IpAddr, buf: &[u8]) -> IpAddr {
    shard.state.clients.client_for(peer, &head.forwarded, buf)
}

/// The per-client request limit (`[clients]`).
fn client_check(
    shard: &Shard,
    head: &RequestHead,
    peer: IpAddr,
    buf: &[u8],
) -> Result<(), Response> {
    let clients = &shard.state.clients;
    if !clients.enabled() {
        return Ok(());
    }
    let counters = shard.counters();
    match clients.request(client_of(shard, head, peer, buf)) {
        Request::Allowed => Ok(()),
        Request::Untracked => {
            counters.clients_untracked.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Request::OverLimit => {
            counters
                .clients_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            Err(Response::error(
                429,
                ErrorCode::ClientRateLimited,
                "too many requests from this address; slow down",
            )
            .retry_after(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_one_route_and_unknown_paths_none() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(!r.paths.is_empty());
            for p in r.paths {
                assert!(seen.insert(*p), "{p} declared twice");
                let concrete = p.replace('*', "k");
                assert!(std::ptr::eq(lookup(concrete.as_bytes()), r), "{p}");
            }
        }
        for p in [
            "/ingest/",
            "/INGEST",
            "/",
            "",
            "/health/",
            "/sdk.js?x",
            "/v1/projects//settings",
            "/v1/projects/a/b/settings",
            "/array/k/config.json",
        ] {
            assert_eq!(lookup(p.as_bytes()).handler, Handler::NotFound, "{p}");
        }
        let settings = lookup(b"/v1/projects/pk_1/settings");
        assert_eq!(settings.handler, Handler::Compat(Endpoint::SegmentSettings));
        assert_eq!(
            settings.param(b"/v1/projects/pk_1/settings"),
            Some(&b"pk_1"[..])
        );
        assert_eq!(
            lookup(b"/array/k/config.js").handler,
            Handler::Compat(Endpoint::PosthogConfig { js: true })
        );
        assert_eq!(lookup(b"/sdk/v1.js").handler, Handler::Asset(Asset::Sdk));
        assert_eq!(
            lookup(b"/dashboard").handler,
            Handler::Asset(Asset::DashboardHtml)
        );
        assert_eq!(
            lookup(b"/health/live").handler,
            Handler::Node(NodeRoute::Live)
        );
    }

    #[test]
    fn methods_and_their_allow_headers_agree() {
        for m in [&GET_HEAD, &POST, &POST_OPTIONS, &ANY] {
            let names: Vec<&str> = m
                .list
                .iter()
                .filter_map(|m| match m {
                    Method::Get => Some("GET"),
                    Method::Head => Some("HEAD"),
                    Method::Post => Some("POST"),
                    Method::Options => Some("OPTIONS"),
                    Method::Other => None,
                })
                .collect();
            assert_eq!(names.join(", "), m.allow);
        }
        let ingest = lookup(b"/ingest");
        let r = ingest.refuse(Method::Get).unwrap();
        assert_eq!((r.status, r.allow), (405, Some("POST, OPTIONS")));
        assert!(ingest.refuse(Method::Options).is_none());
        assert_eq!(
            lookup(b"/health").refuse(Method::Options).unwrap().status,
            405
        );
        assert!(lookup(b"/metrics").refuse(Method::Head).is_none());
        assert_eq!(
            lookup(b"/metrics").refuse(Method::Post).unwrap().status,
            405
        );
        assert_eq!(lookup(b"/nope").refuse(Method::Get).unwrap().status, 404);
    }

    #[test]
    fn only_tenant_routes_read_a_body_and_need_a_tenant_key() {
        let http = HttpConfig::default();
        for r in ROUTES {
            let reads = r.body.limit(&http).reads();
            let tenant = matches!(r.key, Key::Tenant(_));
            // posthog-js's flags request has a body, read and ignored.
            let flags = r.handler == Handler::Compat(Endpoint::PosthogFlags);
            assert_eq!(reads, tenant || flags, "{:?}", r.paths);
            let takes_events = match r.handler {
                Handler::Ingest | Handler::Query => true,
                Handler::Compat(e) => e.ingests(),
                _ => false,
            };
            assert_eq!(takes_events, tenant, "{:?}", r.paths);
            // Public paths take public keys only.
            if let Handler::Compat(_) = r.handler {
                assert!(matches!(r.key, Key::Tenant(TenantKey::Public) | Key::None));
                assert_eq!(r.cors, Cors::Tenant, "{:?}", r.paths);
            }
            // Operators' data needs the admin token; nothing else does.
            assert_eq!(
                r.key == Key::Admin,
                r.surface == Surface::Admin && matches!(r.handler, Handler::Node(_)),
                "{:?}",
                r.paths
            );
        }
        assert_eq!(
            lookup(b"/ingest").body.limit(&http),
            BodyLimit::Read(http.max_body_bytes)
        );
        assert_eq!(
            lookup(b"/api/v1/query").body.limit(&http),
            BodyLimit::Read(QUERY_BODY_BYTES.min(http.max_body_bytes))
        );
        assert_eq!(NOT_FOUND.body.limit(&http), BodyLimit::Discard);
    }
}
