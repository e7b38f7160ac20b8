//! The request reader: bytes in, framing decisions out, no I/O.
//!
//! The caller owns the socket and one buffer per connection. It asks
//! [`Bounds::read_head`] until a head is parsed, then drives the
//! [`BodyReader`] that [`Bounds::body`] gives it until the request is done:
//!
//! ```text
//! read_head(buf)      ──▶ NeedMore(need) │ Head(head) │ Reject
//! body(&head, limit)  ──▶ Err(Reject)    (declared length over the limit)
//! advance(buf)        ──▶ NeedMore(need) │ Data(range) │ Done { body, end } │ Reject
//! ```
//!
//! Invariants (the property tests below check them on arbitrary input):
//! - `buf` starts at the request's first byte and is only appended to while
//!   one request is read; after `Done { end }` the caller removes `buf[..end]`
//!   before reading the next head (pipelined bytes stay after `end`).
//! - No input panics, and no size from the wire is added or multiplied
//!   unchecked: a length or chunk size too large for its limit is 413 before
//!   any of its bytes is buffered.
//! - A caller that reads at most [`Need::max`] bytes per `NeedMore` holds at
//!   most `max(max_head, head.len + limit + chunk_overhead)` bytes for one
//!   request, where `limit` is the route's [`BodyLimit`]: its own for a
//!   route that reads a body, `bodiless_drain` for every other route (the
//!   caller's route table decides which). `Need::max` is never 0.
//! - Decoded body bytes never exceed `limit`.
//! - The outcome (heads, body bytes, status of a rejection) does not depend
//!   on how the bytes were split across reads.
//! - A [`Reject`] is final: the caller answers it and closes the connection.
//!   Deadlines (408) are the caller's: the reader has no clock.

use crate::ErrorCode;
use std::ops::Range;

use super::{parse_head, Framing, Reject, RequestHead};

/// Most body bytes a route without a body reads (and discards) before it
/// answers; a longer body is 413. Enough for a client that sends a stray
/// small body with a probe, too little to make a probe a way to park memory.
pub const BODILESS_DRAIN_BYTES: usize = 4 * 1024;
/// Chunked framing (size lines, extensions, CRLFs, trailers) allowed on top
/// of a body's limit; more is 413. 64 KiB is 1 KiB chunks of a 1 MiB body.
pub const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer line; longer is 400.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// How many more bytes the reader wants before it can decide anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Bytes that are certainly needed (a hint for the buffer's capacity).
    pub min: usize,
    /// Most bytes the caller may read now; at least 1.
    pub max: usize,
}

/// One step of reading a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStep {
    NeedMore(Need),
    Head(RequestHead),
    Reject(Reject),
}

/// One step of reading a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStep {
    NeedMore(Need),
    /// Decoded bytes of a chunked body at `buf[range]`; valid until the
    /// caller removes the request from the buffer.
    Data(Range<usize>),
    /// The request used `buf[..end]`. A `Content-Length` body lies at
    /// `buf[body]`, in place; for a chunked body `body` is empty (its bytes
    /// came as `Data`).
    Done {
        body: Range<usize>,
        end: usize,
    },
    Reject(Reject),
}

/// The bounds one request is read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most bytes of a request head (431 beyond).
    pub max_head: usize,
    /// Most body bytes of a route that takes none ([`BODILESS_DRAIN_BYTES`]).
    pub bodiless_drain: usize,
    /// Chunked framing allowed on top ([`CHUNK_OVERHEAD_BYTES`]).
    pub chunk_overhead: usize,
}

fn too_large(message: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
    Reject::new(413, ErrorCode::BodyTooLarge, message)
}

fn malformed(message: &'static str) -> Reject {
    Reject::new(400, ErrorCode::BadRequest, message)
}

impl Bounds {
    /// Bounds with the default drain and chunk overhead.
    pub fn new(max_head: usize) -> Self {
        Self {
            max_head,
            bodiless_drain: BODILESS_DRAIN_BYTES,
            chunk_overhead: CHUNK_OVERHEAD_BYTES,
        }
    }

    /// Parses the head at the start of `buf`.
    pub fn read_head(&self, buf: &[u8]) -> HeadStep {
        // Bytes past the bound are never looked at, so the outcome does not
        // depend on how much a read happened to bring.
        let view = &buf[..buf.len().min(self.max_head)];
        match parse_head(view) {
            Ok(Some(h)) => HeadStep::Head(h),
            Ok(None) if view.len() >= self.max_head => HeadStep::Reject(Reject::new(
                431,
                ErrorCode::HeaderTooLarge,
                "request head exceeds the limit",
            )),
            Ok(None) => HeadStep::NeedMore(Need {
                min: 1,
                max: self.max_head - view.len(),
            }),
            Err(r) => HeadStep::Reject(r),
        }
    }

    /// Most body bytes a request under `limit` may carry.
    pub fn limit(&self, limit: BodyLimit) -> usize {
        match limit {
            BodyLimit::Read(n) => n,
            BodyLimit::Discard => self.bodiless_drain,
        }
    }

    /// A reader for `head`'s body under its route's `limit`; a declared
    /// length over it is refused here, before any body byte is read (or
    /// `100 Continue` sent).
    pub fn body(&self, head: &RequestHead, body_limit: BodyLimit) -> Result<BodyReader, Reject> {
        let limit = self.limit(body_limit);
        let start = head.len;
        let kind = match head.framing {
            Framing::None => Kind::Length { end: start },
            Framing::Length(n) => {
                let end = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= limit)
                    .and_then(|n| start.checked_add(n))
                    .ok_or_else(|| {
                        too_large(if body_limit.reads() {
                            format!("body of {n} bytes exceeds the limit of {limit} bytes")
                        } else {
                            format!(
                                "this endpoint takes no body (at most {limit} bytes are discarded)"
                            )
                        })
                    })?;
                Kind::Length { end }
            }
            Framing::Chunked => Kind::Chunked(Chunked {
                pos: start,
                decoded: 0,
                phase: Phase::Size,
            }),
        };
        Ok(BodyReader {
            start,
            limit,
            overhead: self.chunk_overhead,
            kind,
        })
    }
}

/// What a route does with a body: the route table's answer to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// The route reads a body of at most this many bytes (413 beyond).
    Read(usize),
    /// The route takes no body: at most [`Bounds::bodiless_drain`] bytes of
    /// one are read and discarded (413 beyond).
    Discard,
}

impl BodyLimit {
    /// Whether the route reads its body (else the caller discards it).
    pub fn reads(self) -> bool {
        matches!(self, BodyLimit::Read(_))
    }
}

/// Reads one request's body; see the module docs for the protocol.
#[derive(Debug)]
pub struct BodyReader {
    /// Where the body starts in the buffer (the head's length).
    start: usize,
    limit: usize,
    overhead: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Length { end: usize },
    Chunked(Chunked),
}

#[derive(Debug)]
struct Chunked {
    /// Next unread byte in the buffer.
    pos: usize,
    /// Data bytes handed out so far.
    decoded: usize,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Size,
    /// Data bytes of the current chunk still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
}

/// A CRLF-terminated line at the start of `rest`: `Ok(Some((line, used)))`,
/// `Ok(None)` when incomplete. A bare CR or LF, or a line over
/// [`MAX_CHUNK_LINE_BYTES`], is malformed.
fn line(rest: &[u8]) -> Result<Option<(&[u8], usize)>, Reject> {
    let window = &rest[..rest.len().min(MAX_CHUNK_LINE_BYTES + 2)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() > MAX_CHUNK_LINE_BYTES + 1 {
            Err(malformed("chunk line too long"))
        } else if window[..window.len().saturating_sub(1)].contains(&b'\r') {
            Err(malformed("bare CR in chunked framing"))
        } else {
            Ok(None)
        };
    };
    let Some(cr) = lf.checked_sub(1).filter(|&cr| rest[cr] == b'\r') else {
        return Err(malformed("bare LF in chunked framing"));
    };
    let text = &rest[..cr];
    if text.contains(&b'\r') {
        return Err(malformed("bare CR in chunked framing"));
    }
    Ok(Some((text, lf + 1)))
}

/// `chunk-size [ BWS ";" ext ]`: 1*HEXDIG, read with checked arithmetic
/// (`None`: past `u64`). RFC 9112 §7.1.
fn chunk_size(line: &[u8]) -> Result<Option<u64>, Reject> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return Err(malformed("invalid chunk size"));
    }
    Ok(line[..digits].iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    }))
}

impl BodyReader {
    /// The body's limit in decoded bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reads on from `buf` (the whole request so far, head included).
    pub fn advance(&mut self, buf: &[u8]) -> BodyStep {
        match &mut self.kind {
            Kind::Length { end } => {
                let end = *end;
                if buf.len() >= end {
                    BodyStep::Done {
                        body: self.start..end,
                        end,
                    }
                } else {
                    let n = end - buf.len();
                    BodyStep::NeedMore(Need { min: n, max: n })
                }
            }
            Kind::Chunked(c) => match c.advance(buf, self.start, self.limit, self.overhead) {
                Ok(step) => step,
                Err(r) => BodyStep::Reject(r),
            },
        }
    }
}

impl Chunked {
    fn advance(
        &mut self,
        buf: &[u8],
        start: usize,
        limit: usize,
        overhead: usize,
    ) -> Result<BodyStep, Reject> {
        // As for heads: bytes past the bound are never looked at.
        let cap = start.saturating_add(limit).saturating_add(overhead);
        let buf = &buf[..buf.len().min(cap)];
        loop {
            // Framing consumed so far: everything read that was not data.
            if self.pos - start - self.decoded > overhead {
                return Err(too_large(format!(
                    "chunked framing exceeds {overhead} bytes over the body"
                )));
            }
            let rest = &buf[self.pos..];
            match self.phase {
                Phase::Size => {
                    let Some((text, used)) = line(rest)? else {
                        return need(buf, cap, limit, 1);
                    };
                    let size = chunk_size(text)?;
                    self.pos += used;
                    let size = size
                        .and_then(|s| usize::try_from(s).ok())
                        .filter(|&s| s <= limit - self.decoded)
                        .ok_or_else(|| {
                            too_large(format!("chunked body exceeds the limit of {limit} bytes"))
                        })?;
                    self.phase = if size == 0 {
                        Phase::Trailer
                    } else {
                        Phase::Data(size)
                    };
                }
                Phase::Data(left) => {
                    if rest.is_empty() {
                        return need(buf, cap, limit, left);
                    }
                    let take = left.min(rest.len());
                    let data = self.pos..self.pos + take;
                    self.pos += take;
                    self.decoded += take;
                    self.phase = if take == left {
                        Phase::DataEnd
                    } else {
                        Phase::Data(left - take)
                    };
                    return Ok(BodyStep::Data(data));
                }
                Phase::DataEnd => {
                    if !b"\r\n".starts_with(&rest[..rest.len().min(2)]) {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    if rest.len() < 2 {
                        return need(buf, cap, limit, 2 - rest.len());
                    }
                    self.pos += 2;
                    self.phase = Phase::Size;
                }
                Phase::Trailer => {
                    let Some((text, used)) = line(rest)? else {
                        return need(buf, cap, limit, 2);
                    };
                    self.pos += used;
                    if text.is_empty() {
                        return Ok(BodyStep::Done {
                            body: start..start,
                            end: self.pos,
                        });
                    }
                }
            }
        }
    }
}

/// `NeedMore`, or 413 when the buffer already holds all the body may take
/// (`cap`: every buffered byte past the head is this body's, data or framing).
fn need(buf: &[u8], cap: usize, limit: usize, min: usize) -> Result<BodyStep, Reject> {
    let room = cap.saturating_sub(buf.len());
    if room == 0 {
        return Err(too_large(format!(
            "chunked body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(BodyStep::NeedMore(Need {
        min: min.clamp(1, room),
        max: room,
    }))
}

#[cfg(test)]
mod tests;
