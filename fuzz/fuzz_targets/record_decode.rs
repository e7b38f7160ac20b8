//! The sink's record decoder on arbitrary bytes from the broker: a record is
//! decoded (and validated) or refused, never a panic or an out-of-bounds read.
#![no_main]

use engine_core::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_record(data) {
        // Touch every field the sink reads.
        for e in batch.events.iter() {
            for (_, t) in e.texts() {
                let _ = t.as_ref().map(|s| s.len());
            }
            for (_, n) in e.numbers() {
                let _ = n.as_ref().copied();
            }
        }
    }
});
