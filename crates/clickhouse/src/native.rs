//! The `Native` block encoder for the `events` table.
//!
//! A block over HTTP is `varuint columns, varuint rows`, then per column its
//! name, its type name and its values, column after column. Fixed-width
//! values are little-endian; `String` is `varuint length ++ bytes`; `UUID` is
//! two little-endian `UInt64` halves (the first 8 bytes of the UUID, then the
//! last 8, each reversed); `Nullable(T)` is a null map (one byte per row, 1 =
//! NULL) followed by the `T` values; `Enum8` is `Int8`; `DateTime` is `UInt32`
//! seconds. Columns are written in [`crate::schema::EVENTS_COLUMNS`] order, the
//! same list the DDL is generated from, so the two cannot drift apart.

use engine_core::record::ArchivedEventRecord;
use engine_core::record::{ArchivedNumber, ArchivedRecordBatch, ArchivedText};
use engine_core::Tier;

use crate::schema::EVENTS_COLUMNS;

/// Where a row came from and what retention class it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RowSource {
    pub partition: i32,
    pub offset: i64,
    pub tier: Tier,
    pub retention_days: u16,
    /// The insert the row goes in (`insert_id`, see [`crate::receipts`]).
    pub insert_id: [u8; 16],
}

#[derive(Debug, Default)]
struct Strings(Vec<u8>);

impl Strings {
    fn push(&mut self, s: &str) {
        put_varuint(&mut self.0, s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

#[derive(Debug, Default)]
struct Nullable<T> {
    nulls: Vec<u8>,
    values: Vec<T>,
}

impl<T: Default + Copy> Nullable<T> {
    fn push(&mut self, v: Option<T>) {
        self.nulls.push(u8::from(v.is_none()));
        self.values.push(v.unwrap_or_default());
    }
}

/// Rows for one `INSERT INTO events FORMAT Native`.
#[derive(Debug, Default)]
pub struct EventsBlock {
    rows: usize,
    tenant_id: Vec<[u8; 16]>,
    event_id: Vec<[u8; 16]>,
    session_id: Vec<[u8; 16]>,
    batch_id: Vec<[u8; 16]>,
    event_type: Vec<i8>,
    event_time: Vec<u32>,
    event_time_us: Vec<i64>,
    client_time_us: Vec<i64>,
    received_at: Vec<u32>,
    received_at_us: Vec<i64>,
    tier: Vec<i8>,
    retention_days: Vec<u16>,
    /// In [`STRING_COLUMNS`] order (= `ArchivedEventRecord::texts`).
    strings: [Strings; 13],
    screen_width: Nullable<u32>,
    screen_height: Nullable<u32>,
    /// In [`FLOAT_COLUMNS`] order (= `ArchivedEventRecord::numbers`).
    floats: [Nullable<f64>; 9],
    broker_partition: Vec<i32>,
    broker_offset: Vec<i64>,
    /// In [`AGENT_COLUMNS`] order.
    agent: [Strings; 3],
    insert_id: Vec<[u8; 16]>,
    bytes: usize,
}

/// What the sink derived from an event's `user_agent` (empty where unknown).
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentColumns<'a> {
    pub browser: &'a str,
    pub os: &'a str,
    pub device: &'a str,
}

const AGENT_COLUMNS: [&str; 3] = ["browser", "os", "device"];

const STRING_COLUMNS: [&str; 13] = [
    "user_id",
    "url",
    "path",
    "referrer",
    "title",
    "user_agent",
    "locale",
    "selector",
    "element",
    "text",
    "href",
    "name",
    "properties",
];
const FLOAT_COLUMNS: [&str; 9] = [
    "x",
    "y",
    "depth_pct",
    "lcp",
    "fcp",
    "inp",
    "cls",
    "ttfb",
    "fid",
];

fn opt_str(v: &ArchivedText) -> &str {
    v.as_ref().map_or("", |s| s)
}

fn opt_f64(v: &ArchivedNumber) -> Option<f64> {
    v.as_ref().map(|n| n.to_native())
}

fn secs(us: i64) -> u32 {
    u32::try_from(us.div_euclid(1_000_000)).unwrap_or(0)
}

/// Tier code in the `tier` Enum8.
pub fn tier_code(t: Tier) -> i8 {
    match t {
        Tier::Free => 0,
        Tier::Paid => 1,
        Tier::Enterprise => 2,
    }
}

impl EventsBlock {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the block, keeping every column's capacity.
    pub fn clear(&mut self) {
        self.rows = 0;
        self.bytes = 0;
        for v in [
            &mut self.tenant_id,
            &mut self.event_id,
            &mut self.session_id,
            &mut self.batch_id,
            &mut self.insert_id,
        ] {
            v.clear();
        }
        self.event_type.clear();
        self.tier.clear();
        for v in [&mut self.event_time, &mut self.received_at] {
            v.clear();
        }
        for v in [
            &mut self.event_time_us,
            &mut self.client_time_us,
            &mut self.received_at_us,
            &mut self.broker_offset,
        ] {
            v.clear();
        }
        self.retention_days.clear();
        self.broker_partition.clear();
        for s in self.strings.iter_mut().chain(&mut self.agent) {
            s.0.clear();
        }
        for n in [&mut self.screen_width, &mut self.screen_height] {
            n.nulls.clear();
            n.values.clear();
        }
        for f in &mut self.floats {
            f.nulls.clear();
            f.values.clear();
        }
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate encoded size so far, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one event of a record.
    pub fn push(
        &mut self,
        batch: &ArchivedRecordBatch<'_>,
        e: &ArchivedEventRecord<'_>,
        src: RowSource,
        agent: AgentColumns<'_>,
    ) {
        self.rows += 1;
        self.tenant_id.push(batch.tenant_id);
        self.event_id.push(e.id);
        self.session_id.push(e.session_id);
        self.batch_id.push(batch.batch_id);
        self.event_type.push(e.event_type as i8);
        let ts = e.timestamp_us.to_native();
        self.event_time.push(secs(ts));
        self.event_time_us.push(ts);
        self.client_time_us.push(e.client_timestamp_us.to_native());
        let rx = batch.received_at_us.to_native();
        self.received_at.push(secs(rx));
        self.received_at_us.push(rx);
        self.tier.push(tier_code(src.tier));
        self.retention_days.push(src.retention_days);
        let mut len = 0;
        for (col, (_, s)) in self.strings.iter_mut().zip(e.texts()) {
            let s = opt_str(s);
            len += s.len() + 1;
            col.push(s);
        }
        self.screen_width
            .push(e.screen_width.as_ref().map(|v| v.to_native()));
        self.screen_height
            .push(e.screen_height.as_ref().map(|v| v.to_native()));
        for (col, (_, v)) in self.floats.iter_mut().zip(e.numbers()) {
            col.push(opt_f64(v));
        }
        self.broker_partition.push(src.partition);
        self.broker_offset.push(src.offset);
        for (col, s) in self
            .agent
            .iter_mut()
            .zip([agent.browser, agent.os, agent.device])
        {
            len += s.len() + 1;
            col.push(s);
        }
        self.insert_id.push(src.insert_id);
        self.bytes += len + 5 * 16 + 12 * 8 + 9 * 9 + 10;
    }

    /// Appends an insert's receipt row (see [`crate::receipts::Receipt`]).
    pub fn push_receipt(&mut self, r: &crate::receipts::Receipt) {
        let id = *r.insert_id.as_bytes();
        self.rows += 1;
        self.tenant_id
            .push(*crate::receipts::RECEIPT_TENANT.as_bytes());
        self.event_id.push(id);
        self.session_id.push(id);
        self.batch_id.push([0; 16]);
        // A pageview, so that every roll-up's view writes its own receipt row.
        self.event_type.push(0);
        self.event_time.push(r.event_time);
        self.event_time_us.push(i64::from(r.event_time) * 1_000_000);
        self.client_time_us.push(0);
        self.received_at.push(secs(r.written_at_us));
        self.received_at_us.push(r.written_at_us);
        self.tier.push(tier_code(r.tier));
        self.retention_days.push(r.retention_days);
        let path = r.path();
        let properties = r.properties();
        for (col, name) in self.strings.iter_mut().zip(STRING_COLUMNS) {
            col.push(match name {
                "path" => &path,
                "name" => crate::receipts::RECEIPT_NAME,
                "properties" => &properties,
                _ => "",
            });
        }
        self.screen_width.push(None);
        self.screen_height.push(None);
        for col in &mut self.floats {
            col.push(None);
        }
        self.broker_partition.push(r.partition);
        self.broker_offset.push(r.last_offset);
        for col in &mut self.agent {
            col.push("");
        }
        self.insert_id.push(id);
        self.bytes += path.len() + properties.len() + 256;
    }

    /// Encodes the block (appending to `out`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes + 2048);
        put_varuint(out, EVENTS_COLUMNS.len() as u64);
        put_varuint(out, self.rows as u64);
        for &(name, ty) in EVENTS_COLUMNS {
            put_str(out, name);
            put_str(out, ty);
            self.encode_column(name, out);
        }
    }

    fn encode_column(&self, name: &str, out: &mut Vec<u8>) {
        if let Some(i) = STRING_COLUMNS.iter().position(|c| *c == name) {
            out.extend_from_slice(&self.strings[i].0);
            return;
        }
        if let Some(i) = AGENT_COLUMNS.iter().position(|c| *c == name) {
            out.extend_from_slice(&self.agent[i].0);
            return;
        }
        if let Some(i) = FLOAT_COLUMNS.iter().position(|c| *c == name) {
            put_nullable(out, &self.floats[i], |o, v| {
                o.extend_from_slice(&v.to_le_bytes())
            });
            return;
        }
        match name {
            "tenant_id" => put_uuids(out, &self.tenant_id),
            "event_id" => put_uuids(out, &self.event_id),
            "session_id" => put_uuids(out, &self.session_id),
            "batch_id" => put_uuids(out, &self.batch_id),
            "event_type" => out.extend(self.event_type.iter().map(|v| *v as u8)),
            "event_time" => put_le(out, &self.event_time, |v| v.to_le_bytes()),
            "event_time_us" => put_le(out, &self.event_time_us, |v| v.to_le_bytes()),
            "client_time_us" => put_le(out, &self.client_time_us, |v| v.to_le_bytes()),
            "received_at" => put_le(out, &self.received_at, |v| v.to_le_bytes()),
            "received_at_us" => put_le(out, &self.received_at_us, |v| v.to_le_bytes()),
            "tier" => out.extend(self.tier.iter().map(|v| *v as u8)),
            "retention_days" => put_le(out, &self.retention_days, |v| v.to_le_bytes()),
            "screen_width" => put_nullable(out, &self.screen_width, |o, v| {
                o.extend_from_slice(&v.to_le_bytes())
            }),
            "screen_height" => put_nullable(out, &self.screen_height, |o, v| {
                o.extend_from_slice(&v.to_le_bytes())
            }),
            "broker_partition" => put_le(out, &self.broker_partition, |v| v.to_le_bytes()),
            "broker_offset" => put_le(out, &self.broker_offset, |v| v.to_le_bytes()),
            "insert_id" => put_uuids(out, &self.insert_id),
            other => unreachable!("column {other} of EVENTS_COLUMNS has no encoder"),
        }
    }
}

fn put_le<T: Copy, const N: usize>(out: &mut Vec<u8>, values: &[T], f: impl Fn(T) -> [u8; N]) {
    for v in values {
        out.extend_from_slice(&f(*v));
    }
}

fn put_nullable<T: Copy>(out: &mut Vec<u8>, col: &Nullable<T>, f: impl Fn(&mut Vec<u8>, T)) {
    out.extend_from_slice(&col.nulls);
    for v in &col.values {
        f(out, *v);
    }
}

/// ClickHouse's UUID layout: each 8-byte half as a little-endian u64.
pub fn put_uuid(out: &mut Vec<u8>, id: &[u8; 16]) {
    let (hi, lo) = id.split_at(8);
    out.extend(hi.iter().rev());
    out.extend(lo.iter().rev());
}

/// Reads a UUID written by [`put_uuid`] (ClickHouse's binary UUID: two
/// little-endian 64-bit halves), e.g. from a `RowBinary` answer.
pub fn get_uuid(bytes: &[u8; 16]) -> [u8; 16] {
    let mut id = *bytes;
    id[..8].reverse();
    id[8..].reverse();
    id
}

fn put_uuids(out: &mut Vec<u8>, ids: &[[u8; 16]]) {
    for id in ids {
        put_uuid(out, id);
    }
}

/// LEB128 unsigned varint, as ClickHouse writes lengths.
pub fn put_varuint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A `String` value.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varuint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_and_uuid_layout() {
        let mut v = Vec::new();
        put_varuint(&mut v, 0);
        put_varuint(&mut v, 127);
        put_varuint(&mut v, 128);
        put_varuint(&mut v, 300);
        assert_eq!(v, [0, 127, 0x80, 1, 0xac, 2]);
        let mut u = Vec::new();
        put_uuid(
            &mut u,
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        );
        assert_eq!(u, [7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8]);
    }

    #[test]
    fn column_lists_match_the_record_field_order() {
        let names: Vec<&str> = STRING_COLUMNS.to_vec();
        let batch = engine_core::record::RecordBatch {
            tenant_id: [0; 16],
            batch_id: [0; 16],
            received_at_us: 0,
            sent_at_us: None,
            events: vec![engine_core::record::EventRecord::bare(
                [0; 16], [0; 16], 0, 0,
            )],
        };
        let mut bytes = Vec::new();
        engine_core::record::encode_record(&batch, &mut bytes).unwrap();
        let rec = engine_core::record::decode_record(&bytes).unwrap();
        let e = &rec.events[0];
        assert_eq!(e.texts().map(|(n, _)| n).to_vec(), names);
        assert_eq!(e.numbers().map(|(n, _)| n).to_vec(), FLOAT_COLUMNS.to_vec());

        // A cleared block encodes exactly like a fresh one.
        let src = RowSource {
            partition: 1,
            offset: 2,
            tier: Tier::Free,
            retention_days: 1,
            insert_id: [0; 16],
        };
        let mut fresh = EventsBlock::new();
        fresh.push(rec, e, src, AgentColumns::default());
        let mut reused = EventsBlock::new();
        reused.push(rec, e, src, AgentColumns::default());
        reused.push(rec, e, src, AgentColumns::default());
        reused.clear();
        reused.push(rec, e, src, AgentColumns::default());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fresh.encode(&mut a);
        reused.encode(&mut b);
        assert_eq!(a, b);
        assert_eq!(reused.rows(), 1);
    }

    #[test]
    fn every_schema_column_has_an_encoder() {
        let block = EventsBlock::new();
        for &(name, _) in EVENTS_COLUMNS {
            let mut out = Vec::new();
            block.encode_column(name, &mut out);
        }
    }
}
