//! The request reader: every framing decision about one request, with no I/O.
//!
//! [`conn`](crate::conn) owns the socket and the buffer; it asks this module
//! what the bytes it holds mean: read more (and at most how much), a head is
//! complete, a body is complete, or the request is refused with a status.
//!
//! Invariants (property-tested below on arbitrary byte streams split at
//! arbitrary points):
//! - Nothing here panics, whatever the bytes: every size taken from the
//!   request is combined with checked arithmetic, and a size that does not fit
//!   is a rejection, never a wrap-around.
//! - A head never needs more than `max_header_bytes` buffered (else 431).
//! - A body never needs more than its route's bound buffered: `max_body_bytes`
//!   for a route that takes a body, [`BODILESS_DRAIN_BYTES`] for any other
//!   (else 413), plus at most [`CHUNK_OVERHEAD_BYTES`] of chunked framing.
//! - A request reads the same whether its bytes arrive at once or split
//!   anywhere.

use crate::http::{decode_chunked, parse_head, ChunkError, Framing, RequestHead, Route};

/// Most body bytes read (and discarded) on a route that takes no body, so a
/// client sending one anyway can keep its connection.
pub const BODILESS_DRAIN_BYTES: usize = 4 * 1024;
/// Chunked framing (sizes, extensions, trailers) allowed on top of a body bound.
pub const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

/// The size bounds of a request (from `[http]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

impl Bounds {
    /// Most body bytes a request to `route` may carry.
    pub fn body(&self, route: Route) -> usize {
        match route {
            Route::Ingest => self.max_body_bytes,
            _ => BODILESS_DRAIN_BYTES,
        }
    }
}

/// A request refused: answered with `status` and a JSON error, then the
/// connection closes (its framing can no longer be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

const fn reject(status: u16, code: &'static str, message: &'static str) -> Reject {
    Reject {
        status,
        code,
        message,
    }
}

const HEAD_TOO_LARGE: Reject = reject(431, "header_too_large", "request head exceeds the limit");
const BODY_TOO_LARGE: Reject = reject(
    413,
    "body_too_large",
    "request body exceeds http.max_body_bytes",
);
const NO_BODY_HERE: Reject = reject(413, "body_too_large", "this endpoint takes no request body");

/// What the bytes at the start of a connection buffer hold.
#[derive(Debug)]
pub enum HeadStep {
    /// Incomplete: read more, at most this many bytes.
    NeedMore {
        at_most: usize,
    },
    /// A complete head whose declared body fits its route's bound.
    Head(RequestHead),
    Reject(Reject),
}

/// Reads a request head from the start of `buf`.
pub fn read_head(buf: &[u8], bounds: &Bounds) -> HeadStep {
    match parse_head(buf) {
        Ok(Some(head)) if head.len > bounds.max_header_bytes => HeadStep::Reject(HEAD_TOO_LARGE),
        Ok(Some(head)) => match head.framing {
            Framing::Length(n) if n > bounds.body(head.route) => {
                HeadStep::Reject(too_large(head.route))
            }
            _ => HeadStep::Head(head),
        },
        Ok(None) => match bounds.max_header_bytes.checked_sub(buf.len()) {
            Some(room) if room > 0 => HeadStep::NeedMore { at_most: room },
            _ => HeadStep::Reject(HEAD_TOO_LARGE),
        },
        Err(e) => HeadStep::Reject(reject(e.status, "bad_request", e.message)),
    }
}

fn too_large(route: Route) -> Reject {
    match route {
        Route::Ingest => BODY_TOO_LARGE,
        _ => NO_BODY_HERE,
    }
}

/// Where a complete request's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `buf[start..end]`.
    InBuffer { start: usize, end: usize },
    /// Decoded into the chunk buffer passed to [`read_body`].
    Decoded,
}

/// How far the body of `head` has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStep {
    /// Incomplete: read at least this many more bytes.
    NeedMore {
        at_least: usize,
    },
    /// Complete: the request ends at `buf[..end]` (pipelined requests follow).
    Complete {
        end: usize,
        body: Body,
    },
    Reject(Reject),
}

/// Reads the body of `head` from `buf` (which starts with that head). A
/// chunked body is decoded into `chunks` (cleared first).
pub fn read_body(
    buf: &[u8],
    head: &RequestHead,
    bounds: &Bounds,
    chunks: &mut Vec<u8>,
) -> BodyStep {
    let start = head.len;
    let bound = bounds.body(head.route);
    match head.framing {
        Framing::None => BodyStep::Complete {
            end: start,
            body: Body::InBuffer { start, end: start },
        },
        Framing::Length(n) => {
            if n > bound {
                return BodyStep::Reject(too_large(head.route));
            }
            let Some(end) = start.checked_add(n) else {
                return BodyStep::Reject(too_large(head.route));
            };
            match end.checked_sub(buf.len()) {
                Some(missing) if missing > 0 => BodyStep::NeedMore { at_least: missing },
                _ => BodyStep::Complete {
                    end,
                    body: Body::InBuffer { start, end },
                },
            }
        }
        Framing::Chunked => {
            let Some(framed) = buf.get(start..) else {
                return BodyStep::NeedMore { at_least: 1 };
            };
            match decode_chunked(framed, chunks, bound) {
                Ok(Some(n)) => match start.checked_add(n) {
                    Some(end) => BodyStep::Complete {
                        end,
                        body: Body::Decoded,
                    },
                    None => BodyStep::Reject(too_large(head.route)),
                },
                Ok(None) if framed.len() > bound.saturating_add(CHUNK_OVERHEAD_BYTES) => {
                    BodyStep::Reject(too_large(head.route))
                }
                Ok(None) => BodyStep::NeedMore { at_least: 1 },
                Err(ChunkError::TooLarge) => BodyStep::Reject(too_large(head.route)),
                Err(ChunkError::Malformed) => {
                    BodyStep::Reject(reject(400, "bad_body", "malformed chunked body"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: Bounds = Bounds {
        max_header_bytes: 1024,
        max_body_bytes: 4096,
    };

    /// Feeds `bytes` to the reader in the given pieces, as a connection would,
    /// and returns what each request came to: (status or 0, body) per request.
    /// Asserts the buffering bounds on every step.
    fn feed(bytes: &[u8], cuts: &[usize]) -> Vec<(u16, Vec<u8>)> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(bytes.len());
            if c > at {
                pieces.push(&bytes[at..c]);
                at = c;
            }
        }
        pieces.push(&bytes[at..]);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        let mut head: Option<RequestHead> = None;
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                if head.is_none() {
                    if buf.is_empty() {
                        break;
                    }
                    match read_head(&buf, &BOUNDS) {
                        HeadStep::NeedMore { at_most } => {
                            assert!(buf.len() + at_most <= BOUNDS.max_header_bytes);
                            break;
                        }
                        HeadStep::Reject(r) => {
                            out.push((r.status, Vec::new()));
                            return out;
                        }
                        HeadStep::Head(h) => head = Some(h),
                    }
                }
                let h = head.as_ref().unwrap();
                match read_body(&buf, h, &BOUNDS, &mut chunks) {
                    BodyStep::NeedMore { at_least } => {
                        assert!(at_least > 0);
                        let wanted = buf.len() - h.len + at_least;
                        let bound = BOUNDS.body(h.route) + CHUNK_OVERHEAD_BYTES + 1;
                        assert!(wanted <= bound, "asks for {wanted} body bytes");
                        break;
                    }
                    BodyStep::Reject(r) => {
                        out.push((r.status, Vec::new()));
                        return out;
                    }
                    BodyStep::Complete { end, body } => {
                        let body = match body {
                            Body::InBuffer { start, end } => buf[start..end].to_vec(),
                            Body::Decoded => chunks.clone(),
                        };
                        assert!(body.len() <= BOUNDS.body(h.route));
                        out.push((0, body));
                        buf.drain(..end);
                        head = None;
                    }
                }
            }
        }
        out
    }

    fn whole(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        feed(bytes, &[])
    }

    #[test]
    fn huge_content_length_on_a_bodiless_route() {
        // Reported: this wrapped `head.len + n` and killed the shard.
        let r =
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
        assert_eq!(whole(r), vec![(413, vec![])]);
        let r = b"POST /ingest HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
        assert_eq!(whole(r), vec![(413, vec![])]);
        let r = b"GET /health HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(whole(r), vec![(400, vec![])]);
        let r = b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(whole(r), vec![(400, vec![])]);
    }

    #[test]
    fn huge_chunk_size() {
        // Reported: `out.len() + size` overflowed on 16 hex digits.
        for route in ["/ingest", "/health"] {
            let r = format!(
                "POST {route} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc"
            );
            assert_eq!(whole(r.as_bytes()), vec![(413, vec![])], "{route}");
        }
        let r = b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nfffffffffffffff0\r\n";
        assert_eq!(whole(r), vec![(413, vec![])]);
    }

    #[test]
    fn bodiless_routes_drain_a_little_then_refuse() {
        let small = format!(
            "GET /health HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}",
            "x".repeat(10)
        );
        assert_eq!(whole(small.as_bytes()), vec![(0, b"xxxxxxxxxx".to_vec())]);
        let n = BODILESS_DRAIN_BYTES + 1;
        let big = format!("GET /metrics HTTP/1.1\r\nContent-Length: {n}\r\n\r\n");
        assert_eq!(whole(big.as_bytes()), vec![(413, vec![])]);
        // Chunked: refused once the decoded body passes the drain bound,
        // before the rest arrives.
        let chunked = format!(
            "GET /nowhere HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}",
            n,
            "y".repeat(n)
        );
        assert_eq!(whole(chunked.as_bytes()), vec![(413, vec![])]);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let both =
            b"POST /ingest HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(whole(both), vec![(400, vec![])]);
        let conflicting =
            b"POST /ingest HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(whole(conflicting), vec![(400, vec![])]);
        let same_twice =
            b"POST /ingest HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(whole(same_twice), vec![(0, b"abc".to_vec())]);
        let gzip_te = b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(whole(gzip_te), vec![(501, vec![])]);
    }

    #[test]
    fn head_bound() {
        let long = format!(
            "GET /health HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(2000)
        );
        assert_eq!(whole(long.as_bytes()), vec![(431, vec![])]);
        // Never completed: refused as soon as the bound is reached.
        assert_eq!(whole(&[b'G'; 5000]), vec![(431, vec![])]);
        let unfinished = format!("GET /health HTTP/1.1\r\nX-Pad: {}", "p".repeat(2000));
        assert_eq!(whole(unfinished.as_bytes()), vec![(431, vec![])]);
    }

    #[test]
    fn pipelined_requests() {
        let r = b"POST /ingest HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\
                  POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncde\r\n0\r\n\r\n\
                  GET /health HTTP/1.1\r\n\r\n";
        let want = vec![(0, b"ab".to_vec()), (0, b"cde".to_vec()), (0, vec![])];
        assert_eq!(whole(r), want);
        for cut in 0..r.len() {
            assert_eq!(feed(r, &[cut]), want, "split at {cut}");
        }
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..64);
        (
            prop_oneof![Just("/ingest"), Just("/health"), Just("/x")],
            body,
            any::<bool>(),
        )
            .prop_map(|(path, body, chunked)| {
                let method = if path == "/ingest" { "POST" } else { "GET" };
                let mut r = format!("{method} {path} HTTP/1.1\r\nHost: h\r\n").into_bytes();
                if chunked {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for part in body.chunks(7) {
                        r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        r.extend_from_slice(part);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                } else {
                    r.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    r.extend_from_slice(&body);
                }
                r
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_overbuffer(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            feed(&bytes, &cuts);
        }

        #[test]
        fn request_like_bytes_never_panic(
            prefix in prop_oneof![
                Just(&b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
                Just(&b"GET /health HTTP/1.1\r\nContent-Length: 50\r\n\r\n"[..]),
                Just(&b"POST /ingest HTTP/1.1\r\nContent-Length: 4000\r\n\r\n"[..]),
            ],
            tail in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'f'), Just(b'\r'), Just(b'\n'), Just(b'0')], 0..400),
            cuts in proptest::collection::vec(0usize..500, 0..6),
        ) {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&tail);
            let mut cuts = cuts;
            cuts.sort_unstable();
            feed(&bytes, &cuts);
        }

        #[test]
        fn valid_requests_read_the_same_however_split(
            reqs in proptest::collection::vec(request(), 1..4),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let bytes: Vec<u8> = reqs.concat();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let once = whole(&bytes);
            prop_assert_eq!(once.len(), reqs.len());
            prop_assert!(once.iter().all(|(status, _)| *status == 0));
            prop_assert_eq!(feed(&bytes, &cuts), once);
        }
    }
}
