//! The request reader fed arbitrary bytes (any UTF-8 around every bound,
//! and bytes that are not UTF-8): heads, chunked and length-framed bodies,
//! and the gzip/zstd decoder. Each answers a step or a rejection, never a
//! panic (a panic aborts the engine), and every error body it makes is
//! bounded JSON (issue 19).

use edge_http::body::decode;
use edge_http::reader::{BodyLimit, Bounds};
use edge_http::{BodyStep, HeadStep, Response, MAX_ERROR_MESSAGE_BYTES};
use proptest::prelude::*;

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        ("[éa€🦀:;, \\r\\n]{1,6}", 1usize..200).prop_map(|(unit, n)| unit.repeat(n)),
    ]
}

fn heads() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just("Content-Type"),
        Just("Content-Length"),
        Just("Transfer-Encoding"),
        Just("Content-Encoding"),
        Just("Authorization"),
        Just("Origin"),
        Just("X-Forwarded-For"),
        Just("Expect"),
        Just("Host"),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (
            hostile_text(),
            proptest::collection::vec((header, hostile_text()), 0..6),
            hostile_text()
        )
            .prop_map(|(path, headers, body)| {
                let mut h = format!("POST /{path} HTTP/1.1\r\n");
                for (name, value) in headers {
                    h.push_str(&format!("{name}: {value}\r\n"));
                }
                h.push_str("\r\n");
                h.push_str(&body);
                h.into_bytes()
            }),
        (
            hostile_text(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(ext, data)| {
                let mut h = format!(
                    "POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;{ext}\r\n"
                )
                .into_bytes();
                h.extend_from_slice(&data);
                h
            }),
    ]
}

fn check_response(r: &Response) -> Result<(), TestCaseError> {
    let body =
        String::from_utf8(r.body.to_vec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        body.len() <= 6 * MAX_ERROR_MESSAGE_BYTES + 200,
        "{} bytes",
        body.len()
    );
    prop_assert!(
        body.starts_with('{') && body.ends_with('}'),
        "not an object: {}",
        body
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_reader_never_panics_on_any_bytes(buf in heads(), max_head in 16usize..2048, max_body in 0usize..512) {
        let bounds = Bounds::new(max_head);
        match bounds.read_head(&buf) {
            HeadStep::Reject(r) => check_response(&r.response())?,
            HeadStep::NeedMore(need) => prop_assert!(need.max >= 1),
            HeadStep::Head(head) => match bounds.body(&head, BodyLimit::Read(max_body)) {
                Err(r) => check_response(&r.response())?,
                Ok(mut reader) => {
                    // Feed the rest in every prefix, as reads would.
                    for _ in 0..64 {
                        match reader.advance(&buf) {
                            BodyStep::Reject(r) => { check_response(&r.response())?; break }
                            BodyStep::Done { .. } | BodyStep::NeedMore(_) => break,
                            BodyStep::Data(_) => {}
                        }
                    }
                }
            },
        }
    }

    #[test]
    fn an_error_message_of_any_text_is_bounded_json(code in 0..edge_http::ErrorCode::ALL.len(), m in hostile_text(), n in 1usize..40) {
        let message = m.repeat(n);
        let code = edge_http::ErrorCode::ALL[code];
        check_response(&Response::error(code.statuses()[0], code, &message))?;
    }

    #[test]
    fn the_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), cap in 0usize..4096) {
        for enc in [edge_http::Encoding::Gzip, edge_http::Encoding::Zstd] {
            let mut out = Vec::new();
            if decode(enc, &data, &mut out, cap).is_ok() {
                prop_assert!(out.len() <= cap);
            }
        }
    }
}
