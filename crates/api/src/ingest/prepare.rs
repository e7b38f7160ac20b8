//! Turning a framed `/ingest` body into broker records, synchronously and
//! with few allocations: decode the body if compressed, parse the envelope
//! in place, parse and validate each event, group accepted events by session
//! and encode one record per group. No I/O, no await: [`prepare`] is the
//! part of a request that costs CPU, and the one a benchmark measures alone.

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
