//! The sink's `Native` block encoder, round-tripped through a decoder: the
//! events of a batch (parsed and validated as the edge does, carried in a
//! broker record) become one block whose columns are `events`' and whose
//! values are the events' own.
#![no_main]

#[path = "common/batch.rs"]
mod batch;

use batch::TENANT;
use clickhouse_client::native::{AgentColumns, EventsBlock, RowSource};
use clickhouse_client::native_decode::{decode_block, Value};
use clickhouse_client::schema::EVENTS_COLUMNS;
use engine_core::{decode_record, Tier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((payload, n)) = batch::record_of(data) else {
        return;
    };
    if n == 0 {
        return;
    }
    let record = decode_record(&payload).expect("an encoded record decodes");
    let mut block = EventsBlock::new();
    for (i, e) in record.events.iter().enumerate() {
        let src = RowSource {
            partition: 3,
            offset: i as i64,
            tier: Tier::Paid,
            retention_days: 30,
            insert_id: [7; 16],
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
        assert_eq!(column("insert_id")[row], Value::Uuid([7; 16]));
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
