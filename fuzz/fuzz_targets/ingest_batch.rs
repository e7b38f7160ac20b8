//! A batch body as `POST /ingest` sees it after decoding: the envelope, each
//! event's parse and validation, and the valid events encoded as a broker
//! record and decoded back (what the sink reads), as the edge does it.
#![no_main]

#[path = "common/batch.rs"]
mod batch;

use engine_core::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((payload, n)) = batch::record_of(data) else {
        return;
    };
    let back = decode_record(&payload).expect("an encoded record decodes");
    assert_eq!(back.events.len(), n);
});
