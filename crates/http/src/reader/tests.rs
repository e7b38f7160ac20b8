use proptest::prelude::*;

use super::*;
use crate::Method;

/// The reader's bounds and the body limit of the one route that reads a
/// body in these tests (`/ingest`, as in the edge's route table); every
/// other path discards its body, as the edge's bodiless routes do.
#[derive(Debug, Clone, Copy)]
struct Rig {
    bounds: Bounds,
    max_body: usize,
}

impl Rig {
    fn new(max_head: usize, max_body: usize) -> Self {
        Self {
            bounds: Bounds::new(max_head),
            max_body,
        }
    }

    fn read_head(&self, buf: &[u8]) -> HeadStep {
        self.bounds.read_head(buf)
    }

    /// `head`'s body limit (`buf`: the bytes it was parsed from).
    fn limit_of(&self, head: &RequestHead, buf: &[u8]) -> BodyLimit {
        if buf[head.path.clone()] == *b"/ingest" {
            BodyLimit::Read(self.max_body)
        } else {
            BodyLimit::Discard
        }
    }

    fn body(&self, head: &RequestHead, buf: &[u8]) -> Result<BodyReader, Reject> {
        self.bounds.body(head, self.limit_of(head, buf))
    }
}

/// What reading a stream produced, comparable across ways of splitting it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a test's record of a few requests
enum Event {
    Request {
        head: RequestHead,
        body: Vec<u8>,
    },
    Reject(u16, &'static str),
    /// The input ended inside a request.
    Incomplete,
}

/// The client side of `drive`: hands out `input` in reads.
struct Socket<'a> {
    input: &'a [u8],
    fed: usize,
    sizes: std::iter::Cycle<std::slice::Iter<'a, usize>>,
}

impl Socket<'_> {
    fn done(&self) -> bool {
        self.fed == self.input.len()
    }

    /// One read of at most `need.max` bytes (and the next read size); false
    /// at the end of the input. Asserts that `buf` stays within `bound`.
    fn read(&mut self, buf: &mut Vec<u8>, need: Need, bound: usize) -> bool {
        assert!(
            1 <= need.min && need.min <= need.max,
            "bad need {need:?} with {} buffered",
            buf.len()
        );
        if self.done() {
            return false;
        }
        let n = need
            .max
            .min(self.sizes.next().copied().unwrap_or(usize::MAX))
            .min(self.input.len() - self.fed);
        buf.extend_from_slice(&self.input[self.fed..self.fed + n]);
        self.fed += n;
        assert!(buf.len() <= bound, "{} buffered over {bound}", buf.len());
        true
    }
}

/// Reads `input` as `conn` does: each read brings at most `Need::max` bytes,
/// and at most the next entry of `reads` (cycled; none: no other cap).
/// Checks the buffer and body bounds after every step.
fn drive(b: &Rig, input: &[u8], reads: &[usize]) -> Vec<Event> {
    let mut socket = Socket {
        input,
        fed: 0,
        sizes: reads.iter().cycle(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    loop {
        if buf.is_empty() && socket.done() {
            return events;
        }
        let head = loop {
            match b.read_head(&buf) {
                HeadStep::NeedMore(need) => {
                    if !socket.read(&mut buf, need, b.bounds.max_head) {
                        events.push(Event::Incomplete);
                        return events;
                    }
                }
                HeadStep::Head(h) => break h,
                HeadStep::Reject(r) => {
                    events.push(Event::Reject(r.status, r.code.as_str()));
                    return events;
                }
            }
        };
        let mut body = match b.body(&head, &buf) {
            Ok(body) => body,
            Err(r) => {
                events.push(Event::Reject(r.status, r.code.as_str()));
                return events;
            }
        };
        let limit = b.bounds.limit(b.limit_of(&head, &buf));
        assert_eq!(body.limit(), limit);
        let bound = head.len + limit + b.bounds.chunk_overhead;
        let mut decoded = Vec::new();
        let end = loop {
            match body.advance(&buf) {
                BodyStep::NeedMore(need) => {
                    if !socket.read(&mut buf, need, bound) {
                        events.push(Event::Incomplete);
                        return events;
                    }
                }
                BodyStep::Data(r) => {
                    assert!(!r.is_empty() && r.start >= head.len && r.end <= buf.len());
                    decoded.extend_from_slice(&buf[r]);
                    assert!(decoded.len() <= limit, "decoded past the limit");
                }
                BodyStep::Done { body, end } => {
                    assert!(body.start >= head.len && body.end <= end && end <= buf.len());
                    assert!(body.len() <= limit);
                    decoded.extend_from_slice(&buf[body]);
                    break end;
                }
                BodyStep::Reject(r) => {
                    events.push(Event::Reject(r.status, r.code.as_str()));
                    return events;
                }
            }
        };
        buf.drain(..end);
        events.push(Event::Request {
            head,
            body: decoded,
        });
    }
}

fn whole(b: &Rig, input: &[u8]) -> Vec<Event> {
    drive(b, input, &[])
}

fn bounds() -> Rig {
    Rig::new(16 * 1024, 1 << 20)
}

fn statuses(events: &[Event]) -> Vec<u16> {
    events
        .iter()
        .map(|e| match e {
            Event::Request { .. } => 200,
            Event::Reject(s, _) => *s,
            Event::Incomplete => 0,
        })
        .collect()
}

fn bodies(events: &[Event]) -> Vec<&[u8]> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Request { body, .. } => Some(&body[..]),
            _ => None,
        })
        .collect()
}

const INGEST: &str = "POST /ingest HTTP/1.1\r\nContent-Type: application/json\r\n";

#[test]
fn huge_content_length_on_get_health_is_413_before_any_body_byte() {
    // The reported case: `head.len + n` wrapped and the slice after it panicked.
    let raw = b"GET /health HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nabcdefgh";
    let b = bounds();
    let HeadStep::Head(h) = b.read_head(raw) else {
        panic!("head expected")
    };
    let r = b.body(&h, raw).unwrap_err();
    assert_eq!((r.status, r.code.as_str()), (413, "body_too_large"));
    assert!(r.message.contains("takes no body"), "{}", r.message);
    for n in ["18446744073709551614", "99999999999999999999", "4097"] {
        let raw = format!("GET /health HTTP/1.1\r\nContent-Length: {n}\r\n\r\nabc");
        assert_eq!(statuses(&whole(&b, raw.as_bytes())), [413], "{n}");
    }
    let raw = format!("{INGEST}Content-Length: 18446744073709551615\r\n\r\nabc");
    assert_eq!(statuses(&whole(&b, raw.as_bytes())), [413]);
}

#[test]
fn sixteen_f_chunk_size_is_413_not_a_panic() {
    // The reported case: `out.len() + size` overflowed before the slice.
    let b = bounds();
    for size in [
        "ffffffffffffffff",
        "FFFFFFFFFFFFFFFF",
        "10000000000000000",
        "100001",
    ] {
        for head in [
            format!("{INGEST}Transfer-Encoding: chunked\r\n\r\n"),
            "GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        ] {
            let raw = format!("{head}{size}\r\nabc");
            assert_eq!(
                whole(&b, raw.as_bytes()),
                [Event::Reject(413, "body_too_large")],
                "{size} on {head}"
            );
        }
    }
    // Leading zeros are fine: the value, not the digit count, is bounded.
    let raw = format!(
        "{INGEST}Transfer-Encoding: chunked\r\n\r\n000000000000000000003\r\nabc\r\n0\r\n\r\n"
    );
    assert_eq!(bodies(&whole(&b, raw.as_bytes())), [b"abc"]);
}

#[test]
fn a_bodiless_route_drains_a_small_body_and_refuses_a_large_one() {
    let b = bounds();
    let small =
        "GET /health HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET /metrics HTTP/1.1\r\n\r\n";
    let events = whole(&b, small.as_bytes());
    assert_eq!(statuses(&events), [200, 200]);
    assert_eq!(bodies(&events), [&b"0123456789"[..], b""]);
    let at_bound = format!(
        "GET /metrics HTTP/1.1\r\nContent-Length: {BODILESS_DRAIN_BYTES}\r\n\r\n{}",
        "a".repeat(BODILESS_DRAIN_BYTES)
    );
    assert_eq!(statuses(&whole(&b, at_bound.as_bytes())), [200]);
    let over = format!(
        "GET /metrics HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        BODILESS_DRAIN_BYTES + 1
    );
    assert_eq!(statuses(&whole(&b, over.as_bytes())), [413]);
    // Chunked: refused at the size line that crosses the bound, before its data.
    let chunk = format!("800\r\n{}\r\n", "a".repeat(0x800));
    let chunked = format!(
        "GET /health/live HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}800\r\n",
        chunk.repeat(2)
    );
    assert_eq!(statuses(&whole(&b, chunked.as_bytes())), [413]);
    let fits = format!(
        "GET /health/live HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(2)
    );
    assert_eq!(statuses(&whole(&b, fits.as_bytes())), [200]);
    // Unknown paths are bodiless too.
    let nope = "POST /nope HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(statuses(&whole(&b, nope.as_bytes())), [413]);
}

#[test]
fn framing_conflicts_are_400() {
    let b = bounds();
    for raw in [
        format!("{INGEST}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        format!(
            "{INGEST}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ),
        format!("{INGEST}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
        format!("{INGEST}Content-Length: 3, 3\r\n\r\nabc"),
        format!("{INGEST}Content-Length: -3\r\n\r\nabc"),
    ] {
        assert_eq!(
            whole(&b, raw.as_bytes()),
            [Event::Reject(400, "bad_request")],
            "{raw}"
        );
    }
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let b = bounds();
    let raw = format!("{INGEST}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1 \r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /health HTTP/1.1\r\n\r\n");
    let events = whole(&b, raw.as_bytes());
    assert_eq!(statuses(&events), [200, 200]);
    assert_eq!(bodies(&events), [&b"hello world"[..], b""]);
    for cut in 1..raw.len() {
        assert_eq!(drive(&b, raw.as_bytes(), &[cut]), events, "reads of {cut}");
    }
}

#[test]
fn malformed_chunked_framing_is_400() {
    let b = bounds();
    let head = format!("{INGEST}Transfer-Encoding: chunked\r\n\r\n");
    for (body, why) in [
        ("zz\r\n", "not hex"),
        ("\r\nabc", "empty size line (httparse reads it as 0)"),
        (" 3\r\nabc\r\n0\r\n\r\n", "space before the size"),
        ("3 x\r\nabc\r\n0\r\n\r\n", "junk after the size"),
        ("3\nabc\r\n0\r\n\r\n", "bare LF"),
        ("3\rabc\r\n0\r\n\r\n", "bare CR"),
        ("2\r\nabXY", "no CRLF after the data"),
        ("2\r\nab\rX", "half a CRLF after the data"),
        ("0\r\nX: 1\n\r\n", "bare LF in a trailer"),
    ] {
        let raw = format!("{head}{body}");
        assert_eq!(
            whole(&b, raw.as_bytes()),
            [Event::Reject(400, "bad_request")],
            "{why}"
        );
    }
    let long_ext = format!(
        "{head}1;{}\r\na\r\n0\r\n\r\n",
        "e".repeat(MAX_CHUNK_LINE_BYTES)
    );
    assert_eq!(statuses(&whole(&b, long_ext.as_bytes())), [400]);
    let long_trailer = format!("{head}0\r\nX: {}", "t".repeat(2 * MAX_CHUNK_LINE_BYTES));
    assert_eq!(statuses(&whole(&b, long_trailer.as_bytes())), [400]);
}

#[test]
fn chunked_overhead_is_bounded() {
    let mut b = bounds();
    b.bounds.chunk_overhead = 100;
    let head = format!("{INGEST}Transfer-Encoding: chunked\r\n\r\n");
    // 1-byte chunks cost 5 bytes of framing each: 19 and the last chunk fit
    // in 100 bytes, 40 do not.
    let ok = format!("{head}{}0\r\n\r\n", "1\r\na\r\n".repeat(19));
    assert_eq!(bodies(&whole(&b, ok.as_bytes())), [&[b'a'; 19][..]]);
    let over = format!("{head}{}0\r\n\r\n", "1\r\na\r\n".repeat(40));
    assert_eq!(
        whole(&b, over.as_bytes()),
        [Event::Reject(413, "body_too_large")]
    );
    // Endless trailers too.
    let trailers = format!("{head}0\r\n{}", "X: y\r\n".repeat(40));
    assert_eq!(statuses(&whole(&b, trailers.as_bytes())), [413]);
}

#[test]
fn the_head_is_bounded() {
    let b = Rig::new(64, 100);
    let partial = format!("GET /health HTTP/1.1\r\nX: {}", "a".repeat(100));
    assert_eq!(
        whole(&b, partial.as_bytes()),
        [Event::Reject(431, "header_too_large")]
    );
    let fits = "GET /health HTTP/1.1\r\nX: y\r\n\r\n";
    assert_eq!(statuses(&whole(&b, fits.as_bytes())), [200]);
    assert_eq!(statuses(&whole(&b, b"GET /health HTTP/1.1\r\n")), [0]);
}

#[test]
fn declared_lengths_are_checked_against_the_route_limit() {
    let b = Rig::new(1024, 100);
    let ok = format!("{INGEST}Content-Length: 100\r\n\r\n{}", "a".repeat(100));
    assert_eq!(bodies(&whole(&b, ok.as_bytes())), [&[b'a'; 100][..]]);
    let over = format!("{INGEST}Content-Length: 101\r\n\r\n");
    let events = whole(&b, over.as_bytes());
    assert_eq!(events, [Event::Reject(413, "body_too_large")]);
    let HeadStep::Head(h) = b.read_head(over.as_bytes()) else {
        panic!("head expected")
    };
    assert!(b
        .body(&h, over.as_bytes())
        .unwrap_err()
        .message
        .contains("101 bytes exceeds the limit of 100"));
}

// ---- properties ----

/// Pieces that make request-like streams, so arbitrary input reaches the
/// body reader instead of dying at the request line.
const TOKENS: &[&str] = &[
    "GET ",
    "POST ",
    "HEAD ",
    "/ingest",
    "/health",
    "/metrics",
    "/nope",
    " HTTP/1.1\r\n",
    " HTTP/1.0\r\n",
    "Content-Length: ",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Expect: 100-continue\r\n",
    "Connection: close\r\n",
    "18446744073709551615",
    "99999999999999999999",
    "ffffffffffffffff",
    "0",
    "5",
    "3",
    "40",
    "\r\n",
    "\r\n\r\n",
    "0\r\n\r\n",
    "5\r\nhello\r\n",
    "3;x=y\r\nabc\r\n",
    "X-A: b\r\n",
    "\n",
    "\r",
    ";",
    "abc",
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

/// Chunked requests (mostly well-formed chunks, some junk), pipelined.
fn chunked_stream() -> impl Strategy<Value = Vec<u8>> {
    let head = proptest::sample::select(
        &[
            "POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ][..],
    )
    .prop_map(|h| h.as_bytes().to_vec());
    let chunk = prop_oneof![
        8 => (0usize..48, any::<u8>(), any::<bool>()).prop_map(|(n, b, ext)| {
            let ext = if ext { ";name=value" } else { "" };
            let mut c = format!("{n:x}{ext}\r\n").into_bytes();
            c.extend(std::iter::repeat_n(b, n));
            c.extend_from_slice(b"\r\n");
            c
        }),
        1 => Just(b"0\r\nX-T: 1\r\n\r\n".to_vec()),
        1 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
    ];
    let request = (head, proptest::collection::vec(chunk, 0..30)).prop_map(|(h, chunks)| {
        let mut r = h;
        r.extend(chunks.concat());
        r.extend_from_slice(b"0\r\n\r\n");
        r
    });
    proptest::collection::vec(request, 1..4).prop_map(|v| v.concat())
}

fn small_bounds() -> impl Strategy<Value = Rig> {
    (1usize..300, 0usize..200, 0usize..50, 0usize..100).prop_map(
        |(max_head, max_body, bodiless_drain, chunk_overhead)| Rig {
            bounds: Bounds {
                max_head,
                bodiless_drain,
                chunk_overhead,
            },
            max_body,
        },
    )
}

/// A valid request and the body it carries.
fn request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let target = proptest::sample::select(
        &[
            ("POST", "/ingest"),
            ("POST", "/ingest?key=a:b"),
            ("GET", "/health"),
            ("HEAD", "/health/live"),
            ("GET", "/metrics"),
            ("GET", "/nope"),
        ][..],
    );
    (
        target,
        proptest::collection::vec(any::<u8>(), 0..120),
        proptest::collection::vec(1usize..40, 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((method, path), mut body, cuts, chunked, trailer)| {
            if path != "/ingest" && path != "/ingest?key=a:b" {
                body.truncate(BODILESS_DRAIN_BYTES);
            }
            let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n").into_bytes();
            if chunked {
                raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &body[..];
                for cut in cuts {
                    let (chunk, tail) = rest.split_at(cut.min(rest.len()));
                    if chunk.is_empty() {
                        break;
                    }
                    raw.extend_from_slice(format!("{:X};n=v\r\n", chunk.len()).as_bytes());
                    raw.extend_from_slice(chunk);
                    raw.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                if !rest.is_empty() {
                    raw.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
                    raw.extend_from_slice(rest);
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"0\r\n");
                if trailer {
                    raw.extend_from_slice(b"X-Checksum: 1\r\n");
                }
                raw.extend_from_slice(b"\r\n");
            } else {
                raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                raw.extend_from_slice(&body);
            }
            (raw, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_streams_never_panic_and_stay_in_bounds(
        input in stream(),
        b in small_bounds(),
        reads in proptest::collection::vec(1usize..64, 1..6),
    ) {
        // `drive` asserts the bounds after every read.
        let split = drive(&b, &input, &reads);
        prop_assert_eq!(split, whole(&b, &input));
    }

    #[test]
    fn chunked_streams_stay_in_bounds(
        input in chunked_stream(),
        b in small_bounds(),
        reads in proptest::collection::vec(1usize..64, 1..6),
    ) {
        prop_assert_eq!(drive(&b, &input, &reads), whole(&b, &input));
    }

    #[test]
    fn raw_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        b in small_bounds(),
        reads in proptest::collection::vec(1usize..64, 1..6),
    ) {
        prop_assert_eq!(drive(&b, &input, &reads), whole(&b, &input));
    }

    #[test]
    fn pipelined_requests_split_anywhere_parse_the_same_as_whole(
        requests in proptest::collection::vec(request(), 1..5),
        reads in proptest::collection::vec(1usize..80, 1..6),
    ) {
        let b = Rig::new(1024, 4096);
        let input: Vec<u8> = requests.iter().flat_map(|(raw, _)| raw.clone()).collect();
        let events = whole(&b, &input);
        let expected: Vec<&[u8]> = requests.iter().map(|(_, body)| &body[..]).collect();
        prop_assert_eq!(bodies(&events), expected);
        prop_assert_eq!(events.len(), requests.len());
        for (e, (raw, _)) in events.iter().zip(&requests) {
            let Event::Request { head, .. } = e else { unreachable!() };
            prop_assert_eq!(head, &parse_head(raw).unwrap().unwrap());
            prop_assert_eq!(
                head.method == Method::Post,
                raw[head.path.clone()] == *b"/ingest"
            );
        }
        prop_assert_eq!(drive(&b, &input, &reads), events);
    }
}
