//! Browsers on `/ingest`: CORS preflight, `Access-Control-*` on answers, and
//! the query-string credentials of `navigator.sendBeacon`.
//!
//! Policy:
//! - Every `/ingest` answer to a request with a well-formed `Origin` allows
//!   that origin to read it (errors too), so the SDK can read a refusal's
//!   reason and a 429's `Retry-After`. Nothing secret is in those answers, and
//!   no cookies are involved, so echoing the origin exposes nothing.
//! - Whether a page may *send* is the tenant's `allowed_origins`, checked on
//!   the `POST` once the tenant is known from its key (403
//!   `origin_not_allowed`, nothing stored). A preflight carries no
//!   credentials, so it is refused only when its URL names the tenant
//!   (`?key=<tenant>:…` or `?tenant=<id>`); otherwise it is allowed and the
//!   `POST` decides.
//! - A page of another site can always copy a write key; the allow-list
//!   stops browsers on other sites, not a forged `Origin` from a script. That
//!   is what write keys are for: ingest only, and revocable.

use edge_http::ErrorCode;
use std::borrow::Cow;

use engine_core::origin::is_origin;
use uuid::Uuid;

use crate::http::{RequestHead, Response};
use crate::state::AppState;

/// How long a browser may cache a preflight answer, in seconds (Chromium
/// caps this at 7200).
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 7200;
/// Request headers the SDK (or any page) may send, when a preflight does not
/// name its own.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, content-encoding";
/// Longest `Access-Control-Request-Headers` a preflight answer echoes.
const MAX_REQUEST_HEADERS_BYTES: usize = 1024;

/// The headers a preflight answer allows: the ones it asks for when they
/// are a well-formed list of header names (analytics.js adds
/// `x-retry-count` on its retries, other libraries their own), else
/// [`ALLOWED_HEADERS`]. Nothing in the answers depends on a request header,
/// and no credentials are involved, so allowing any name exposes nothing.
fn allowed_headers(head: &RequestHead, buf: &[u8]) -> std::borrow::Cow<'static, str> {
    let asked = head.request_headers.clone().and_then(|r| buf.get(r));
    let well_formed = |a: &[u8]| {
        !a.is_empty()
            && a.len() <= MAX_REQUEST_HEADERS_BYTES
            && a.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '))
    };
    match asked.filter(|a| well_formed(a)) {
        Some(a) => String::from_utf8_lossy(a).into_owned().into(),
        None => ALLOWED_HEADERS.into(),
    }
}

/// The request's `Origin`, when present and well-formed (safe to echo).
/// `null` (a `file:` page, a sandboxed frame) is echoed too: without
/// credentials that exposes nothing, and it lets such a page read answers.
pub fn origin<'b>(head: &RequestHead, buf: &'b [u8]) -> Option<&'b str> {
    let o = buf.get(head.origin.clone()?)?;
    if o == b"null" || is_origin(o) {
        std::str::from_utf8(o).ok()
    } else {
        None
    }
}

/// Whether a `Host` header value is a plain `host[:port]` (safe to name in
/// a document: letters, digits, `.`, `-`, `:`, `[`, `]`).
pub fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// A query parameter, percent-decoded (first occurrence).
pub fn query_param<'b>(head: &RequestHead, buf: &'b [u8], name: &str) -> Option<Cow<'b, str>> {
    let q = buf.get(head.query.clone()?)?;
    form_urlencoded::parse(q)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Lets `origin` read `resp` (no-op without an origin).
pub fn allow(resp: Response, origin: Option<&str>) -> Response {
    match origin {
        Some(o) => resp
            .header("Access-Control-Allow-Origin", o.to_string())
            .header("Access-Control-Expose-Headers", "Retry-After")
            .header("Vary", "Origin"),
        None => resp,
    }
}

/// Most bytes of a refused `Origin` quoted in the answer.
const MAX_SHOWN_ORIGIN_BYTES: usize = 256;

/// 403 `origin_not_allowed` when the request's `Origin` is not one of the
/// tenant's `allowed_origins`.
pub fn check_origin(
    tenant: &engine_core::Tenant,
    head: &RequestHead,
    buf: &[u8],
) -> Result<(), Response> {
    if let Some(origin) = head.origin.clone().map(|r| &buf[r]) {
        if !tenant.allowed_origins.allows(origin) {
            let shown = engine_text::clip_lossy(origin, MAX_SHOWN_ORIGIN_BYTES);
            return Err(origin_refused(&shown));
        }
    }
    Ok(())
}

/// The 403 of an origin the tenant does not allow.
pub fn origin_refused(origin: &str) -> Response {
    Response::error(
        403,
        ErrorCode::OriginNotAllowed,
        &format!(
            "origin {origin} may not send events for this tenant (see `ingestion-engine tenant set-origins`)"
        ),
    )
}

/// The tenant a URL names, if any, without checking any key.
fn named_tenant(head: &RequestHead, buf: &[u8]) -> Option<Uuid> {
    if let Some(key) = query_param(head, buf, "key") {
        let id = key.split(':').next().unwrap_or_default();
        return Uuid::try_parse(id).ok();
    }
    Uuid::try_parse(&query_param(head, buf, "tenant")?).ok()
}

/// The answer to `OPTIONS /ingest`; it never reads a body.
pub fn preflight(state: &AppState, head: &RequestHead, buf: &[u8]) -> Response {
    let Some(origin) = origin(head, buf) else {
        // Not a CORS preflight: a plain OPTIONS.
        let mut r = Response::empty(204);
        r.allow = Some("POST, OPTIONS");
        return r;
    };
    if let Some(id) = named_tenant(head, buf) {
        let tenants = state.tenants.load();
        if let Some(t) = tenants.registry.get(&id) {
            if !t.allowed_origins.allows(origin.as_bytes()) {
                return origin_refused(origin);
            }
        }
    }
    allow(Response::empty(204), Some(origin))
        .header("Access-Control-Allow-Methods", "POST, OPTIONS")
        .header("Access-Control-Allow-Headers", allowed_headers(head, buf))
        .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_SECS.to_string())
        // Chromium's Private Network Access: a public page may reach an
        // engine on a private address (the ingest endpoint is for any page).
        .header("Access-Control-Allow-Private-Network", "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    #[test]
    fn origins_and_query_params() {
        let raw = b"POST /ingest?a=1&key=0000%3Apk_x&key=second HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(origin(&head, raw), Some("https://a.example"));
        assert_eq!(query_param(&head, raw, "key").as_deref(), Some("0000:pk_x"));
        assert_eq!(query_param(&head, raw, "nope"), None);
        let raw = b"POST /ingest HTTP/1.1\r\nOrigin: https://a.example/path\r\n\r\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(origin(&head, raw), None, "not an origin: never echoed");
        assert_eq!(query_param(&head, raw, "key"), None);
    }
}
