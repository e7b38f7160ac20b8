//! Request heads: `httparse` checks the syntax; this module decides how the
//! body is framed (RFC 9112 §6) and keeps what the server needs.
//!
//! Invariants:
//! - Every range in a [`RequestHead`] lies in `buf[..len]` of the buffer the
//!   head was parsed from.
//! - A head is framed one way or refused, never guessed: `Content-Length` with
//!   `Transfer-Encoding`, two different lengths, `Transfer-Encoding` in an
//!   HTTP/1.0 request, or `chunked` not the final coding (or twice) is 400; a
//!   transfer coding other than `chunked` is 501.
//! - A declared length is digits only, read with checked arithmetic: one that
//!   does not fit a `u64` saturates to `u64::MAX` (then refused as too large
//!   by the body reader, like any length over its limit).

use crate::ErrorCode;
use std::ops::Range;

use super::{Encoding, Framing, Method, Reject};

/// Most headers in one request (431 beyond).
pub const MAX_HEADERS: usize = 64;

/// Most `X-Forwarded-For` lines of one request that are read. A request
/// with more is not read as a chain at all ([`ForwardedFor::hops_from_right`]
/// is `None`): its client is the peer. Each proxy adds at most one line, so
/// this is far more proxies than any path has.
pub const MAX_FORWARDED_FOR_LINES: usize = 8;

/// Where a request's `X-Forwarded-For` lines are, in a few bytes (no
/// allocation, and a head stays small): the span of the head from the first
/// line's value to the last line's, and how many lines there are. The lines
/// in between are found again in that span when the list is read
/// ([`ForwardedFor::hops_from_right`]); several lines are one
/// comma-separated list (RFC 9110 §5.3), the first line's elements first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardedFor {
    /// Offsets in the head's buffer: the first line's value starts at
    /// `start`, the last line's value ends at `end`.
    start: u32,
    end: u32,
    /// Lines seen, at most `MAX_FORWARDED_FOR_LINES + 1`.
    lines: u8,
    /// More than `MAX_FORWARDED_FOR_LINES` lines, or a head too large for
    /// the offsets: not read as a chain.
    unreadable: bool,
}

/// A hop that stands for a span outside the buffer given to
/// [`ForwardedFor::hops_from_right`]: not an address, so it reads as a
/// malformed hop.
const NOT_AN_ADDRESS: &[u8] = b"?";
const NAME: &[u8] = b"x-forwarded-for";

impl ForwardedFor {
    /// Counts one more line, whose value is `value` (in the head's buffer).
    fn push(&mut self, value: Range<usize>) {
        let (Ok(start), Ok(end)) = (u32::try_from(value.start), u32::try_from(value.end)) else {
            self.unreadable = true;
            return;
        };
        if self.lines == 0 {
            self.start = start;
        }
        self.end = end;
        self.lines = self.lines.saturating_add(1);
        if usize::from(self.lines) > MAX_FORWARDED_FOR_LINES {
            self.unreadable = true;
        }
    }

    /// No `X-Forwarded-For` line was sent.
    pub fn is_empty(&self) -> bool {
        self.lines == 0 && !self.unreadable
    }

    /// Lines sent (counted up to `MAX_FORWARDED_FOR_LINES + 1`).
    pub fn lines(&self) -> usize {
        usize::from(self.lines)
    }

    /// Whether the list cannot be read as a chain: more than
    /// [`MAX_FORWARDED_FOR_LINES`] lines were sent.
    pub fn unreadable(&self) -> bool {
        self.unreadable
    }

    /// The list's elements from the right (the one the nearest proxy added
    /// first), over every line as one list, each trimmed of whitespace;
    /// empty elements are skipped (RFC 9110 §5.6.1). `buf` is the buffer
    /// the head was parsed from. `None` when the list cannot be read
    /// ([`ForwardedFor::unreadable`]).
    pub fn hops_from_right<'b>(&self, buf: &'b [u8]) -> Option<Hops<'b>> {
        if self.unreadable {
            return None;
        }
        if self.lines == 0 {
            return Some(Hops {
                lines: None,
                list: None,
            });
        }
        let span = usize::try_from(self.start).ok()?..usize::try_from(self.end).ok()?;
        Some(Hops {
            lines: Some(buf.get(span).unwrap_or(NOT_AN_ADDRESS)),
            list: None,
        })
    }
}

/// The elements of an `X-Forwarded-For` list, right to left
/// ([`ForwardedFor::hops_from_right`]).
#[derive(Debug, Clone)]
pub struct Hops<'b> {
    /// What is left of the span, to the left of the line being read: it
    /// starts with the first line's value, then whole header lines.
    lines: Option<&'b [u8]>,
    /// What is left of the line being read, to the left of the hops given.
    list: Option<&'b [u8]>,
}

impl<'b> Hops<'b> {
    /// The next `X-Forwarded-For` value to the left, if any.
    fn next_value(&mut self) -> Option<&'b [u8]> {
        loop {
            let span = self.lines.take()?;
            let Some(nl) = span.iter().rposition(|&b| b == b'\n') else {
                // The first line's value (the span starts at it).
                return Some(span);
            };
            self.lines = span.get(..nl);
            // A whole header line (httparse checked its syntax): its name
            // ends at the first colon.
            let line = span.get(nl + 1..).unwrap_or_default();
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = line.split_at(colon);
            if name.eq_ignore_ascii_case(NAME) {
                return Some(value.get(1..).unwrap_or_default());
            }
        }
    }
}

impl<'b> Iterator for Hops<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        loop {
            let Some(list) = self.list.take() else {
                self.list = Some(self.next_value()?);
                continue;
            };
            let hop = match list.iter().rposition(|&b| b == b',') {
                Some(comma) => {
                    self.list = list.get(..comma);
                    list.get(comma + 1..).unwrap_or_default()
                }
                None => list,
            };
            let hop = hop.trim_ascii();
            if !hop.is_empty() {
                return Some(hop);
            }
        }
    }
}

/// What the server needs from a request head; header values are ranges into
/// the buffer the head was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The request target's path, without the query.
    pub path: Range<usize>,
    /// The query, without its `?`; `None` when there is none.
    pub query: Option<Range<usize>>,
    pub http10: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    pub encoding: Encoding,
    /// `Content-Type` is JSON, `text/plain` (sendBeacon) or absent.
    pub content_type_ok: bool,
    /// `Content-Type` is `application/x-www-form-urlencoded` (PostHog's
    /// older `data=` bodies).
    pub form: bool,
    /// The `Host` header (a start-up document names the engine by it).
    pub host: Option<Range<usize>>,
    /// `Access-Control-Request-Headers` (a CORS preflight).
    pub request_headers: Option<Range<usize>>,
    /// `X-Forwarded-Proto` (a TLS-terminating proxy says `https`).
    pub forwarded_proto: Option<Range<usize>>,
    pub authorization: Option<Range<usize>>,
    /// The `Origin` header (browsers send it on cross-origin requests).
    pub origin: Option<Range<usize>>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<Range<usize>>,
    /// Every `X-Forwarded-For` line, in order (one list; its right-most
    /// address is the one the nearest proxy added); read only from trusted
    /// proxies.
    pub forwarded: ForwardedFor,
    /// `Accept-Encoding` lists gzip.
    pub accepts_gzip: bool,
    pub keep_alive: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    // httparse hands out subslices of `buf`, so the offset is in bounds.
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn bad(message: &'static str) -> Reject {
    Reject::new(400, ErrorCode::BadRequest, message)
}

/// `1*DIGIT`, saturating at `u64::MAX`; `None` when not digits only.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .unwrap_or(u64::MAX)
    }))
}

/// Transfer codings seen across every `Transfer-Encoding` field, in order.
#[derive(Default)]
struct Codings {
    present: bool,
    chunked: usize,
    chunked_last: bool,
    other: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if part.is_empty() {
                continue;
            }
            let chunked = part.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(chunked);
            self.other |= !chunked;
            self.chunked_last = chunked;
        }
    }
}

/// Parses a request head from the start of `buf`; `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(
                431,
                ErrorCode::HeaderTooLarge,
                "too many headers",
            ))
        }
        Err(_) => return Err(bad("malformed HTTP request")),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let http10 = req.version == Some(0);
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut expect_continue = false;
    let mut encoding = Encoding::Identity;
    let mut content_type_ok = true;
    let mut form = false;
    let mut host = None;
    let mut request_headers = None;
    let mut forwarded_proto = None;
    let mut authorization = None;
    let mut origin = None;
    let mut forwarded = ForwardedFor::default();
    let mut if_none_match = None;
    let mut accepts_gzip = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        let v = h.value.trim_ascii();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (parse_length(v), content_length) {
                (None, _) => return Err(bad("invalid Content-Length")),
                (Some(n), Some(prev)) if n != prev => {
                    return Err(bad("conflicting Content-Length headers"))
                }
                (Some(n), _) => content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.add(v);
        } else if name.eq_ignore_ascii_case("expect") {
            if !v.eq_ignore_ascii_case(b"100-continue") {
                return Err(Reject::new(
                    417,
                    ErrorCode::ExpectationFailed,
                    "only `Expect: 100-continue` is supported",
                ));
            }
            // RFC 9110 §10.1.1: an HTTP/1.0 client does not wait for 100.
            expect_continue = !http10;
        } else if name.eq_ignore_ascii_case("content-encoding") {
            encoding = if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") {
                Encoding::Gzip
            } else if v.eq_ignore_ascii_case(b"zstd") {
                Encoding::Zstd
            } else if v.eq_ignore_ascii_case(b"identity") || v.is_empty() {
                Encoding::Identity
            } else {
                Encoding::Unsupported
            };
        } else if name.eq_ignore_ascii_case("content-type") {
            let mime = v.split(|&b| b == b';').next().unwrap_or(v).trim_ascii();
            content_type_ok = mime.eq_ignore_ascii_case(b"application/json")
                || mime.eq_ignore_ascii_case(b"text/plain");
            form = mime.eq_ignore_ascii_case(b"application/x-www-form-urlencoded");
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            request_headers = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            forwarded_proto = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded.push(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            accepts_gzip |= v.split(|&b| b == b',').any(|part| {
                let mut it = part.split(|&b| b == b';');
                let coding = it.next().unwrap_or_default().trim_ascii();
                // `gzip;q=0` refuses it.
                let refused = it.any(|p| {
                    let p = p.trim_ascii();
                    p.eq_ignore_ascii_case(b"q=0")
                        || p.starts_with(b"q=0.0")
                            && !p[5..].iter().any(|d| (b'1'..=b'9').contains(d))
                });
                coding.eq_ignore_ascii_case(b"gzip") && !refused
            });
        } else if name.eq_ignore_ascii_case("connection") {
            for part in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                conn_close |= part.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= part.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if codings.present {
        // RFC 9112 §6.1 and §6.3: refuse every ambiguous framing.
        if http10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding sent"));
        }
        if !codings.chunked_last || codings.chunked > 1 {
            return Err(bad("chunked must be the final transfer coding, once"));
        }
        if codings.other {
            return Err(Reject::new(
                501,
                ErrorCode::NotImplemented,
                "only chunked Transfer-Encoding is supported",
            ));
        }
        Framing::Chunked
    } else {
        match content_length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    let keep_alive = if http10 { conn_keep_alive } else { !conn_close };
    Ok(Some(RequestHead {
        method,
        path: range_of(buf, path.as_bytes()),
        query: query.map(|q| range_of(buf, q.as_bytes())),
        http10,
        framing,
        expect_continue,
        encoding,
        content_type_ok,
        form,
        host,
        request_headers,
        forwarded_proto,
        authorization,
        origin,
        if_none_match,
        forwarded,
        accepts_gzip,
        keep_alive,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> RequestHead {
        parse_head(s.as_bytes()).unwrap().unwrap()
    }

    fn status(s: &str) -> u16 {
        parse_head(s.as_bytes()).unwrap_err().status
    }

    #[test]
    fn parses_an_ingest_head() {
        let raw = "POST /ingest?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 12\r\nAuthorization: Bearer t:k\r\nContent-Encoding: gzip\r\n\r\n{}";
        let h = head(raw);
        assert_eq!(h.method, Method::Post);
        assert_eq!(&raw.as_bytes()[h.path.clone()], b"/ingest");
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.encoding, Encoding::Gzip);
        assert!(h.content_type_ok && h.keep_alive && !h.http10);
        assert_eq!(&raw.as_bytes()[h.authorization.unwrap()], b"Bearer t:k");
        assert_eq!(&raw.as_bytes()[h.query.unwrap()], b"x=1");
        assert_eq!((h.origin, h.accepts_gzip), (None, false));
        assert_eq!(h.len, raw.len() - 2);
    }

    #[test]
    fn browser_headers() {
        let raw = "OPTIONS /ingest HTTP/1.1\r\nOrigin: https://shop.example\r\nIf-None-Match: \"abc\"\r\nAccept-Encoding: br, gzip;q=0.8\r\n\r\n";
        let h = head(raw);
        assert_eq!(h.method, Method::Options);
        assert_eq!(h.query, None);
        assert_eq!(&raw.as_bytes()[h.origin.unwrap()], b"https://shop.example");
        assert_eq!(&raw.as_bytes()[h.if_none_match.unwrap()], b"\"abc\"");
        assert!(h.accepts_gzip);
        for refused in ["gzip;q=0", "gzip; q=0.000", "br", "x-gzip-not"] {
            let raw = format!("GET /sdk.js HTTP/1.1\r\nAccept-Encoding: {refused}\r\n\r\n");
            assert!(!head(&raw).accepts_gzip, "{refused}");
        }
        assert!(head("GET /sdk.js HTTP/1.1\r\nAccept-Encoding: GZIP;q=0.5\r\n\r\n").accepts_gzip);
    }

    fn hops<'b>(h: &RequestHead, raw: &'b str) -> Option<Vec<&'b str>> {
        let hops = h.forwarded.hops_from_right(raw.as_bytes())?;
        Some(hops.map(|b| std::str::from_utf8(b).unwrap()).collect())
    }

    #[test]
    fn every_forwarded_for_line_is_one_list_read_from_the_right() {
        let raw = "GET /metrics HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.1\r\nHost: a\r\nx-forwarded-for:10.0.0.2 ,, \r\nX-FORWARDED-FOR: 10.0.0.3\r\n\r\n";
        let h = head(raw);
        assert_eq!(h.forwarded.lines(), 3);
        assert!(!h.forwarded.is_empty() && !h.forwarded.unreadable());
        assert_eq!(
            hops(&h, raw).unwrap(),
            ["10.0.0.3", "10.0.0.2", "198.51.100.1", "6.6.6.6"]
        );
        // None at all, and empty lines.
        let none = "GET / HTTP/1.1\r\n\r\n";
        let h = head(none);
        assert!(h.forwarded.is_empty());
        assert_eq!(hops(&h, none).unwrap(), Vec::<&str>::new());
        let empty = "GET / HTTP/1.1\r\nX-Forwarded-For:\r\nX-Forwarded-For: , \r\n\r\n";
        let h = head(empty);
        assert!(!h.forwarded.is_empty());
        assert_eq!(hops(&h, empty).unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn too_many_forwarded_for_lines_are_not_a_chain() {
        let lines = |n: usize| -> String {
            let xff: String = (0..n)
                .map(|i| format!("X-Forwarded-For: 10.0.0.{i}\r\n"))
                .collect();
            format!("GET / HTTP/1.1\r\n{xff}\r\n")
        };
        let most = lines(MAX_FORWARDED_FOR_LINES);
        let h = head(&most);
        assert_eq!(hops(&h, &most).unwrap().len(), MAX_FORWARDED_FOR_LINES);
        assert_eq!(hops(&h, &most).unwrap()[0], "10.0.0.7");
        let over = lines(MAX_FORWARDED_FOR_LINES + 1);
        let h = head(&over);
        assert!(h.forwarded.unreadable() && !h.forwarded.is_empty());
        assert_eq!(h.forwarded.lines(), MAX_FORWARDED_FOR_LINES + 1);
        assert_eq!(hops(&h, &over), None);
    }

    #[test]
    fn forwarded_for_hops_never_index_outside_the_buffer() {
        let raw = "GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1, 10.0.0.1\r\n\r\n";
        let h = head(raw);
        // Another, shorter buffer: the line reads as one malformed hop.
        let got: Vec<&[u8]> = h.forwarded.hops_from_right(b"GET").unwrap().collect();
        assert_eq!(got, [NOT_AN_ADDRESS]);
    }

    proptest::proptest! {
        /// However the lines split the list, whatever other headers lie
        /// between them and however their names are cased, the hops are the
        /// list's non-empty elements from the right, as if it were one line.
        #[test]
        fn hops_are_the_joined_list_from_the_right(
            lines in proptest::collection::vec(
                ("[0-9a-f:., \\[\\]]{0,24}", proptest::option::of("[0-9a-f:, ]{0,12}"), proptest::bool::ANY),
                1..12,
            ),
            lf_only in proptest::bool::ANY,
        ) {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let mut raw = format!("GET / HTTP/1.1{eol}");
            for (value, other, upper) in &lines {
                if let Some(o) = other {
                    raw.push_str(&format!("X-Forwarded-Host: {o}{eol}"));
                }
                let name = if *upper { "X-FORWARDED-FOR" } else { "x-forwarded-for" };
                raw.push_str(&format!("{name}: {value}{eol}"));
            }
            raw.push_str(eol);
            let h = head(&raw);
            let joined = lines.iter().map(|(v, _, _)| v.as_str()).collect::<Vec<_>>().join(",");
            let want: Vec<&str> = joined.rsplit(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            match hops(&h, &raw) {
                Some(got) => {
                    proptest::prop_assert!(lines.len() <= MAX_FORWARDED_FOR_LINES);
                    proptest::prop_assert_eq!(got, want);
                }
                None => proptest::prop_assert!(lines.len() > MAX_FORWARDED_FOR_LINES),
            }
        }
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert_eq!(parse_head(b"POST /ingest HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(status("\x01garbage\r\n\r\n"), 400);
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        assert_eq!(status("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n"), 417);
    }

    #[test]
    fn content_length_must_be_digits_and_agree() {
        for bad in ["+5", "-1", "5, 5", "0x10", "", "1 2", "5\t5"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status(&raw), 400, "Content-Length: {bad:?}");
        }
        let two = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(status(two), 400);
        let same = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(head(same).framing, Framing::Length(3));
        let zero = "POST / HTTP/1.1\r\nContent-Length: 000\r\n\r\n";
        assert_eq!(head(zero).framing, Framing::None);
    }

    #[test]
    fn lengths_past_u64_saturate_instead_of_wrapping() {
        let max = "GET /health HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(head(max).framing, Framing::Length(u64::MAX));
        for n in [
            "18446744073709551616",
            "99999999999999999999",
            &"9".repeat(400),
        ] {
            let raw = format!("GET /health HTTP/1.1\r\nContent-Length: {n}\r\n\r\n");
            assert_eq!(head(&raw).framing, Framing::Length(u64::MAX), "{n}");
        }
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_or_refused() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(head(chunked).framing, Framing::Chunked);
        let both = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(both), 400);
        let both = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(status(both), 400);
        let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(http10), 400);
        for te in ["chunked, gzip", "chunked, chunked", "", "gzip"] {
            let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(status(&raw), 400, "Transfer-Encoding: {te:?}");
        }
        let split =
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(split), 400);
        let gz = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(status(gz), 501);
    }

    #[test]
    fn connection_semantics() {
        assert!(!head("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET /health HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(
            head("POST /ingest HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .expect_continue
        );
        assert!(
            !head("POST /ingest HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .expect_continue
        );
        assert!(!head("POST /ingest HTTP/1.1\r\nContent-Type: text/html\r\n\r\n").content_type_ok);
        assert!(
            head("POST /ingest HTTP/1.1\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\n")
                .content_type_ok
        );
        assert_eq!(head("PUT /ingest HTTP/1.1\r\n\r\n").method, Method::Other);
        let raw = "GET /nope?x HTTP/1.1\r\n\r\n";
        assert_eq!(&raw.as_bytes()[head(raw).path], b"/nope");
    }
}
