//! `POST /api/v1/query` at the edge: a secret key is checked on the head, the
//! body handed to the query service (`query::service`), whose workers talk to
//! ClickHouse; the shard only awaits the answer, so `/ingest` never waits on
//! a query.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine_core::tenant::{AuthError, Credentials};
use engine_core::KeyKind;
use query::service::{Submitted, ANSWER_WAIT_SECS};

use crate::http::{RequestHead, Response};
use crate::ingest::Shard;
use crate::state::Authed;

/// Checks the head: a secret key in the `Authorization` header (never a
/// write key: they are public; never the query string: a secret key in
/// `?key=` is refused with `secret_key_in_url` even beside a valid header,
/// as on `/ingest`, so that it does not spread through access logs).
pub fn precheck(shard: &Shard, head: &RequestHead, buf: &[u8]) -> Result<Authed, Response> {
    let tenants = shard.state.tenants.load();
    // Read only to refuse it: the registry says `SecretInQuery` for a valid
    // secret key there, whatever the header says.
    let query_key = crate::cors::query_param(head, buf, "key");
    let creds = Credentials {
        header: head.authorization.clone().map(|r| &buf[r]),
        query_key: query_key.as_deref(),
    };
    let authed = match tenants.registry.authenticate(creds) {
        // The query string's key is never a way in here, not even a write key.
        Ok(a) if head.authorization.is_some() => a,
        Err(AuthError::SecretInQuery) => return Err(Response::error(
            401,
            "secret_key_in_url",
            "a secret key (sk_) must never travel in a URL, where logs keep it: send it in the \
                 Authorization header; consider rotating this key",
        )),
        Err(AuthError::Disabled) => {
            return Err(Response::error(
                403,
                "tenant_disabled",
                "this tenant is disabled",
            ))
        }
        Ok(_) | Err(_) => {
            return Err(Response::error(
                401,
                "unauthorized",
                "expected `Authorization: Bearer <tenant_id>:<secret_key>`",
            ))
        }
    };
    if authed.kind != KeyKind::Secret {
        return Err(Response::error(
            403,
            "secret_key_required",
            "reading data needs a secret key (sk_); write keys (pk_) can only ingest",
        ));
    }
    Ok(Authed {
        tenant: authed.tenant.clone(),
        limiter: None,
    })
}

/// The service's answer as a response; the body (the cache's bytes, for a
/// cached answer) is shared, not copied.
fn to_response(a: query::service::Answer) -> Response {
    let r = Response::json(a.status, a.body);
    match a.retry_after_secs {
        Some(s) => r.retry_after(s),
        None => r,
    }
}

/// Runs the query and answers.
pub async fn answer(shard: &Shard, authed: &Authed, body: &[u8]) -> Response {
    let Some(service) = shard.state.query.get() else {
        return Response::error(
            503,
            "query_unavailable",
            "the query API is not running on this node",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match service.submit(authed.tenant.id, body, now) {
        Submitted::Now(a) => to_response(a),
        Submitted::Later(rx) => {
            // The service's own bounds end before this (ClickHouse's
            // `max_execution_time`, the worker's wait and kill), and a job
            // still queued at this point is dropped by its worker.
            let wait = Duration::from_secs(ANSWER_WAIT_SECS);
            match monoio::time::timeout(wait, rx).await {
                Ok(Ok(a)) => to_response(a),
                _ => Response::error(
                    503,
                    "query_timeout",
                    "the query did not finish; retry later",
                )
                .retry_after(5),
            }
        }
    }
}
