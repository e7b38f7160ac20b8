//! `POST /ingest`: from a framed body to the broker's acknowledgement.
//!
//! 1. [`precheck`] runs on the head alone (before any body byte is read):
//!    readiness, content type and encoding, credentials, a body at all (its
//!    size is bounded by the request reader, [`crate::http::reader`]).
//! 2. [`prepare`] is synchronous and allocation-light: decode the body if
//!    compressed, parse the envelope in place, parse and validate each event,
//!    group accepted events by session and encode one record per group.
//! 3. [`ingest`] rate-limits, pushes the records into this shard's ring and
//!    awaits every delivery report until the request deadline, then answers.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use engine_core::config::AckMode;
use engine_core::event::{parse_envelope, parse_event, EnvelopeError, RawEvent};
use engine_core::record::{encode_record, record_key, EventRecord, RecordBatch};
use engine_core::tenant::{AuthError, Credentials};
use engine_core::timestamp::parse_rfc3339_us;
use engine_core::validate::{check_event_size, validate_event, BatchContext, Reason, Rejection};
use engine_core::Tenant;
use futures_channel::oneshot;
use redpanda::producer::ProduceRequest;
use uuid::Uuid;

use crate::body::{decode, BodyError};
use crate::budget::Budget;
use crate::http::{push_json_str, Encoding, Framing, RequestHead, Response};
use crate::metrics::{ShardCounters, ShardHistograms, Stage};
use crate::request_log::RequestLog;
use crate::state::{AppState, Authed};

/// Largest record sent to the broker, in bytes (estimated from raw event
/// sizes); bigger groups are split. Below librdkafka's 1 MB `message.max.bytes`.
pub const MAX_RECORD_BYTES: usize = 768 * 1024;
/// Per-event allowance for the record's fixed-size fields, in bytes.
const RECORD_OVERHEAD_BYTES: usize = 512;

/// One shard's state: owned by its thread, never shared.
#[derive(Debug)]
pub struct Shard {
    pub index: usize,
    pub state: Arc<AppState>,
    pub histograms: RefCell<ShardHistograms>,
    pool: RefCell<Vec<Vec<u8>>>,
    pub connections: Cell<usize>,
    /// Request ids of error answers and their log lines.
    pub requests: RequestLog,
    /// Request bytes held now, in all and per client (`budget.rs`).
    pub budget: Budget,
    /// Debug builds only: a request for this path panics in the shard task,
    /// so tests can check the failure policy (README: "Failure policy").
    #[cfg(debug_assertions)]
    pub fault_panic_path: Option<Vec<u8>>,
}

/// Debug builds only: names the path that makes a shard panic. Not an
/// `INGESTION_*` name: those are configuration keys, unknown ones fail startup.
#[cfg(debug_assertions)]
pub const FAULT_PANIC_PATH_ENV: &str = "ENGINE_FAULT_PANIC_PATH";

impl Shard {
    /// A shard with an empty buffer pool.
    pub fn new(index: usize, state: Arc<AppState>) -> Self {
        Self {
            requests: RequestLog::new(index, state.boot_id),
            index,
            state,
            histograms: RefCell::new(ShardHistograms::new(index)),
            pool: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            budget: Budget::default(),
            #[cfg(debug_assertions)]
            fault_panic_path: std::env::var_os(FAULT_PANIC_PATH_ENV)
                .map(std::ffi::OsString::into_encoded_bytes),
        }
    }

    /// Takes a scratch buffer from the pool.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.pool.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a scratch buffer; kept only while the pool has room
    /// (`http.body_buffer_pool`) and the buffer is at most `max_body_bytes`.
    pub fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        let http = &self.state.config.http;
        // A decoded body's buffer may be larger: it goes, so the pool holds
        // at most body_buffer_pool × max_body_bytes.
        if pool.len() < http.body_buffer_pool && buf.capacity() <= http.max_body_bytes {
            buf.clear();
            pool.push(buf);
        }
    }

    fn counters(&self) -> &ShardCounters {
        self.state.metrics.shard(self.index)
    }
}

/// Most bytes of a refused `Origin` quoted in the answer.
const MAX_SHOWN_ORIGIN_BYTES: usize = 256;

fn retry_after(state: &AppState) -> u32 {
    state.config.http.retry_after_secs
}

/// Checks a `POST /ingest` head before its body is read.
pub fn precheck(shard: &Shard, head: &RequestHead, buf: &[u8]) -> Result<Authed, Response> {
    let state = &*shard.state;
    if state.shutting_down.load(Ordering::Relaxed) {
        return Err(
            Response::error(503, "shutting_down", "the engine is shutting down")
                .retry_after(retry_after(state)),
        );
    }
    if !head.content_type_ok {
        return Err(Response::error(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    if head.encoding == Encoding::Unsupported {
        return Err(Response::error(
            415,
            "unsupported_encoding",
            "Content-Encoding must be gzip, zstd or identity",
        ));
    }
    let query_key = crate::cors::query_param(head, buf, "key");
    let creds = Credentials {
        header: head.authorization.clone().map(|r| &buf[r]),
        query_key: query_key.as_deref(),
    };
    let tenants = state.tenants.load();
    let tenant = match tenants.registry.authenticate(creds) {
        Ok(a) => a.tenant,
        Err(AuthError::Malformed) => {
            return Err(Response::error(
                401,
                "unauthorized",
                "expected `Authorization: Bearer <tenant_id>:<key>` (or `?key=<tenant_id>:<write_key>`)",
            ))
        }
        Err(AuthError::BadCredentials) => {
            return Err(Response::error(
                401,
                "unauthorized",
                "unknown tenant or wrong key",
            ))
        }
        Err(AuthError::SecretInQuery) => {
            return Err(Response::error(
                401,
                "secret_key_in_url",
                "a secret key (sk_) must never travel in a URL, where logs keep it: send it in the \
                 Authorization header, or use a write key (pk_) in `?key=`; consider rotating this key",
            ))
        }
        Err(AuthError::Disabled) => {
            return Err(Response::error(
                403,
                "tenant_disabled",
                "this tenant is disabled",
            ))
        }
    };
    if let Some(origin) = head.origin.clone().map(|r| &buf[r]) {
        if !tenant.allowed_origins.allows(origin) {
            let shown = engine_text::clip_lossy(origin, MAX_SHOWN_ORIGIN_BYTES);
            return Err(crate::cors::origin_refused(&shown));
        }
    }
    // The declared size is the request reader's to bound (`http::reader`).
    if head.framing == Framing::None {
        return Err(Response::error(400, "empty_body", "request body is empty"));
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
    if !state.broker_up() {
        return Err(Response::error(
            503,
            "broker_unavailable",
            "the broker is not reachable; retry later",
        )
        .retry_after(retry_after(state)));
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
        "rate_limited",
        &format!(
            "tenant is over its rate limit of {} events/s",
            tenant.rate_limit_eps
        ),
    )
    .retry_after(secs)
}

/// A broker record: key (tenant + session) and encoded value.
pub type Record = ([u8; 32], Vec<u8>);

/// What [`prepare`] produced: records to send and the per-event outcome.
#[derive(Debug)]
pub struct Prepared {
    pub batch_id: Uuid,
    pub accepted: usize,
    pub rejected: Vec<(usize, Rejection)>,
    pub records: Vec<Record>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Decodes, parses, validates and encodes a batch. Synchronous.
pub fn prepare(
    shard: &Shard,
    tenant: &Tenant,
    encoding: Encoding,
    body: &[u8],
) -> Result<Prepared, Response> {
    let state = &*shard.state;
    let http = &state.config.http;
    let mut scratch = None;
    let json: &[u8] = if encoding == Encoding::Identity {
        body
    } else {
        let mut out = shard.take_buffer();
        if let Err(e) = decode(encoding, body, &mut out, http.max_decompressed_bytes) {
            shard.give_buffer(out);
            return Err(match e {
                BodyError::TooLarge(_) => Response::error(413, "body_too_large", &e.to_string()),
                BodyError::Corrupt(_) => Response::error(400, "invalid_encoding", &e.to_string()),
            });
        }
        &scratch.insert(out)[..]
    };
    let result = prepare_json(state, tenant, json);
    if let Some(buf) = scratch {
        shard.give_buffer(buf);
    }
    result
}

fn prepare_json(state: &AppState, tenant: &Tenant, json: &[u8]) -> Result<Prepared, Response> {
    let received_at_us = now_us();
    let envelope = parse_envelope(json).map_err(|e| match e {
        EnvelopeError::Malformed { message, offset } => Response::error(
            400,
            "invalid_json",
            &format!("body is not valid JSON at byte {offset}: {message}"),
        ),
        EnvelopeError::MissingEvents => Response::error(400, "invalid_batch", &e.to_string()),
    })?;
    let sent_at_us = match envelope.sent_at.as_deref() {
        None => None,
        Some(s) => Some(parse_rfc3339_us(s).ok_or_else(|| {
            Response::error(
                400,
                "invalid_sent_at",
                "`sent_at` must be an RFC 3339 timestamp",
            )
        })?),
    };
    let raws = envelope.events.unwrap_or_default();
    if raws.is_empty() {
        return Err(Response::error(
            400,
            "empty_batch",
            "`events` must not be empty",
        ));
    }
    let max = state.config.http.max_batch_events;
    if raws.len() > max {
        return Err(Response::error(
            413,
            "batch_too_large",
            &format!("batch of {} events exceeds the limit of {max}", raws.len()),
        ));
    }
    let ctx = BatchContext::new(
        tenant.id,
        received_at_us,
        sent_at_us,
        tenant.retention_days,
        &state.limits,
    );
    let mut rejected = Vec::new();
    // Parsed events must outlive the records that borrow from them.
    let mut parsed: Vec<Option<(RawEvent<'_>, usize)>> = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let len = raw.as_raw_str().len();
        if let Err(r) = check_event_size(len, &state.limits) {
            rejected.push((i, r));
            parsed.push(None);
            continue;
        }
        match parse_event(raw) {
            Ok(ev) => parsed.push(Some((ev, len))),
            Err(e) => {
                rejected.push((
                    i,
                    Rejection {
                        reason: Reason::MalformedEvent,
                        field: e.field,
                    },
                ));
                parsed.push(None);
            }
        }
    }
    let mut valid: Vec<(EventRecord<'_>, usize)> = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.iter().enumerate() {
        if let Some((ev, len)) = p {
            match validate_event(ev, &ctx) {
                Ok(rec) => valid.push((rec, *len)),
                Err(r) => rejected.push((i, r)),
            }
        }
    }
    rejected.sort_unstable_by_key(|(i, _)| *i);
    let batch_id = Uuid::new_v4();
    let accepted = valid.len();
    let records = encode_groups(tenant, batch_id, received_at_us, sent_at_us, valid)
        .map_err(|e| Response::error(500, "internal", &e))?;
    Ok(Prepared {
        batch_id,
        accepted,
        rejected,
        records,
    })
}

/// One record per (session, ≤ MAX_RECORD_BYTES) group, keyed by tenant+session.
fn encode_groups(
    tenant: &Tenant,
    batch_id: Uuid,
    received_at_us: i64,
    sent_at_us: Option<i64>,
    mut valid: Vec<(EventRecord<'_>, usize)>,
) -> Result<Vec<Record>, String> {
    let first = valid.first().map(|(e, _)| e.session_id);
    if valid.iter().any(|(e, _)| Some(e.session_id) != first) {
        valid.sort_by_key(|(e, _)| e.session_id);
    }
    let mut records = Vec::new();
    let tenant_id = *tenant.id.as_bytes();
    let mut iter = valid.into_iter().peekable();
    while let Some((ev, len)) = iter.next() {
        let session = ev.session_id;
        let mut size = len + RECORD_OVERHEAD_BYTES;
        let mut events = vec![ev];
        while let Some((next, next_len)) = iter.peek() {
            if next.session_id != session
                || size + next_len + RECORD_OVERHEAD_BYTES > MAX_RECORD_BYTES
            {
                break;
            }
            size += next_len + RECORD_OVERHEAD_BYTES;
            events.push(iter.next().map(|(e, _)| e).ok_or("group iterator")?);
        }
        let batch = RecordBatch {
            tenant_id,
            batch_id: *batch_id.as_bytes(),
            received_at_us,
            sent_at_us,
            events,
        };
        let mut payload = Vec::with_capacity(size);
        encode_record(&batch, &mut payload).map_err(|e| e.to_string())?;
        records.push((record_key(&tenant_id, &session), payload));
    }
    Ok(records)
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
    let state = &*shard.state;
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
    // The records live until the broker acknowledges them (or the deadline).
    let record_bytes = p.records.iter().map(|(_, r)| r.len()).sum();
    let Some(_held) = shard.reserve(client, record_bytes) else {
        return shard.busy();
    };
    // Only this shard pushes into its ring, so room seen now is room at push.
    let rings = &state.rings;
    if rings.capacity() - rings.depth(shard.index) < p.records.len() {
        return Response::error(503, "backpressure", "the engine is saturated; retry later")
            .retry_after(retry_after(state));
    }
    // Rate tokens are taken last, once the batch will be produced: a batch
    // refused for room (503) costs its client nothing of its rate.
    if let Some(limiter) = &authed.limiter {
        if let Err(wait) = limiter.try_acquire(p.accepted as u64) {
            counters
                .rate_limited_events
                .fetch_add(p.accepted as u64, Ordering::Relaxed);
            return rate_limited(tenant, wait);
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
            return Response::error(503, "backpressure", "the engine is saturated; retry later")
                .retry_after(retry_after(state));
        }
        waits.push(rx);
    }
    if state.config.redpanda.ack_mode == AckMode::Broker {
        let deadline = started + state.config.http.request_timeout_ms;
        for rx in waits {
            match monoio::time::timeout_at(deadline.into(), rx).await {
                Ok(Ok(Ok(_stored))) => {}
                Ok(Ok(Err(e))) => {
                    return Response::error(
                        503,
                        "broker_error",
                        &format!("the broker did not store the batch: {e}"),
                    )
                    .retry_after(retry_after(state))
                }
                Ok(Err(_)) => {
                    return Response::error(
                        503,
                        "broker_error",
                        "the producer stopped before the broker answered",
                    )
                    .retry_after(retry_after(state))
                }
                Err(_) => {
                    return Response::error(
                        503,
                        "broker_timeout",
                        "the broker did not acknowledge within the request deadline; retry later",
                    )
                    .retry_after(retry_after(state))
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
    let status = if p.rejected.is_empty() {
        "success"
    } else {
        "partial"
    };
    batch_response(200, status, &p, started)
}

fn batch_response(code: u16, status: &str, p: &Prepared, started: Instant) -> Response {
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
        b.extend_from_slice(b",\"errors\":[");
        for (n, (i, r)) in p.rejected.iter().enumerate() {
            if n > 0 {
                b.push(b',');
            }
            let _ = write!(
                b,
                "{{\"index\":{i},\"reason\":\"{}\",\"field\":",
                r.reason.as_str()
            );
            push_json_str(&mut b, r.field);
            b.push(b'}');
        }
        b.push(b']');
    }
    b.push(b'}');
    Response::json(code, b)
}
