//! The request reader on arbitrary bytes, split into reads where the input
//! says: no panic, and the reader's invariants (`edge_http::reader`) hold.
#![no_main]

use edge_http::reader::{BodyLimit, BodyStep, Bounds, HeadStep};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 1024;
const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte sets the read size, so splits are explored too.
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 64) + 1;
    let bounds = Bounds::new(MAX_HEAD);
    // The split byte's top bit picks the route kind: one that reads its
    // body, or one that discards it.
    let limit = if split & 0x80 == 0 {
        BodyLimit::Read(MAX_BODY)
    } else {
        BodyLimit::Discard
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut feed = |buf: &mut Vec<u8>, max: usize| -> bool {
        if fed >= input.len() {
            return false;
        }
        let n = max.min(step).min(input.len() - fed);
        assert!(max >= 1, "Need::max is never 0");
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        true
    };
    // Requests one after the other, as on a keep-alive connection.
    loop {
        let head = loop {
            match bounds.read_head(&buf) {
                HeadStep::Head(h) => break h,
                HeadStep::Reject(_) => return,
                HeadStep::NeedMore(need) => {
                    assert!(buf.len() <= MAX_HEAD, "a head never outgrows its bound");
                    if !feed(&mut buf, need.max) {
                        return;
                    }
                }
            }
        };
        let Ok(mut body) = bounds.body(&head, limit) else {
            return;
        };
        let limit = body.limit();
        let mut decoded = 0usize;
        let end = loop {
            match body.advance(&buf) {
                BodyStep::Data(r) => {
                    assert!(r.end <= buf.len() && r.start <= r.end);
                    decoded += r.len();
                    assert!(decoded <= limit, "decoded body over its limit");
                }
                BodyStep::Done { body: r, end } => {
                    assert!(r.end <= end && end <= buf.len());
                    assert!(decoded + r.len() <= limit, "body over its limit");
                    break end;
                }
                BodyStep::Reject(_) => return,
                BodyStep::NeedMore(need) => {
                    if !feed(&mut buf, need.max) {
                        return;
                    }
                }
            }
        };
        buf.drain(..end);
    }
});
