//! How the sink writes to ClickHouse, measured against the real `events`
//! table, side by side in one run:
//!
//! - format: `Native` (columnar, what the sink uses) against `RowBinary` (row
//!   by row), both over HTTP;
//! - transport: the same `Native` blocks over HTTP against the native TCP
//!   protocol (`native_tcp.rs`, uncompressed), at the sink's default batch
//!   (100k rows) and at 10k-row batches, where per-insert overhead shows.
//!
//! Needs a server: `CLICKHOUSE_URL=http://127.0.0.1:8123
//! CLICKHOUSE_TCP=127.0.0.1:9000 cargo bench -p clickhouse-client --bench
//! insert_format` (`scripts/bench-clickhouse` starts one).

mod native_tcp;

use std::time::{Duration, Instant};

use clickhouse_client::native::{
    put_str, put_uuid, tier_code, AgentColumns, EventsBlock, RowSource,
};
use clickhouse_client::schema::migrate;
use clickhouse_client::Client;
use engine_core::record::{
    decode_record, encode_record, ArchivedRecordBatch, EventRecord, RecordBatch,
};
use engine_core::Tier;

const ROWS: usize = 100_000;
const ROUNDS: usize = 5;

fn records() -> Vec<Vec<u8>> {
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()) as i64;
    (0..ROWS / 100)
        .map(|b| {
            let events = (0..100u32)
                .map(|i| {
                    let mut id = [0u8; 16];
                    id[..4].copy_from_slice(&(b as u32).to_le_bytes());
                    id[4..8].copy_from_slice(&i.to_le_bytes());
                    EventRecord {
                        id,
                        session_id: [b as u8; 16],
                        event_type: (i % 5) as u8,
                        timestamp_us: now,
                        client_timestamp_us: now,
                        user_id: None,
                        url: Some("https://ex.com/products/42"),
                        path: Some("/products/42"),
                        referrer: None,
                        title: Some("Product 42"),
                        user_agent: Some("sdk/1.4"),
                        locale: Some("en-US"),
                        screen_width: Some(1920),
                        screen_height: Some(1080),
                        selector: (i % 5 == 1).then_some("#buy"),
                        element: None,
                        text: None,
                        href: None,
                        x: (i % 5 == 1).then_some(10.0),
                        y: None,
                        depth_pct: (i % 5 == 2).then_some(50.0),
                        lcp: (i % 5 == 3).then_some(1200.0),
                        fcp: None,
                        inp: None,
                        cls: None,
                        ttfb: None,
                        fid: None,
                        name: (i % 5 == 4).then_some("signup"),
                        properties: (i % 5 == 4).then_some(r#"{"plan":"pro"}"#),
                    }
                })
                .collect();
            let batch = RecordBatch {
                tenant_id: [1; 16],
                batch_id: [b as u8; 16],
                received_at_us: now,
                sent_at_us: None,
                events,
            };
            let mut out = Vec::new();
            encode_record(&batch, &mut out).unwrap();
            out
        })
        .collect()
}

const AGENT: AgentColumns<'static> = AgentColumns {
    browser: "",
    os: "",
    device: "",
};
const SRC: RowSource = RowSource {
    partition: 0,
    offset: 0,
    tier: Tier::Paid,
    retention_days: 90,
    insert_id: [0; 16],
};

fn native(recs: &[&ArchivedRecordBatch<'static>]) -> Vec<u8> {
    let mut block = EventsBlock::new();
    for b in recs {
        for e in b.events.iter() {
            block.push(b, e, SRC, AGENT);
        }
    }
    let mut out = Vec::new();
    block.encode(&mut out);
    out
}

/// The same rows as `RowBinary`, in `EVENTS_COLUMNS` order.
fn row_binary(recs: &[&ArchivedRecordBatch<'static>]) -> Vec<u8> {
    let mut o = Vec::with_capacity(ROWS * 300);
    let s = |o: &mut Vec<u8>, v: &rkyv::option::ArchivedOption<rkyv::boxed::ArchivedBox<str>>| {
        put_str(o, v.as_ref().map_or("", |x| x))
    };
    let f =
        |o: &mut Vec<u8>, v: &rkyv::option::ArchivedOption<rkyv::Archived<f64>>| match v.as_ref() {
            Some(x) => {
                o.push(0);
                o.extend_from_slice(&x.to_native().to_le_bytes());
            }
            None => o.push(1),
        };
    let u =
        |o: &mut Vec<u8>, v: &rkyv::option::ArchivedOption<rkyv::Archived<u32>>| match v.as_ref() {
            Some(x) => {
                o.push(0);
                o.extend_from_slice(&x.to_native().to_le_bytes());
            }
            None => o.push(1),
        };
    for b in recs {
        for e in b.events.iter() {
            put_uuid(&mut o, &b.tenant_id);
            put_uuid(&mut o, &e.id);
            put_uuid(&mut o, &e.session_id);
            put_uuid(&mut o, &b.batch_id);
            o.push(e.event_type);
            let ts = e.timestamp_us.to_native();
            o.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            o.extend_from_slice(&ts.to_le_bytes());
            o.extend_from_slice(&e.client_timestamp_us.to_native().to_le_bytes());
            let rx = b.received_at_us.to_native();
            o.extend_from_slice(&((rx / 1_000_000) as u32).to_le_bytes());
            o.extend_from_slice(&rx.to_le_bytes());
            o.push(tier_code(SRC.tier) as u8);
            o.extend_from_slice(&SRC.retention_days.to_le_bytes());
            let texts = e.texts();
            for (_, v) in &texts[..7] {
                s(&mut o, v);
            }
            u(&mut o, &e.screen_width);
            u(&mut o, &e.screen_height);
            for (_, v) in &texts[7..11] {
                s(&mut o, v);
            }
            for (_, v) in e.numbers() {
                f(&mut o, v);
            }
            for (_, v) in &texts[11..] {
                s(&mut o, v);
            }
            o.extend_from_slice(&SRC.partition.to_le_bytes());
            o.extend_from_slice(&SRC.offset.to_le_bytes());
            // browser, os, device: empty.
            o.extend_from_slice(&[0, 0, 0]);
        }
    }
    o
}

fn main() {
    let Ok(url) = std::env::var("CLICKHOUSE_URL") else {
        eprintln!("set CLICKHOUSE_URL (scripts/bench-clickhouse starts a server); skipping");
        return;
    };
    let ch = Client::new(&url, Duration::from_secs(120));
    migrate(&ch, "overwatch").expect("migrate");
    let raw = records();
    let recs: Vec<&ArchivedRecordBatch<'static>> =
        raw.iter().map(|r| decode_record(r).unwrap()).collect();
    println!(
        "{ROWS} rows per insert, {ROUNDS} rounds each, ClickHouse {}",
        ch.version().unwrap()
    );
    for (name, fmt, enc) in [
        (
            "Native",
            "Native",
            native as fn(&[&ArchivedRecordBatch<'static>]) -> Vec<u8>,
        ),
        ("RowBinary", "RowBinary", row_binary),
    ] {
        let (mut enc_t, mut ins_t, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let body = enc(&recs);
            enc_t += t.elapsed();
            bytes = body.len();
            let t = Instant::now();
            ch.query_with_body(&format!("INSERT INTO overwatch.events FORMAT {fmt}"), &body)
                .expect("insert");
            ins_t += t.elapsed();
        }
        let rows = (ROWS * ROUNDS) as f64;
        println!(
            "{name:<10} body {:>6.1} MB  encode {:>10.0} rows/s  insert {:>10.0} rows/s",
            bytes as f64 / 1e6,
            rows / enc_t.as_secs_f64(),
            rows / ins_t.as_secs_f64()
        );
    }
    transports(&ch, &recs);
}

/// The same Native blocks over HTTP and over native TCP, alternating rounds
/// so drift in the server's state hits both alike.
fn transports(ch: &Client, recs: &[&ArchivedRecordBatch<'static>]) {
    let Ok(tcp) = std::env::var("CLICKHOUSE_TCP") else {
        println!("CLICKHOUSE_TCP not set: transport comparison skipped");
        return;
    };
    let mut conn = native_tcp::NativeConn::connect(&tcp).expect("native TCP hello");
    for per_insert in [ROWS, ROWS / 10] {
        let blocks: Vec<Vec<u8>> = recs.chunks(per_insert / 100).map(native).collect();
        let (mut http_t, mut tcp_t) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for b in &blocks {
                ch.insert_native("overwatch.events", b)
                    .expect("HTTP insert");
            }
            http_t += t.elapsed();
            let t = Instant::now();
            for b in &blocks {
                conn.insert("overwatch.events", &[b])
                    .expect("native TCP insert");
            }
            tcp_t += t.elapsed();
        }
        let rows = (ROWS * ROUNDS) as f64;
        println!(
            "Native, {per_insert:>6} rows/insert:  HTTP {:>10.0} rows/s  native TCP {:>10.0} rows/s  (TCP/HTTP {:.2})",
            rows / http_t.as_secs_f64(),
            rows / tcp_t.as_secs_f64(),
            http_t.as_secs_f64() / tcp_t.as_secs_f64()
        );
    }
}
