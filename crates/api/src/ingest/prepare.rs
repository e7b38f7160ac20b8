//! Turning a framed `/ingest` body into broker records, synchronously and
//! with few allocations: decode the body if compressed, parse the envelope
//! in place, parse and validate each event, group accepted events by session
//! and encode one record per group. No I/O, no await: [`prepare`] is the
//! part of a request that costs CPU, and the one a benchmark measures alone.

use edge_http::ErrorCode;
use std::time::{SystemTime, UNIX_EPOCH};

use engine_core::event::{parse_envelope, parse_event, EnvelopeError, RawEvent};
use engine_core::record::{encode_record, record_key, EventRecord, RecordBatch};
use engine_core::timestamp::parse_rfc3339_us;
use engine_core::validate::{check_event_size, validate_event, BatchContext, Reason, Rejection};
use engine_core::Tenant;
use uuid::Uuid;

use crate::body::{decode, BodyError};
use crate::http::{Encoding, Response};
use crate::shard::Shard;
use crate::state::AppState;

/// Largest record sent to the broker, in bytes (estimated from raw event
/// sizes); bigger groups are split. Below librdkafka's 1 MB `message.max.bytes`.
pub const MAX_RECORD_BYTES: usize = 768 * 1024;
/// Per-event allowance for the record's fixed-size fields, in bytes.
const RECORD_OVERHEAD_BYTES: usize = 512;

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

/// Runs `f` on the body's bytes as sent: `body` itself, or inflated
/// (gzip, zstd) into a pooled buffer capped at `http.max_decompressed_bytes`
/// (a bomb costs at most the cap), given back after `f`.
pub fn with_decoded<R>(
    shard: &Shard,
    encoding: Encoding,
    body: &[u8],
    f: impl FnOnce(&[u8]) -> Result<R, Response>,
) -> Result<R, Response> {
    if encoding == Encoding::Identity {
        return f(body);
    }
    let mut out = shard.take_buffer();
    let cap = shard.state.config.http.max_decompressed_bytes;
    let result = match decode(encoding, body, &mut out, cap) {
        Ok(()) => f(&out),
        Err(e) => Err(match e {
            BodyError::TooLarge(_) => Response::error(413, ErrorCode::BodyTooLarge, &e.to_string()),
            BodyError::Corrupt(_) => {
                Response::error(400, ErrorCode::InvalidEncoding, &e.to_string())
            }
        }),
    };
    shard.give_buffer(out);
    result
}

/// Decodes, parses, validates and encodes a batch. Synchronous.
pub fn prepare(
    shard: &Shard,
    tenant: &Tenant,
    encoding: Encoding,
    body: &[u8],
) -> Result<Prepared, Response> {
    with_decoded(shard, encoding, body, |json| {
        prepare_json(&shard.state, tenant, json)
    })
}

/// The time now, in µs since the epoch (a batch's `received_at`).
pub fn received_now_us() -> i64 {
    now_us()
}

fn prepare_json(state: &AppState, tenant: &Tenant, json: &[u8]) -> Result<Prepared, Response> {
    let received_at_us = now_us();
    let max = state.config.http.max_batch_events;
    let envelope = parse_envelope(json, max).map_err(|e| match e {
        EnvelopeError::Malformed { message, offset } => Response::error(
            400,
            ErrorCode::InvalidJson,
            &format!("body is not valid JSON at byte {offset}: {message}"),
        ),
        EnvelopeError::MissingEvents => {
            Response::error(400, ErrorCode::InvalidBatch, &e.to_string())
        }
        EnvelopeError::TooManyEvents { .. } => {
            Response::error(413, ErrorCode::BatchTooLarge, &e.to_string())
        }
    })?;
    let sent_at_us = match envelope.sent_at.as_deref() {
        None => None,
        Some(s) => Some(parse_rfc3339_us(s).ok_or_else(|| {
            Response::error(
                400,
                ErrorCode::InvalidSentAt,
                "`sent_at` must be an RFC 3339 timestamp",
            )
        })?),
    };
    let raws = envelope.events.unwrap_or_default();
    if raws.is_empty() {
        return Err(Response::error(
            400,
            ErrorCode::EmptyBatch,
            "`events` must not be empty",
        ));
    }
    check_batch_len(state, raws.len())?;
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
    seal(
        state,
        tenant,
        (received_at_us, sent_at_us),
        &parsed,
        rejected,
    )
}

/// 413 for a batch of more than `http.max_batch_events` events.
pub fn check_batch_len(state: &AppState, len: usize) -> Result<(), Response> {
    let max = state.config.http.max_batch_events;
    if len > max {
        return Err(Response::error(
            413,
            ErrorCode::BatchTooLarge,
            &format!("batch of {len} events exceeds the limit of {max}"),
        ));
    }
    Ok(())
}

/// Validates parsed events (`None`: already rejected, in `rejected`) and
/// encodes the accepted ones into records: the part every wire format
/// shares (native `/ingest` and the Segment and PostHog adapters). `times`:
/// the batch's `received_at` and its client `sent_at`, in µs, for the
/// clock-skew correction. Each event's `usize` is its size on the wire (the
/// record's size estimate).
pub fn seal(
    state: &AppState,
    tenant: &Tenant,
    (received_at_us, sent_at_us): (i64, Option<i64>),
    parsed: &[Option<(RawEvent<'_>, usize)>],
    mut rejected: Vec<(usize, Rejection)>,
) -> Result<Prepared, Response> {
    let ctx = BatchContext::new(
        tenant.id,
        received_at_us,
        sent_at_us,
        tenant.retention_days,
        &state.limits,
    );
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
        .map_err(|e| Response::error(500, ErrorCode::Internal, &e))?;
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
