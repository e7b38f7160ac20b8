//! `edge-http`: the edge's HTTP/1.1 without I/O: request heads ([`head`]),
//! the request reader that frames bodies ([`reader`]), bounded gzip/zstd
//! body decoding ([`body`]), and responses. It knows no route: which paths
//! exist, and each one's body limit, are the `api` crate's route table's
//! (`api::routes`), handed to the reader as a [`reader::BodyLimit`].
//!
//! Nothing here reads or writes a socket, so every rule is unit- and
//! property-tested and fuzzed alone (`fuzz/`); `api`'s shards and the
//! binary's sink-only status endpoint drive the same reader, so both get the
//! same bounds. Start with [`reader::Bounds`].

pub mod body;
pub mod codes;
pub mod head;
pub mod reader;

use std::borrow::Cow;
use std::fmt::Write as _;

pub use codes::ErrorCode;
pub use head::{parse_head, RequestHead, MAX_HEADERS};
pub use reader::{BodyLimit, BodyReader, BodyStep, Bounds, HeadStep, Need};

/// Request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other,
}

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
    Unsupported,
}

/// How the body is framed, as the head declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    /// `Content-Length`; `u64::MAX` stands for any length past it.
    Length(u64),
    Chunked,
}

/// A request that cannot be served: answered with `status`, then the
/// connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    /// Machine-readable `error` of the JSON body.
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Reject {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON error response, marked to close the connection.
    pub fn response(&self) -> Response {
        Response::error(self.status, self.code, &self.message).closing()
    }
}

/// Reason phrase of a status.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
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

/// A response's body: bytes of its own, or bytes shared with others (a
/// cached query answer served to many connections): cloning one counts a
/// reference, never copies the bytes. Reads as a `[u8]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Body(bytes::Bytes);

impl Body {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as shared [`bytes::Bytes`] (a reference, not a copy), for
    /// a writer that sends them as they are.
    pub fn shared(&self) -> bytes::Bytes {
        self.0.clone()
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Body {
    /// Takes the vector's allocation (no copy).
    fn from(v: Vec<u8>) -> Self {
        Self(bytes::Bytes::from(v))
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Self {
        Self(bytes::Bytes::from_static(b))
    }
}

impl From<bytes::Bytes> for Body {
    fn from(b: bytes::Bytes) -> Self {
        Self(b)
    }
}

impl PartialEq<[u8]> for Body {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for Body {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Body {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Body {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for Body {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// A response about to be written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Shared, not copied, when it came from a cache ([`Body`]).
    pub body: Body,
    pub retry_after_secs: Option<u32>,
    pub allow: Option<&'static str>,
    pub www_authenticate: bool,
    /// Further header lines (CORS, caching, encoding), written as given.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// Close the connection after this response.
    pub close: bool,
}

/// How every body made by [`Response::error`] starts (and a batch's
/// rejection, which has the same shape).
const ERROR_BODY_START: &[u8] = b"{\"status\":\"error\",";
/// Longest `message` of an error body, in bytes (before JSON escaping); a
/// longer one is cut on a character boundary and ends with `…`.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

impl Response {
    /// A JSON response (`body`: a `Vec<u8>`, static bytes, or shared
    /// [`bytes::Bytes`], none of them copied).
    pub fn json(status: u16, body: impl Into<Body>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
            retry_after_secs: None,
            allow: None,
            www_authenticate: status == 401,
            headers: Vec::new(),
            close: false,
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: impl Into<Body>) -> Self {
        Self {
            content_type,
            ..Self::json(status, body)
        }
    }

    /// `{"status":"error","error":<code>,"message":<message>}`; `status`
    /// is one of the code's ([`ErrorCode::statuses`]).
    pub fn error(status: u16, code: ErrorCode, message: &str) -> Self {
        debug_assert!(
            code.statuses().contains(&status),
            "{} is not answered with {status} (codes.rs)",
            code.as_str()
        );
        // Messages may quote the client's input: bounded here, once, on a
        // character boundary (engine-text), whoever built them.
        let message = engine_text::shown(message, MAX_ERROR_MESSAGE_BYTES);
        let mut body = Vec::with_capacity(96 + message.len());
        body.extend_from_slice(b"{\"status\":\"error\",\"error\":");
        push_json_str(&mut body, code.as_str());
        body.extend_from_slice(b",\"message\":");
        push_json_str(&mut body, &message);
        body.push(b'}');
        Self::json(status, body)
    }

    /// Whether the body was made by [`Response::error`].
    pub fn is_error(&self) -> bool {
        self.body.starts_with(ERROR_BODY_START)
    }

    /// Names the request: an `X-Request-Id` header, and in a body made by
    /// [`Response::error`] a `request_id` field, so a client's report and
    /// the engine's log line meet. `id` must need no JSON escaping.
    pub fn with_request_id(mut self, id: String) -> Self {
        if self.is_error() {
            let field = format!("\"request_id\":\"{id}\",");
            // `{` + the field + the rest (an error body is small and owned).
            let mut body = Vec::with_capacity(self.body.len() + field.len());
            body.extend_from_slice(b"{");
            body.extend_from_slice(field.as_bytes());
            body.extend_from_slice(self.body.get(1..).unwrap_or_default());
            self.body = body.into();
        }
        self.headers.push(("X-Request-Id", Cow::Owned(id)));
        self
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// An empty response (`204`, `304`).
    pub fn empty(status: u16) -> Self {
        Self::text(status, "text/plain", Vec::new())
    }

    /// Adds a header line.
    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks the connection for closing.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Serialises into `out` (appending). `head_only` omits the body (HEAD).
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        self.write_head_to(out, keep_alive);
        if let Some(body) = self.body_to_send(head_only) {
            out.extend_from_slice(body);
        }
    }

    /// The body bytes that follow the head on the wire: none for HEAD, 204
    /// and 304. A writer that sends the head ([`Response::write_head_to`])
    /// and then [`Body::shared`] of this body sends a cached body without
    /// copying it.
    pub fn body_to_send(&self, head_only: bool) -> Option<&Body> {
        let bodiless = matches!(self.status, 204 | 304);
        (!head_only && !bodiless).then_some(&self.body)
    }

    /// Serialises the status line and headers, up to and including the blank
    /// line, into `out` (appending); the body is [`Response::body_to_send`].
    pub fn write_head_to(&self, out: &mut Vec<u8>, keep_alive: bool) {
        let mut h = String::with_capacity(192);
        let _ = write!(
            h,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        // RFC 9110 §8.6: no Content-Length on 204; a 304 has no body.
        let bodiless = matches!(self.status, 204 | 304);
        if !bodiless {
            let _ = write!(
                h,
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        for (name, value) in &self.headers {
            let _ = write!(h, "{name}: {value}\r\n");
        }
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
mod request_id_tests {
    use super::Response;

    #[test]
    fn an_error_names_its_request_in_header_and_body() {
        let r = Response::error(503, crate::ErrorCode::BrokerUnavailable, "x")
            .with_request_id("ab-1-7".into());
        let body = String::from_utf8(r.body.to_vec()).unwrap();
        assert_eq!(
            body,
            r#"{"request_id":"ab-1-7","status":"error","error":"broker_unavailable","message":"x"}"#
        );
        let mut out = Vec::new();
        r.write_to(&mut out, true, false);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("X-Request-Id: ab-1-7\r\n"));
        // Another body keeps its bytes.
        let r = Response::json(200, b"{}".to_vec()).with_request_id("ab-1-8".into());
        assert_eq!(r.body, b"{}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_body_is_served_without_a_copy() {
        let cached = bytes::Bytes::from(br#"{"results":[]}"#.to_vec());
        let a = Response::json(200, cached.clone());
        let b = a.clone();
        // Every response made of the cached bytes points at them.
        for r in [&a, &b] {
            assert_eq!(r.body.shared().as_ptr(), cached.as_ptr());
            assert_eq!(r.body, br#"{"results":[]}"#);
        }
        // The head, then the body as it is: the same bytes as `write_to`.
        let mut whole = Vec::new();
        a.write_to(&mut whole, true, false);
        let mut parts = Vec::new();
        a.write_head_to(&mut parts, true);
        parts.extend_from_slice(a.body_to_send(false).unwrap());
        assert_eq!(whole, parts);
        assert!(a.body_to_send(true).is_none());
        assert!(Response::empty(304).body_to_send(false).is_none());
        let mut head = Vec::new();
        a.write_to(&mut head, true, true);
        assert!(String::from_utf8(head)
            .unwrap()
            .ends_with("Content-Length: 14\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        Response::error(503, crate::ErrorCode::BrokerUnavailable, "broker \"down\"")
            .retry_after(2)
            .write_to(&mut out, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(s.contains("Retry-After: 2\r\n"));
        assert!(s.contains("Connection: keep-alive\r\n"));
        assert!(s.ends_with(
            r#"{"status":"error","error":"broker_unavailable","message":"broker \"down\""}"#
        ));
        let mut out = Vec::new();
        Reject::new(413, ErrorCode::BodyTooLarge, "too big")
            .response()
            .write_to(&mut out, true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 413 Payload Too Large\r\n"));
        assert!(s.contains("Connection: close\r\n"), "{s}");
        let mut out = Vec::new();
        Response::empty(204)
            .header("Vary", "Origin")
            .write_to(&mut out, true, false);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 204 No Content\r\nVary: Origin\r\nConnection: keep-alive\r\n\r\n"
        );
    }
}
