//! `POST /ingest`: from a framed body to the broker's acknowledgement. The
//! route (paths, methods, body limit, key, CORS) is declared in
//! `routes.rs`; this module holds its checks and its handler.
//!
//! 1. On the head alone, before any body byte is read: [`gate`] (shutdown,
//!    content type and encoding), then the route table's key and origin
//!    checks (`auth.rs`, `cors.rs`), then [`admit`] (a body at all, the
//!    tenant's rate, the broker). The body's size is bounded by the request
//!    reader ([`crate::http::reader`]).
//! 2. [`prepare`] (`prepare.rs`) is synchronous and allocation-light: decode
//!    the body if compressed, parse the envelope in place, parse and
//!    validate each event, group accepted events by session and encode one
//!    record per group.
//! 3. [`ingest`] rate-limits, pushes the records into this shard's ring and
//!    awaits every delivery report until the request deadline, then answers.

mod prepare;

pub use prepare::{
    check_batch_len, prepare, received_now_us, seal, with_decoded, Prepared, Record,
    MAX_RECORD_BYTES,
};

use edge_http::ErrorCode;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine_core::config::AckMode;
use engine_core::validate::Rejection;
use engine_core::Tenant;
use futures_channel::oneshot;
use redpanda::producer::ProduceRequest;

use crate::http::{push_json_str, Encoding, Framing, RequestHead, Response};
use crate::metrics::Stage;
use crate::shard::Shard;
use crate::state::{Authed, Tenants};

/// Checks a `POST /ingest` head before the tenant is known: shutdown,
/// content type and encoding; `forms`: a form body (PostHog's `data=`) is
/// a body type too.
pub fn gate(shard: &Shard, head: &RequestHead, forms: bool) -> Result<(), Response> {
    if shard.state.shutting_down.load(Ordering::Relaxed) {
        return Err(
            Response::error(503, ErrorCode::ShuttingDown, "the engine is shutting down")
                .retry_after(shard.retry_after_secs()),
        );
    }
    if !(head.content_type_ok || forms && head.form) {
        let types = if forms {
            "Content-Type must be application/json, text/plain or a form"
        } else {
            "Content-Type must be application/json"
        };
        return Err(Response::error(415, ErrorCode::UnsupportedMediaType, types));
    }
    if head.encoding == Encoding::Unsupported {
        return Err(Response::error(
            415,
            ErrorCode::UnsupportedEncoding,
            "Content-Encoding must be gzip, zstd or identity",
        ));
    }
    Ok(())
}

/// Checks a `POST /ingest` head once its key named `tenant` (and the origin
/// was allowed): a body at all, the tenant's rate, the broker.
pub fn admit(
    shard: &Shard,
    head: &RequestHead,
    tenants: &Tenants,
    tenant: &Tenant,
) -> Result<Authed, Response> {
    // The declared size is the request reader's to bound (`http::reader`).
    if head.framing == Framing::None {
        return Err(Response::error(
            400,
            ErrorCode::EmptyBody,
            "request body is empty",
        ));
    }
    // A tenant already over its limit is told so now: its body would only
    // be read, held and refused.
    let limiter = tenants.limiters.get(&tenant.id);
    if let Some(wait) = limiter.and_then(|l| l.check(1).err()) {
        shard
            .counters()
            .rate_limited_requests
            .fetch_add(1, Ordering::Relaxed);
        return Err(rate_limited(tenant, wait));
    }
    if !shard.state.broker_up() {
        return Err(Response::error(
            503,
            ErrorCode::BrokerUnavailable,
            "the broker is not reachable; retry later",
        )
        .retry_after(shard.retry_after_secs()));
    }
    Ok(Authed {
        tenant: tenant.clone(),
        limiter: limiter.cloned(),
    })
}

/// 429 for a tenant over its rate limit, with the wait as `Retry-After`.
fn rate_limited(tenant: &Tenant, wait: std::time::Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
    Response::error(
        429,
        ErrorCode::RateLimited,
        &format!(
            "tenant is over its rate limit of {} events/s",
            tenant.rate_limit_eps
        ),
    )
    .retry_after(secs)
}

/// Handles `POST /ingest` once the body is framed; the records it makes
/// count in `client`'s share of the budget until the broker acknowledges.
pub async fn ingest(
    shard: &Shard,
    client: IpAddr,
    authed: &Authed,
    encoding: Encoding,
    body: &[u8],
    started: Instant,
) -> Response {
    let tenant = &authed.tenant;
    let counters = shard.counters();
    counters
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let t_parse = Instant::now();
    let prepared = prepare(shard, tenant, encoding, body);
    Stage::ParseValidate.record(
        &mut shard.histograms.borrow_mut(),
        t_parse.elapsed().as_micros() as u64,
    );
    let mut p = match prepared {
        Ok(p) => p,
        Err(r) => return r,
    };
    for (_, r) in &p.rejected {
        counters.events_rejected[r.reason.index()].fetch_add(1, Ordering::Relaxed);
    }
    if p.accepted == 0 {
        return batch_response(400, "error", &p, started);
    }
    if let Err(resp) = send(shard, client, authed, &mut p, started).await {
        return resp;
    }
    let status = if p.rejected.is_empty() {
        "success"
    } else {
        "partial"
    };
    batch_response(200, status, &p, started)
}

/// Sends a prepared batch's records and awaits the broker (as
/// `redpanda.ack_mode` says) until the request deadline; the records count
/// in `client`'s share of the budget until then. `Err` is the answer: 503
/// (no room, the broker), 429 (the tenant's rate). Shared by every wire
/// format.
pub async fn send(
    shard: &Shard,
    client: IpAddr,
    authed: &Authed,
    p: &mut Prepared,
    started: Instant,
) -> Result<(), Response> {
    let tenant = &authed.tenant;
    let state = &*shard.state;
    let counters = shard.counters();
    // The records live until the broker acknowledges them (or the deadline).
    let record_bytes = p.records.iter().map(|(_, r)| r.len()).sum();
    let Some(_held) = shard.reserve(client, record_bytes) else {
        return Err(shard.busy());
    };
    // Only this shard pushes into its ring, so room seen now is room at push.
    let rings = &state.rings;
    if rings.capacity() - rings.depth(shard.index) < p.records.len() {
        return Err(Response::error(
            503,
            ErrorCode::Backpressure,
            "the engine is saturated; retry later",
        )
        .retry_after(shard.retry_after_secs()));
    }
    // Rate tokens are taken last, once the batch will be produced: a batch
    // refused for room (503) costs its client nothing of its rate.
    if let Some(limiter) = &authed.limiter {
        if let Err(wait) = limiter.try_acquire(p.accepted as u64) {
            counters
                .rate_limited_events
                .fetch_add(p.accepted as u64, Ordering::Relaxed);
            return Err(rate_limited(tenant, wait));
        }
    }
    let t_ack = Instant::now();
    let mut waits = Vec::with_capacity(p.records.len());
    for (key, payload) in std::mem::take(&mut p.records) {
        let (tx, rx) = oneshot::channel();
        let req = ProduceRequest {
            key,
            payload,
            done: tx,
        };
        if rings.push(shard.index, req).is_err() {
            return Err(Response::error(
                503,
                ErrorCode::Backpressure,
                "the engine is saturated; retry later",
            )
            .retry_after(shard.retry_after_secs()));
        }
        waits.push(rx);
    }
    if state.config.redpanda.ack_mode == AckMode::Broker {
        let deadline = started + state.config.http.request_timeout_ms;
        for rx in waits {
            match monoio::time::timeout_at(deadline.into(), rx).await {
                Ok(Ok(Ok(_stored))) => {}
                Ok(Ok(Err(e))) => {
                    return Err(Response::error(
                        503,
                        ErrorCode::BrokerError,
                        &format!("the broker did not store the batch: {e}"),
                    )
                    .retry_after(shard.retry_after_secs()))
                }
                Ok(Err(_)) => {
                    return Err(Response::error(
                        503,
                        ErrorCode::BrokerError,
                        "the producer stopped before the broker answered",
                    )
                    .retry_after(shard.retry_after_secs()))
                }
                Err(_) => {
                    return Err(Response::error(
                        503,
                        ErrorCode::BrokerTimeout,
                        "the broker did not acknowledge within the request deadline; retry later",
                    )
                    .retry_after(shard.retry_after_secs()))
                }
            }
        }
    }
    Stage::BrokerAck.record(
        &mut shard.histograms.borrow_mut(),
        t_ack.elapsed().as_micros() as u64,
    );
    counters
        .events_accepted
        .fetch_add(p.accepted as u64, Ordering::Relaxed);
    Ok(())
}

/// The native answer to a batch: its id, counts and each refused event.
pub fn batch_response(code: u16, status: &str, p: &Prepared, started: Instant) -> Response {
    use std::io::Write;
    let mut b = Vec::with_capacity(160 + p.rejected.len() * 64);
    let _ = write!(
        b,
        "{{\"status\":\"{status}\",\"batch_id\":\"{}\",\"events_accepted\":{},\"events_rejected\":{},\"ingest_latency_ms\":{}",
        p.batch_id.hyphenated(),
        p.accepted,
        p.rejected.len(),
        started.elapsed().as_millis()
    );
    if !p.rejected.is_empty() {
        b.extend_from_slice(b",\"errors\":");
        push_rejections(&mut b, &p.rejected);
    }
    b.push(b'}');
    Response::json(code, b)
}

/// `[{"index","reason","field"}…]`: each refused event of a batch.
pub fn push_rejections(b: &mut Vec<u8>, rejected: &[(usize, Rejection)]) {
    use std::io::Write;
    b.push(b'[');
    for (n, (i, r)) in rejected.iter().enumerate() {
        if n > 0 {
            b.push(b',');
        }
        let _ = write!(
            b,
            "{{\"index\":{i},\"reason\":\"{}\",\"field\":",
            r.reason.as_str()
        );
        push_json_str(b, r.field);
        b.push(b'}');
    }
    b.push(b']');
}
