//! The key a route needs ([`Key`], declared in the route table) and the
//! check of a tenant's key on the head, before any body byte is read.
//!
//! Keys travel in `Authorization: Bearer <tenant_id>:<key>`; a write key
//! (`pk_`) may also travel in `?key=` for clients that cannot set headers
//! (`navigator.sendBeacon`). A secret key (`sk_`) in a URL is refused on
//! every route, even beside a valid header (`secret_key_in_url`), so that it
//! does not spread through access logs; a disabled tenant is 403.

use edge_http::ErrorCode;
use engine_core::tenant::{AuthError, Credentials};
use engine_core::{KeyKind, Tenant};

use crate::http::{RequestHead, Response};
use crate::state::Tenants;

/// What a route asks of the request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Nothing (probes, embedded files).
    None,
    /// The admin token, when one is set (`admin.rs` checks it for both
    /// listeners).
    Admin,
    /// A tenant's key, of this kind.
    Tenant(TenantKey),
}

/// Which of a tenant's keys a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKey {
    /// Sending events: a write key, in the header or in `?key=`; a secret key
    /// in the header works too.
    Write,
    /// Reading data: a secret key, in the header only (403
    /// `secret_key_required` for a write key).
    Secret,
    /// The Segment and PostHog paths: a write key alone names its tenant,
    /// in the header (Basic user, or Bearer) or, when there is none, in the
    /// body (the handler reads it there); a secret key is refused.
    Public,
}

/// The tenant whose key `head` carries, if `need` admits it; `Err` is the
/// answer (401 or 403). `None` only for [`TenantKey::Public`] without a key
/// in the header: the body names it.
pub fn tenant<'t>(
    need: TenantKey,
    tenants: &'t Tenants,
    head: &RequestHead,
    buf: &[u8],
) -> Result<Option<&'t Tenant>, Response> {
    if need == TenantKey::Public {
        // A secret key in the URL is refused here too, whatever else the
        // request carries.
        if let Some(q) = crate::cors::query_param(head, buf, "key") {
            if tenants.registry.authenticate_public_key(&q) == Err(AuthError::SecretInQuery) {
                return Err(secret_in_url(need));
            }
        }
        let Some(header) = head.authorization.clone().map(|r| &buf[r]) else {
            return Ok(None);
        };
        let Some(key) = crate::compat::wire::header_key(header) else {
            return Err(Response::error(
                401,
                ErrorCode::Unauthorized,
                "expected `Authorization: Basic <write key>:` (or `Bearer <write key>`)",
            ));
        };
        return crate::compat::public_tenant(tenants, &key).map(Some);
    }
    keyed(need, tenants, head, buf).map(Some)
}

fn keyed<'t>(
    need: TenantKey,
    tenants: &'t Tenants,
    head: &RequestHead,
    buf: &[u8],
) -> Result<&'t Tenant, Response> {
    // The query's key is always looked at, if only to refuse a secret key
    // there: the registry says `SecretInQuery` for a valid one, whatever the
    // header says.
    let query_key = crate::cors::query_param(head, buf, "key");
    let creds = Credentials {
        header: head.authorization.clone().map(|r| &buf[r]),
        query_key: query_key.as_deref(),
    };
    let result = tenants.registry.authenticate(creds);
    match (need, result) {
        (TenantKey::Write | TenantKey::Public, Ok(a)) => Ok(a.tenant),
        // The query string's key is never a way in to read, not even a
        // write key.
        (TenantKey::Secret, Ok(a)) if head.authorization.is_some() => {
            if a.kind == KeyKind::Secret {
                Ok(a.tenant)
            } else {
                Err(Response::error(
                    403,
                    ErrorCode::SecretKeyRequired,
                    "reading data needs a secret key (sk_); write keys (pk_) can only ingest",
                ))
            }
        }
        (_, Err(AuthError::SecretInQuery)) => Err(secret_in_url(need)),
        (_, Err(AuthError::Disabled)) => Err(Response::error(
            403,
            ErrorCode::TenantDisabled,
            "this tenant is disabled",
        )),
        (TenantKey::Write | TenantKey::Public, Err(AuthError::Malformed)) => Err(Response::error(
            401,
            ErrorCode::Unauthorized,
            "expected `Authorization: Bearer <tenant_id>:<key>` (or `?key=<tenant_id>:<write_key>`)",
        )),
        (TenantKey::Write | TenantKey::Public, Err(AuthError::BadCredentials)) => {
            Err(Response::error(
            401,
            ErrorCode::Unauthorized,
            "unknown tenant or wrong key",
        ))
        }
        (TenantKey::Secret, _) => Err(Response::error(
            401,
            ErrorCode::Unauthorized,
            "expected `Authorization: Bearer <tenant_id>:<secret_key>`",
        )),
    }
}

/// 401 `secret_key_in_url`, with the way out that fits the route.
fn secret_in_url(need: TenantKey) -> Response {
    let message = match need {
        TenantKey::Write | TenantKey::Public => {
            "a secret key (sk_) must never travel in a URL, where logs keep it: send it in the \
             Authorization header, or use a write key (pk_) in `?key=`; consider rotating this key"
        }
        TenantKey::Secret => {
            "a secret key (sk_) must never travel in a URL, where logs keep it: send it in the \
             Authorization header; consider rotating this key"
        }
    };
    Response::error(401, ErrorCode::SecretKeyInUrl, message)
}
