//! The record the broker carries: one rkyv archive per (tenant, session) group
//! of a batch, preceded by one format-version byte.
//!
//! Layout of a record value: `[RECORD_VERSION][rkyv archive of RecordBatch]`.
//! Encoding borrows every string from the request buffer (`InlineAsBox`), so the
//! only copy is into the output bytes. Decoding validates the archive
//! (bytecheck) before use: a record from the broker is untrusted input.
//! Record keys are `tenant_id ++ session_id` (32 bytes), so one tenant's session
//! stays on one partition and in order.

use rkyv::rancor;
use rkyv::with::{InlineAsBox, Map};
use rkyv::{Archive, Serialize};

/// Version byte of the record format written by this build.
pub const RECORD_VERSION: u8 = 1;

/// One accepted event, as validation produced it and as the record stores it.
#[derive(Debug, Clone, PartialEq, Archive, Serialize)]
pub struct EventRecord<'a> {
    pub id: [u8; 16],
    pub session_id: [u8; 16],
    /// [`crate::EventType`] code.
    pub event_type: u8,
    /// Event time after clock-skew correction, µs since the epoch.
    pub timestamp_us: i64,
    /// Event time as the client sent it, µs since the epoch.
    pub client_timestamp_us: i64,
    #[rkyv(with = Map<InlineAsBox>)]
    pub user_id: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub url: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub path: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub referrer: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub title: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub user_agent: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub locale: Option<&'a str>,
    pub screen_width: Option<u32>,
    pub screen_height: Option<u32>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub selector: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub element: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub text: Option<&'a str>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub href: Option<&'a str>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub depth_pct: Option<f64>,
    pub lcp: Option<f64>,
    pub fcp: Option<f64>,
    pub inp: Option<f64>,
    pub cls: Option<f64>,
    pub ttfb: Option<f64>,
    pub fid: Option<f64>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub name: Option<&'a str>,
    /// The `properties` object as raw JSON text.
    #[rkyv(with = Map<InlineAsBox>)]
    pub properties: Option<&'a str>,
}

impl EventRecord<'_> {
    /// An event with its required fields and every optional field empty
    /// (`client_timestamp_us` = `timestamp_us`).
    pub fn bare(id: [u8; 16], session_id: [u8; 16], event_type: u8, timestamp_us: i64) -> Self {
        EventRecord {
            id,
            session_id,
            event_type,
            timestamp_us,
            client_timestamp_us: timestamp_us,
            user_id: None,
            url: None,
            path: None,
            referrer: None,
            title: None,
            user_agent: None,
            locale: None,
            screen_width: None,
            screen_height: None,
            selector: None,
            element: None,
            text: None,
            href: None,
            x: None,
            y: None,
            depth_pct: None,
            lcp: None,
            fcp: None,
            inp: None,
            cls: None,
            ttfb: None,
            fid: None,
            name: None,
            properties: None,
        }
    }
}

/// An archived optional string field.
pub type ArchivedText = rkyv::option::ArchivedOption<rkyv::boxed::ArchivedBox<str>>;
/// An archived optional number field.
pub type ArchivedNumber = rkyv::option::ArchivedOption<rkyv::Archived<f64>>;

impl ArchivedEventRecord<'_> {
    /// The optional string fields, named as on the wire, in a fixed order.
    pub fn texts(&self) -> [(&'static str, &ArchivedText); 13] {
        [
            ("user_id", &self.user_id),
            ("url", &self.url),
            ("path", &self.path),
            ("referrer", &self.referrer),
            ("title", &self.title),
            ("user_agent", &self.user_agent),
            ("locale", &self.locale),
            ("selector", &self.selector),
            ("element", &self.element),
            ("text", &self.text),
            ("href", &self.href),
            ("name", &self.name),
            ("properties", &self.properties),
        ]
    }

    /// The optional number fields, named as on the wire, in a fixed order.
    pub fn numbers(&self) -> [(&'static str, &ArchivedNumber); 9] {
        [
            ("x", &self.x),
            ("y", &self.y),
            ("depth_pct", &self.depth_pct),
            ("lcp", &self.lcp),
            ("fcp", &self.fcp),
            ("inp", &self.inp),
            ("cls", &self.cls),
            ("ttfb", &self.ttfb),
            ("fid", &self.fid),
        ]
    }
}

/// A group of accepted events of one tenant and session from one request.
#[derive(Debug, Clone, PartialEq, Archive, Serialize)]
pub struct RecordBatch<'a> {
    pub tenant_id: [u8; 16],
    /// The `batch_id` returned to the client.
    pub batch_id: [u8; 16],
    /// When the edge received the request, µs since the epoch.
    pub received_at_us: i64,
    /// The batch `sent_at`, when the client sent one.
    pub sent_at_us: Option<i64>,
    pub events: Vec<EventRecord<'a>>,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unsupported record version {0} (this build reads {RECORD_VERSION})")]
    Version(u8),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("could not encode record: {0}")]
    Encode(String),
}

/// The record key for a tenant's session.
pub fn record_key(tenant_id: &[u8; 16], session_id: &[u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(tenant_id);
    key[16..].copy_from_slice(session_id);
    key
}

/// Encodes a batch as a record value, version byte first, appending to `out`.
///
/// The archive is written straight after the version byte: rkyv is built with
/// `unaligned`, so archived fields need no alignment, relative pointers do not
/// care where the archive starts, and no intermediate buffer is copied.
pub fn encode_record(batch: &RecordBatch<'_>, out: &mut Vec<u8>) -> Result<(), RecordError> {
    let mut buf = std::mem::take(out);
    buf.push(RECORD_VERSION);
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(batch, buf) {
        Ok(buf) => {
            *out = buf;
            Ok(())
        }
        Err(e) => {
            // The buffer was consumed; `out` stays empty rather than half-written.
            Err(RecordError::Encode(e.to_string()))
        }
    }
}

/// Decodes and validates (bytecheck) a record value read from the broker,
/// in place: no copy, no allocation.
pub fn decode_record(value: &[u8]) -> Result<&ArchivedRecordBatch<'static>, RecordError> {
    let (&version, archive) = value.split_first().ok_or(RecordError::Empty)?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    rkyv::access::<ArchivedRecordBatch<'static>, rancor::Error>(archive)
        .map_err(|e| RecordError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt_str(s: &Option<String>) -> Option<&str> {
        s.as_deref()
    }

    fn check_round_trip(batch: &RecordBatch<'_>) {
        let mut out = Vec::new();
        encode_record(batch, &mut out).unwrap();
        assert_eq!(out[0], RECORD_VERSION);
        let a = decode_record(&out).unwrap();
        assert_eq!(a.tenant_id, batch.tenant_id);
        assert_eq!(a.batch_id, batch.batch_id);
        assert_eq!(a.received_at_us.to_native(), batch.received_at_us);
        assert_eq!(
            a.sent_at_us.as_ref().map(|v| v.to_native()),
            batch.sent_at_us
        );
        assert_eq!(a.events.len(), batch.events.len());
        for (x, e) in a.events.iter().zip(&batch.events) {
            assert_eq!(x.id, e.id);
            assert_eq!(x.session_id, e.session_id);
            assert_eq!(x.event_type, e.event_type);
            assert_eq!(x.timestamp_us.to_native(), e.timestamp_us);
            assert_eq!(x.path.as_deref(), e.path);
            assert_eq!(x.title.as_deref(), e.title);
            assert_eq!(x.properties.as_deref(), e.properties);
            assert_eq!(
                x.screen_width.as_ref().map(|v| v.to_native()),
                e.screen_width
            );
            assert_eq!(
                x.x.as_ref().map(|v| v.to_native().to_bits()),
                e.x.map(f64::to_bits)
            );
            assert_eq!(x.lcp.as_ref().map(|v| v.to_native()), e.lcp);
        }
    }

    #[test]
    fn rejects_bad_versions_and_garbage() {
        assert!(matches!(decode_record(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            decode_record(&[9, 1, 2]),
            Err(RecordError::Version(9))
        ));
        assert!(matches!(
            decode_record(&[RECORD_VERSION, 1, 2, 3]),
            Err(RecordError::Corrupt(_))
        ));
    }

    #[test]
    fn decodes_from_any_offset_and_appends_after_existing_bytes() {
        let batch = RecordBatch {
            tenant_id: [7; 16],
            batch_id: [8; 16],
            received_at_us: 42,
            sent_at_us: None,
            events: Vec::new(),
        };
        let mut out = vec![0xAA, 0xBB, 0xCC];
        encode_record(&batch, &mut out).unwrap();
        assert_eq!(&out[..3], &[0xAA, 0xBB, 0xCC]);
        let a = decode_record(&out[3..]).unwrap();
        assert_eq!(a.tenant_id, [7; 16]);
        assert_eq!(a.received_at_us.to_native(), 42);
    }

    /// The record the `record_decode` fuzz target starts from
    /// (`fuzz/seeds/record_decode/batch`) is this build's encoding of a real
    /// batch; `WRITE_FUZZ_SEEDS=1` rewrites it when the format changes.
    #[test]
    fn the_fuzz_seed_record_is_this_formats() {
        let mut page = EventRecord::bare([1; 16], [2; 16], 0, 1_795_867_199_000_000);
        page.url = Some("https://shop.example/p1?utm_source=mail");
        page.path = Some("/p1");
        page.referrer = Some("https://www.google.com/");
        page.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0");
        page.screen_width = Some(1920);
        let mut vitals = EventRecord::bare([3; 16], [2; 16], 3, 1_795_867_199_500_000);
        vitals.lcp = Some(1200.5);
        vitals.cls = Some(0.02);
        let mut custom = EventRecord::bare([4; 16], [2; 16], 4, 1_795_867_199_900_000);
        custom.name = Some("signup");
        custom.properties = Some(r#"{"plan":"pro"}"#);
        let batch = RecordBatch {
            tenant_id: [0; 16],
            batch_id: [9; 16],
            received_at_us: 1_795_867_200_000_000,
            sent_at_us: Some(1_795_867_199_950_000),
            events: vec![page, vitals, custom],
        };
        let mut out = Vec::new();
        encode_record(&batch, &mut out).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/seeds/record_decode/batch"
        );
        if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(path, &out).unwrap();
        }
        let seed = std::fs::read(path).expect("run with WRITE_FUZZ_SEEDS=1 to write the seed");
        assert_eq!(
            seed, out,
            "the record format changed: rerun with WRITE_FUZZ_SEEDS=1"
        );
        assert_eq!(decode_record(&seed).unwrap().events.len(), 3);
    }

    #[test]
    fn key_is_tenant_then_session() {
        let k = record_key(&[1; 16], &[2; 16]);
        assert_eq!(&k[..16], &[1; 16]);
        assert_eq!(&k[16..], &[2; 16]);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            tenant in any::<[u8; 16]>(),
            received in any::<i64>(),
            sent in any::<Option<i64>>(),
            events in proptest::collection::vec(
                (any::<[u8; 16]>(), 0u8..5, any::<i64>(), any::<Option<String>>(),
                 any::<Option<String>>(), any::<Option<u32>>(), any::<Option<f64>>(),
                 any::<Option<String>>()),
                0..20),
        ) {
            let records: Vec<EventRecord<'_>> = events.iter().map(|(id, t, ts, path, title, w, x, props)| EventRecord {
                id: *id, session_id: *id, event_type: *t, timestamp_us: *ts,
                client_timestamp_us: *ts, user_id: None, url: None, path: opt_str(path),
                referrer: None, title: opt_str(title), user_agent: None, locale: None,
                screen_width: *w, screen_height: None, selector: None, element: None,
                text: None, href: None, x: *x, y: None, depth_pct: None, lcp: *x,
                fcp: None, inp: None, cls: None, ttfb: None, fid: None, name: None,
                properties: opt_str(props),
            }).collect();
            let batch = RecordBatch { tenant_id: tenant, batch_id: tenant, received_at_us: received,
                sent_at_us: sent, events: records };
            check_round_trip(&batch);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_record(&bytes);
        }
    }
}
