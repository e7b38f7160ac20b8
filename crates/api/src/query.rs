//! `POST /api/v1/query` at the edge: a secret key is checked on the head
//! (the route table's `Key::Tenant(TenantKey::Secret)`, `auth.rs`), the
//! body handed to the query service (`query::service`), whose workers talk to
//! ClickHouse; the shard only awaits the answer, so `/ingest` never waits on
//! a query.

use edge_http::ErrorCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use query::service::{Submitted, ANSWER_WAIT_SECS};

use crate::http::Response;
use crate::shard::Shard;
use crate::state::Authed;

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
            ErrorCode::QueryUnavailable,
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
                    ErrorCode::QueryTimeout,
                    "the query did not finish; retry later",
                )
                .retry_after(5),
            }
        }
    }
}
