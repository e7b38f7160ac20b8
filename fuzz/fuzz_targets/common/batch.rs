//! A batch body as `POST /ingest` sees it after decoding, through the edge's
//! steps: the envelope, each event's size check, parse and validation, and
//! the valid events encoded as one broker record. Shared by the targets that
//! start from a batch.

use engine_core::timestamp::parse_rfc3339_us;
use engine_core::validate::check_event_size;
use engine_core::{
    encode_record, parse_envelope, parse_event, validate_event, BatchContext, Limits, RecordBatch,
};
use uuid::Uuid;

/// The tenant of the seed corpus's events (the development tenant).
pub const TENANT: Uuid = Uuid::nil();
/// 2026-11-28T12:00:00Z: a fixed clock, so a finding reproduces.
pub const NOW_US: i64 = 1_795_867_200_000_000;

/// The record of `body`'s valid events and their count; `None` when the
/// body is not a batch.
pub fn record_of(body: &[u8]) -> Option<(Vec<u8>, usize)> {
    let envelope = parse_envelope(body, usize::MAX).ok()?;
    let sent_at_us = envelope.sent_at.as_deref().and_then(parse_rfc3339_us);
    let limits = Limits::default();
    let ctx = BatchContext::new(TENANT, NOW_US, sent_at_us, 30, &limits);
    let raws = envelope.events.unwrap_or_default();
    let parsed: Vec<_> = raws
        .iter()
        .filter(|raw| check_event_size(raw.as_raw_str().len(), &limits).is_ok())
        .filter_map(|raw| parse_event(raw).ok())
        .collect();
    let events: Vec<_> = parsed
        .iter()
        .filter_map(|ev| validate_event(ev, &ctx).ok())
        .collect();
    let n = events.len();
    let batch = RecordBatch {
        tenant_id: *TENANT.as_bytes(),
        batch_id: [7; 16],
        received_at_us: NOW_US,
        sent_at_us,
        events,
    };
    let mut payload = Vec::new();
    encode_record(&batch, &mut payload).expect("valid events always encode");
    Some((payload, n))
}
