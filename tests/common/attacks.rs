//! Hostile requests: the framing and smuggling corpus, each with the answer
//! the engine must give (then close).

use sonic_rs::JsonValueTrait;

use super::*;

/// Requests that killed a shard (or read an unbounded body), each with the
/// status it must get instead.
pub fn framing_attacks() -> Vec<(&'static str, Vec<u8>, u16)> {
    let chunked_ingest = |auth: &str| {
        format!("POST /ingest HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc")
    };
    let drain_chunk = format!("800\r\n{}\r\n", "a".repeat(0x800));
    vec![
        (
            "Content-Length: u64::MAX on GET /health",
            b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551615\r\n\r\nabcdefgh"
                .to_vec(),
            413,
        ),
        (
            "Content-Length past u64 on GET /health",
            b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\nabc"
                .to_vec(),
            413,
        ),
        (
            "chunk size ffffffffffffffff on POST /ingest",
            chunked_ingest(&format!("Authorization: {DEV_AUTH}\r\n")).into_bytes(),
            413,
        ),
        (
            "chunk size ffffffffffffffff on POST /ingest, unauthenticated",
            chunked_ingest("").into_bytes(),
            401,
        ),
        (
            "chunk size ffffffffffffffff on GET /health",
            b"GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc"
                .to_vec(),
            413,
        ),
        (
            "Content-Length body past the drain bound on GET /metrics",
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\naaaa".to_vec(),
            413,
        ),
        (
            "chunked body past the drain bound on GET /health/live",
            format!(
                "GET /health/live HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                drain_chunk.repeat(3)
            )
            .into_bytes(),
            413,
        ),
        (
            "conflicting Content-Length",
            format!("POST /ingest HTTP/1.1\r\nHost: t\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").into_bytes(),
            400,
        ),
        (
            "Transfer-Encoding with Content-Length",
            format!("POST /ingest HTTP/1.1\r\nHost: t\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
            400,
        ),
    ]
    .into_iter()
    .chain(smuggling().into_iter().map(|(w, r)| (w, r, 400)))
    .collect()
}

/// Request smuggling attempts: each must get 400 and a close, never a
/// second reading of its bytes.
fn smuggling() -> Vec<(&'static str, Vec<u8>)> {
    let a = format!("Authorization: {DEV_AUTH}\r\nContent-Type: application/json\r\n");
    let body = r#"{"events":[]}"#;
    let post = |headers: &str, rest: &str| -> Vec<u8> {
        format!("POST /ingest HTTP/1.1\r\nHost: t\r\n{a}{headers}\r\n{rest}").into_bytes()
    };
    let chunked = "Transfer-Encoding: chunked\r\n";
    vec![
        (
            "negative Content-Length",
            post("Content-Length: -5\r\n", body),
        ),
        (
            "Content-Length with a plus sign",
            post("Content-Length: +13\r\n", body),
        ),
        (
            "Content-Length list",
            post("Content-Length: 13, 13\r\n", body),
        ),
        (
            "obs-fold in a header",
            post("X-A: a\r\n b\r\nContent-Length: 13\r\n", body),
        ),
        (
            "obs-fold Transfer-Encoding",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "space before the colon",
            post("Content-Length : 13\r\n", body),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding: xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding twice",
            post(&chunked.repeat(2), "0\r\n\r\n"),
        ),
        (
            "chunk extension of 100 kB",
            post(
                chunked,
                &format!("d;{}\r\n{body}\r\n0\r\n\r\n", "x".repeat(100_000)),
            ),
        ),
        (
            "chunk size with 0x",
            post(chunked, &format!("0xd\r\n{body}\r\n0\r\n\r\n")),
        ),
        (
            "bare CR in the request line",
            b"POST /ingest HTTP/1.1\rHost: t\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header",
            b"GET /health HTTP/1.1\r\nHost: t\x00x\r\n\r\n".to_vec(),
        ),
        (
            "TLS hello on the plain port",
            [
                &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
                &[b'a'; 100],
                b"\r\n\r\n",
            ]
            .concat(),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /ingest HTTP/1.0\r\nHost: t\r\n{a}{chunked}\r\n0\r\n\r\n").into_bytes(),
        ),
    ]
}

/// Sends `raw` on a new connection; asserts `status` with a JSON error body
/// and that the connection closes after it.
pub fn assert_refused(port: u16, what: &str, raw: &[u8], status: u16) {
    let mut conn = Raw::connect(port);
    conn.send(raw);
    let r = conn.response();
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let j = r.json();
    let field = |k: &str| {
        j.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("status"), "error", "{what}");
    assert!(!field("error").is_empty() && !field("message").is_empty());
    assert_eq!(r.header("connection"), Some("close"), "{what}");
    assert!(conn.closed(), "{what}: connection left open");
}
