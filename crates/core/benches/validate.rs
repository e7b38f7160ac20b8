//! Criterion benchmark of the ingest hot path on one 100-event mixed batch
//! (~280 bytes per event, the five types in turn, one session, timestamps = now):
//!
//! - `parse`: [`parse_envelope`] then [`parse_event`] for each event;
//! - `parse_validate`: the same plus [`validate_event`];
//! - `parse_validate_encode`: the same plus [`encode_record`] of one
//!   [`RecordBatch`] holding every accepted event.
//!
//! Throughput is set to the 100 events, so criterion reports events/s.
//! Run with `cargo bench -p engine-core --bench validate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine_core::event::{parse_envelope, parse_event, RawEvent};
use engine_core::record::{encode_record, EventRecord, RecordBatch};
use engine_core::sample::event_json;
use engine_core::timestamp::{format_rfc3339_us, parse_rfc3339_us};
use engine_core::validate::{validate_event, BatchContext, Limits};
use uuid::Uuid;

const EVENTS: usize = 100;

fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_micros()).expect("time fits i64")
}

/// A `{"events":[...]}` body of `EVENTS` mixed events.
fn batch_body() -> Vec<u8> {
    let session = Uuid::new_v4();
    let now = now_us();
    let timestamp = format_rfc3339_us(now - now % 1_000_000);
    let events: Vec<String> = (0..EVENTS)
        .map(|i| event_json(i, &Uuid::nil(), &session, &timestamp))
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes()
}

/// Parses the envelope and every event; returns how many parsed.
fn parse_only(body: &[u8]) -> usize {
    let env = parse_envelope(body, usize::MAX).expect("envelope");
    let raw = env.events.expect("events");
    raw.iter().filter(|v| parse_event(v).is_ok()).count()
}

/// Parses and validates every event; returns how many were accepted.
fn parse_validate(body: &[u8], limits: &Limits, now: i64) -> usize {
    let env = parse_envelope(body, usize::MAX).expect("envelope");
    let raw = env.events.expect("events");
    let parsed: Vec<RawEvent<'_>> = raw.iter().filter_map(|v| parse_event(v).ok()).collect();
    let ctx = BatchContext::new(Uuid::nil(), now, None, 3650, limits);
    parsed
        .iter()
        .filter(|ev| validate_event(ev, &ctx).is_ok())
        .count()
}

/// Parses, validates and encodes the accepted events as one record; returns
/// the record size.
fn parse_validate_encode(body: &[u8], limits: &Limits, now: i64, out: &mut Vec<u8>) -> usize {
    let env = parse_envelope(body, usize::MAX).expect("envelope");
    let raw = env.events.expect("events");
    let sent_at_us = env.sent_at.as_deref().and_then(parse_rfc3339_us);
    let parsed: Vec<RawEvent<'_>> = raw.iter().filter_map(|v| parse_event(v).ok()).collect();
    let ctx = BatchContext::new(Uuid::nil(), now, sent_at_us, 3650, limits);
    let events: Vec<EventRecord<'_>> = parsed
        .iter()
        .filter_map(|ev| validate_event(ev, &ctx).ok())
        .collect();
    let batch = RecordBatch {
        tenant_id: *Uuid::nil().as_bytes(),
        batch_id: [7; 16],
        received_at_us: now,
        sent_at_us,
        events,
    };
    out.clear();
    encode_record(&batch, out).expect("encode");
    out.len()
}

fn bench(c: &mut Criterion) {
    let body = batch_body();
    let limits = Limits::default();
    let now = now_us();

    // The fixture must be what it claims: 100 events, all valid, ~280 B each.
    assert_eq!(parse_only(&body), EVENTS);
    assert_eq!(parse_validate(&body, &limits, now), EVENTS);
    let mut out = Vec::new();
    let record_len = parse_validate_encode(&body, &limits, now, &mut out);
    println!(
        "fixture: {EVENTS} events, {} bytes body ({} B/event), record {record_len} bytes",
        body.len(),
        body.len() / EVENTS
    );

    let mut group = c.benchmark_group("ingest_batch_100");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("parse", |b| {
        b.iter(|| parse_only(black_box(&body)));
    });
    group.bench_function("parse_validate", |b| {
        b.iter(|| parse_validate(black_box(&body), &limits, now));
    });
    group.bench_function("parse_validate_encode", |b| {
        b.iter(|| parse_validate_encode(black_box(&body), &limits, now, &mut out));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
