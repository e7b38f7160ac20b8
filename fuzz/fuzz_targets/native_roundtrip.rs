//! The sink's `Native` block encoder, round-tripped through a decoder: the
//! events of a batch (parsed and validated as the edge does, carried in a
//! broker record) become one block whose columns are `events`' and whose
//! values are the events' own.
#![no_main]

use clickhouse_client::native::{AgentColumns, EventsBlock, RowSource};
use clickhouse_client::native_decode::{decode_block, Value};
use clickhouse_client::schema::EVENTS_COLUMNS;
use engine_core::{
    decode_record, encode_record, parse_envelope, parse_event, validate_event, BatchContext,
    Limits, RecordBatch, Tier,
};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const TENANT: Uuid = Uuid::nil();
/// 2026-11-28T12:00:00Z: a fixed clock, so a finding reproduces.
const NOW_US: i64 = 1_795_867_200_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = parse_envelope(data) else {
        return;
    };
    let limits = Limits::default();
    let ctx = BatchContext::new(TENANT, NOW_US, None, 30, &limits);
    let raws = envelope.events.unwrap_or_default();
    let parsed: Vec<_> = raws
        .iter()
        .filter_map(|raw| parse_event(raw).ok())
        .collect();
    let events: Vec<_> = parsed
        .iter()
        .filter_map(|ev| validate_event(ev, &ctx).ok())
        .collect();
    if events.is_empty() {
        return;
    }
    let batch = RecordBatch {
        tenant_id: *TENANT.as_bytes(),
        batch_id: [7; 16],
        received_at_us: NOW_US,
        sent_at_us: None,
        events,
    };
    let mut payload = Vec::new();
    encode_record(&batch, &mut payload).expect("valid events always encode");
    let record = decode_record(&payload).expect("an encoded record decodes");
    let mut block = EventsBlock::new();
    for (i, e) in record.events.iter().enumerate() {
        let src = RowSource {
            partition: 3,
            offset: i as i64,
            tier: Tier::Paid,
            retention_days: 30,
        };
        let agent = AgentColumns {
            browser: "Chrome",
            os: "Linux",
            device: "Desktop",
        };
        block.push(record, e, src, agent);
    }
    let mut bytes = Vec::new();
    block.encode(&mut bytes);
    let back = decode_block(&bytes).expect("the encoder's block decodes");
    assert_eq!(back.rows, record.events.len());
    let names: Vec<(&str, &str)> = back
        .columns
        .iter()
        .map(|(n, t, _)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        names, EVENTS_COLUMNS,
        "columns are events' columns, in order"
    );
    let column = |name: &str| &back.columns.iter().find(|c| c.0 == name).unwrap().2;
    for (row, e) in record.events.iter().enumerate() {
        assert_eq!(column("event_id")[row], Value::Uuid(e.id));
        assert_eq!(column("tenant_id")[row], Value::Uuid(*TENANT.as_bytes()));
        assert_eq!(column("broker_offset")[row], Value::Int(row as i64));
        for (name, text) in e.texts() {
            let want = text.as_ref().map_or(&b""[..], |s| s.as_bytes());
            assert_eq!(column(name)[row], Value::Str(want.to_vec()), "{name}");
        }
        for (name, number) in e.numbers() {
            match (number.as_ref(), &column(name)[row]) {
                (None, Value::Null) => {}
                (Some(a), Value::Float(b)) => assert_eq!(a.to_native().to_bits(), b.to_bits()),
                (a, b) => panic!("{name}: {a:?} became {b:?}"),
            }
        }
    }
});
