//! The HTTP edge: how the shards run (`io_driver`) and the bounds of
//! `[http]` on every request and connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::millis;
use super::{invalid, ConfigError};

/// Which io driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    Uring,
    Legacy,
}

/// HTTP server bounds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request head (request line + headers), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body as sent (before decompression), in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest body after gzip/zstd decompression, in bytes; larger gets 413.
    pub max_decompressed_bytes: usize,
    /// Most events in one batch; more gets 413.
    pub max_batch_events: usize,
    /// Time allowed to receive a whole request once it started, in ms.
    #[serde(with = "millis")]
    pub read_timeout_ms: Duration,
    /// Time a keep-alive connection may sit idle between requests, in ms.
    #[serde(with = "millis")]
    pub idle_timeout_ms: Duration,
    /// Time allowed for the broker to acknowledge a batch before answering 503, in ms.
    #[serde(with = "millis")]
    pub request_timeout_ms: Duration,
    /// Open connections per shard; more are closed at accept.
    pub max_connections_per_shard: usize,
    /// Body buffers kept for reuse per shard.
    pub body_buffer_pool: usize,
    /// Bytes of requests one shard holds at once: bodies as their bytes
    /// arrive (beyond the 16 KiB read buffer every connection has), the
    /// records made of them until the broker acknowledges, and large answers
    /// while they are written. A request that would go past it gets
    /// `503 server_busy`. Bounds the edge's memory under overload
    /// (docs/reliability.md, "Overload and memory").
    pub max_buffered_bytes_per_shard: usize,
    /// Most of a shard's `max_buffered_bytes_per_shard` one client (address,
    /// or IPv6 prefix; behind a trusted proxy the client it names) may hold,
    /// so one client cannot fill a shard's budget and starve the others;
    /// past it, that client's request gets `503 server_busy`. At least twice
    /// `max_body_bytes` plus 64 KiB and `max_header_bytes` (the largest
    /// chunked request).
    pub max_buffered_bytes_per_client: usize,
    /// `Retry-After` sent with 503 and 429, in seconds.
    pub retry_after_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_decompressed_bytes: 8 * 1024 * 1024,
            max_batch_events: 1000,
            read_timeout_ms: Duration::from_secs(10),
            idle_timeout_ms: Duration::from_secs(60),
            request_timeout_ms: Duration::from_secs(5),
            max_connections_per_shard: 10_000,
            body_buffer_pool: 64,
            max_buffered_bytes_per_shard: 64 * 1024 * 1024,
            max_buffered_bytes_per_client: 16 * 1024 * 1024,
            retry_after_secs: 1,
        }
    }
}

/// Chunked framing a body may carry on top of its limit (`edge-http`'s
/// `CHUNK_OVERHEAD_BYTES`; engine-core cannot depend on it).
const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

impl HttpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("http.max_header_bytes", self.max_header_bytes),
            ("http.max_body_bytes", self.max_body_bytes),
            ("http.max_decompressed_bytes", self.max_decompressed_bytes),
            ("http.max_batch_events", self.max_batch_events),
            (
                "http.max_connections_per_shard",
                self.max_connections_per_shard,
            ),
            (
                "http.max_buffered_bytes_per_shard",
                self.max_buffered_bytes_per_shard,
            ),
            (
                "http.max_buffered_bytes_per_client",
                self.max_buffered_bytes_per_client,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (key, v) in [
            ("http.read_timeout_ms", self.read_timeout_ms),
            ("http.idle_timeout_ms", self.idle_timeout_ms),
            ("http.request_timeout_ms", self.request_timeout_ms),
        ] {
            if v.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.max_header_bytes < 256 {
            return Err(invalid("http.max_header_bytes", "must be at least 256"));
        }
        // The largest request (a chunked body, held twice while it is read)
        // must fit, or it could never be served.
        if self.max_buffered_bytes_per_shard < 2 * self.max_body_bytes {
            return Err(invalid(
                "http.max_buffered_bytes_per_shard",
                "must be at least twice http.max_body_bytes",
            ));
        }
        // The largest chunked request holds its framed bytes (the body, up
        // to 64 KiB of chunk framing, the head) and the data decoded from
        // them at once: one client's share must take it.
        let largest = self
            .max_body_bytes
            .saturating_mul(2)
            .saturating_add(CHUNK_OVERHEAD_BYTES)
            .saturating_add(self.max_header_bytes);
        if self.max_buffered_bytes_per_client < largest {
            return Err(invalid(
                "http.max_buffered_bytes_per_client",
                format!(
                    "must be at least twice http.max_body_bytes, plus 64 KiB and \
                     http.max_header_bytes ({largest}): the largest chunked request"
                ),
            ));
        }
        Ok(())
    }
}
