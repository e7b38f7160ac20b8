//! HTTP/1.1 framing: request heads (httparse), chunked bodies, responses.
//! No I/O here, so every rule is unit-tested; [`crate::reader`] puts them
//! together into the decisions about one request.

use std::fmt::Write as _;
use std::ops::Range;

/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// Request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// Known routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ingest,
    Health,
    Live,
    Ready,
    Metrics,
    DebugLatency,
    NotFound,
}

impl Route {
    fn from_path(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        match path {
            "/ingest" => Route::Ingest,
            "/health" => Route::Health,
            "/health/live" => Route::Live,
            "/health/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/debug/latency" => Route::DebugLatency,
            _ => Route::NotFound,
        }
    }

    /// The methods a route takes (for `Allow` on 405).
    pub fn allow(self) -> &'static str {
        match self {
            Route::Ingest => "POST",
            _ => "GET, HEAD",
        }
    }

    /// Whether `m` is allowed on this route.
    pub fn allows(self, m: Method) -> bool {
        match self {
            Route::Ingest => m == Method::Post,
            Route::NotFound => true,
            _ => matches!(m, Method::Get | Method::Head),
        }
    }
}

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
    Unsupported,
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// What the server needs from a request head; header values are ranges into
/// the connection buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub route: Route,
    pub http10: bool,
    pub framing: Framing,
    pub expect_continue: bool,
    pub encoding: Encoding,
    /// `Content-Type` is JSON, `text/plain` (sendBeacon) or absent.
    pub content_type_ok: bool,
    pub authorization: Option<Range<usize>>,
    /// The request target (path and query).
    pub path: Range<usize>,
    pub keep_alive: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

/// A head that cannot be served: answered, then the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub message: &'static str,
}

fn head_error<T>(status: u16, message: &'static str) -> Result<Option<T>, HeadError> {
    Err(HeadError { status, message })
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Parses a request head from the start of `buf`; `Ok(None)` means incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return head_error(431, "too many headers"),
        Err(_) => return head_error(400, "malformed HTTP request"),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let http10 = req.version == Some(0);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut expect_continue = false;
    let mut encoding = Encoding::Identity;
    let mut content_type_ok = true;
    let mut authorization = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        let v = trim(h.value);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            match (n, content_length) {
                (None, _) => return head_error(400, "invalid Content-Length"),
                (Some(n), Some(prev)) if n != prev => {
                    return head_error(400, "conflicting Content-Length headers")
                }
                (Some(n), _) => content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for part in v.split(|&b| b == b',') {
                if trim(part).eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else if !trim(part).is_empty() {
                    other_te = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if v.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return head_error(417, "only `Expect: 100-continue` is supported");
            }
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
            let mime = trim(v.split(|&b| b == b';').next().unwrap_or(v));
            content_type_ok = mime.eq_ignore_ascii_case(b"application/json")
                || mime.eq_ignore_ascii_case(b"text/plain");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(range_of(buf, v));
        } else if name.eq_ignore_ascii_case("connection") {
            for part in v.split(|&b| b == b',') {
                conn_close |= trim(part).eq_ignore_ascii_case(b"close");
                conn_keep_alive |= trim(part).eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if other_te {
        return head_error(501, "only chunked Transfer-Encoding is supported");
    }
    if chunked && content_length.is_some() {
        return head_error(400, "both Content-Length and Transfer-Encoding sent");
    }
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if http10 { conn_keep_alive } else { !conn_close };
    let target = req.path.unwrap_or("/");
    Ok(Some(RequestHead {
        path: req.path.map_or(0..0, |p| range_of(buf, p.as_bytes())),
        method,
        route: Route::from_path(target),
        http10,
        framing,
        expect_continue,
        encoding,
        content_type_ok,
        authorization,
        keep_alive,
        len,
    }))
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
    TooLarge,
}

/// Decodes a chunked body from the start of `buf` into `out`. `Ok(None)`:
/// incomplete (read more and call again; `out` is cleared first). `Ok(Some(n))`:
/// complete, `n` bytes of `buf` consumed. Decoded size is bounded by `max`.
pub fn decode_chunked(
    buf: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<Option<usize>, ChunkError> {
    out.clear();
    let mut pos = 0;
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ChunkError::Malformed),
        };
        pos += consumed;
        let size = usize::try_from(size).map_err(|_| ChunkError::TooLarge)?;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let rest = &buf[pos..];
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        // Sizes come from the client: checked, never wrapped.
        if out.len().checked_add(size).is_none_or(|total| total > max) {
            return Err(ChunkError::TooLarge);
        }
        let data_end = pos.checked_add(size).ok_or(ChunkError::TooLarge)?;
        let Some(crlf) = buf.get(data_end..data_end.saturating_add(2)) else {
            return Ok(None);
        };
        if crlf.len() < 2 {
            return Ok(None);
        }
        if crlf != b"\r\n" {
            return Err(ChunkError::Malformed);
        }
        out.extend_from_slice(&buf[pos..data_end]);
        pos = data_end + 2;
    }
}

/// Bodies of the probe routes, the same on an edge node and on a sink-only
/// node (whose status server answers them too).
pub mod probe {
    /// `GET /health/live`: the process serves.
    pub const LIVE: &str = r#"{"status":"live"}"#;
    /// `GET /health/ready` while ready.
    pub const READY: &str = r#"{"ready":true}"#;

    /// `GET /health/ready` while not ready, with a machine-readable reason.
    pub fn not_ready(reason: &str) -> String {
        format!(r#"{{"ready":false,"reason":"{reason}"}}"#)
    }
}

/// Reason phrase of a status.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// A response about to be written.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub retry_after_secs: Option<u32>,
    pub allow: Option<&'static str>,
    pub www_authenticate: bool,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
            retry_after_secs: None,
            allow: None,
            www_authenticate: status == 401,
            close: false,
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            content_type,
            ..Self::json(status, body)
        }
    }

    /// `{"status":"error","error":<code>,"message":<message>}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let mut body = Vec::with_capacity(96 + message.len());
        body.extend_from_slice(b"{\"status\":\"error\",\"error\":");
        push_json_str(&mut body, code);
        body.extend_from_slice(b",\"message\":");
        push_json_str(&mut body, message);
        body.push(b'}');
        Self::json(status, body)
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// Marks the connection for closing.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Serialises into `out` (appending). `head_only` omits the body (HEAD).
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        let mut h = String::with_capacity(192);
        let _ = write!(
            h,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(s) = self.retry_after_secs {
            let _ = write!(h, "Retry-After: {s}\r\n");
        }
        if let Some(a) = self.allow {
            let _ = write!(h, "Allow: {a}\r\n");
        }
        if self.www_authenticate {
            h.push_str("WWW-Authenticate: Bearer realm=\"ingest\"\r\n");
        }
        h.push_str(if keep_alive && !self.close {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        out.extend_from_slice(h.as_bytes());
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> RequestHead {
        parse_head(s.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn parses_an_ingest_head() {
        let raw = "POST /ingest?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 12\r\nAuthorization: Bearer t:k\r\nContent-Encoding: gzip\r\n\r\n{}";
        let h = head(raw);
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.route, Route::Ingest);
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.encoding, Encoding::Gzip);
        assert!(h.content_type_ok && h.keep_alive && !h.http10);
        assert_eq!(&raw.as_bytes()[h.authorization.unwrap()], b"Bearer t:k");
        assert_eq!(h.len, raw.len() - 2);
    }

    #[test]
    fn partial_and_errors() {
        assert_eq!(parse_head(b"POST /ingest HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(parse_head(b"\x01garbage\r\n\r\n").unwrap_err().status, 400);
        let both = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(both.as_bytes()).unwrap_err().status, 400);
        let gz = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse_head(gz.as_bytes()).unwrap_err().status, 501);
        let two = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse_head(two.as_bytes()).unwrap_err().status, 400);
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(raw.as_bytes()).unwrap_err().status, 431);
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
        assert!(!head("POST /ingest HTTP/1.1\r\nContent-Type: text/html\r\n\r\n").content_type_ok);
        assert!(
            head("POST /ingest HTTP/1.1\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\n")
                .content_type_ok
        );
        assert_eq!(head("PUT /ingest HTTP/1.1\r\n\r\n").method, Method::Other);
        assert_eq!(head("GET /nope HTTP/1.1\r\n\r\n").route, Route::NotFound);
    }

    #[test]
    fn chunked_bodies() {
        let mut out = Vec::new();
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(body, &mut out, 100),
            Ok(Some(body.len() - 4))
        );
        assert_eq!(out, b"hello world");
        for cut in 0..body.len() - 4 {
            assert_eq!(
                decode_chunked(&body[..cut], &mut out, 100),
                Ok(None),
                "cut {cut}"
            );
        }
        assert_eq!(
            decode_chunked(body, &mut out, 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_chunked(b"zz\r\n", &mut out, 10),
            Err(ChunkError::Malformed)
        );
        assert_eq!(
            decode_chunked(b"2\r\nabXY", &mut out, 10),
            Err(ChunkError::Malformed)
        );
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        Response::error(503, "unavailable", "broker \"down\"")
            .retry_after(2)
            .write_to(&mut out, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(s.contains("Retry-After: 2\r\n"));
        assert!(s.contains("Connection: keep-alive\r\n"));
        assert!(
            s.ends_with(r#"{"status":"error","error":"unavailable","message":"broker \"down\""}"#)
        );
    }
}
