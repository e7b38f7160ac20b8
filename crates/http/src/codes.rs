//! Every `error` code the engine answers, declared once.
//!
//! An error answer is `{"status":"error","error":<code>,"message":…}`
//! ([`crate::Response::error`]); the code is one of [`ErrorCode::ALL`],
//! never a free string, so a new code cannot be answered without being
//! declared here with its statuses, its meaning and what a client should do.
//! `docs/errors.md` is generated from this table and a test (`tests/
//! error_codes.rs` of the root package) fails when the two differ.
//!
//! Invariant: a code is answered only with one of its [`ErrorCode::statuses`]
//! (checked by a `debug_assert!` where the answer is made, so the test suite
//! catches a call site that drifts).

macro_rules! codes {
    ($(
        $variant:ident = $name:literal, [$($status:literal),+],
        $meaning:literal, $action:literal;
    )*) => {
        /// A machine-readable error code (the `error` field of an answer).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the order of `docs/errors.md`.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it is answered.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The HTTP statuses it is answered with.
            pub const fn statuses(self) -> &'static [u16] {
                match self { $(ErrorCode::$variant => &[$($status),+],)* }
            }

            /// What it means, in a sentence.
            pub const fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }

            /// What the client should do about it.
            pub const fn action(self) -> &'static str {
                match self { $(ErrorCode::$variant => $action,)* }
            }
        }
    };
}

codes! {
    // Framing: the request itself (any listener); the connection closes.
    BadRequest = "bad_request", [400],
        "The request is not valid HTTP/1.1: a malformed head, a bad `Content-Length` or chunk size, or both `Content-Length` and `Transfer-Encoding`.",
        "Fix the client; do not retry the same bytes.";
    HeaderTooLarge = "header_too_large", [431],
        "The request head is larger than `http.max_header_bytes`, or has more headers than the engine reads (64).",
        "Send fewer or shorter headers.";
    ExpectationFailed = "expectation_failed", [417],
        "An `Expect` header other than `100-continue`.",
        "Drop the header.";
    NotImplemented = "not_implemented", [501],
        "A `Transfer-Encoding` other than `chunked`.",
        "Send `Content-Length` or chunked bodies.";
    RequestTimeout = "request_timeout", [408],
        "The head or body did not arrive within `http.read_timeout_ms`.",
        "Retry on a new connection; send the whole request promptly.";
    MethodNotAllowed = "method_not_allowed", [405],
        "The path exists but not for this method; the `Allow` header lists those it takes.",
        "Use a method from `Allow`.";
    NotFound = "not_found", [404],
        "No such endpoint on this listener (or this node's roles), or no such write key for a start-up document.",
        "Check the path, the port (admin surfaces are on the admin listener) and the key.";
    // Keys and origins.
    Unauthorized = "unauthorized", [401],
        "No key, a malformed key, or an unknown tenant or key.",
        "Send the tenant's key as the endpoint documents (`Authorization`, `?key=`, or the body for the Segment and PostHog paths).";
    SecretKeyRequired = "secret_key_required", [403],
        "Reading data needs the tenant's secret key (`sk_…`); a write key was sent.",
        "Use the secret key, from a server, never from a page.";
    SecretKeyInUrl = "secret_key_in_url", [401],
        "A secret key was sent in the URL, where logs and proxies keep it.",
        "Rotate that key (`ingestion-engine tenant rotate-key`) and send keys in `Authorization`.";
    SecretKeyOnPublicPath = "secret_key_on_public_path", [401],
        "A secret key was sent to a Segment or PostHog path, which pages call.",
        "Rotate that key and configure the library with the tenant's write key (`pk_…`).";
    TenantDisabled = "tenant_disabled", [403],
        "The tenant is disabled.",
        "Do not retry; an operator re-enables it with `ingestion-engine tenant enable`.";
    OriginNotAllowed = "origin_not_allowed", [403],
        "The page's `Origin` is not in the tenant's `allowed_origins`.",
        "Add the origin to the tenant, or send from an allowed page.";
    AdminTokenRequired = "admin_token_required", [401],
        "An admin endpoint (`/metrics`, `/debug/*`) without the admin token.",
        "Send `Authorization: Bearer <admin token>` (the token whose hash is `admin.token_sha256`).";
    // Bodies and batches.
    EmptyBody = "empty_body", [400],
        "The request has no body.",
        "Send the events.";
    UnsupportedMediaType = "unsupported_media_type", [415],
        "A `Content-Type` the endpoint does not read.",
        "Send `application/json` (or `text/plain` JSON, as `sendBeacon` does).";
    UnsupportedEncoding = "unsupported_encoding", [415],
        "A `Content-Encoding` (or PostHog `compression`) the engine does not decode, such as lz64.",
        "Send identity, gzip or zstd (the PostHog libraries: gzip).";
    InvalidEncoding = "invalid_encoding", [400],
        "The body does not decode with its `Content-Encoding`.",
        "Fix the compression; do not retry the same bytes.";
    BodyTooLarge = "body_too_large", [413],
        "The body, as sent or once decompressed, is larger than the route's limit (`http.max_body_bytes` for events).",
        "Send smaller batches.";
    InvalidJson = "invalid_json", [400],
        "The body is not valid JSON (or not UTF-8); the message gives the byte offset.",
        "Fix the client; do not retry the same bytes.";
    InvalidBatch = "invalid_batch", [400],
        "Valid JSON that is not a batch: no `events` array, or not the Segment or PostHog shape.",
        "Send the documented envelope.";
    EmptyBatch = "empty_batch", [400],
        "The batch holds no events.",
        "Send at least one event.";
    BatchTooLarge = "batch_too_large", [413],
        "More events in one batch than `http.max_batch_events`, or more bytes than the batch limit.",
        "Split the batch.";
    InvalidSentAt = "invalid_sent_at", [400],
        "`sent_at` is not an RFC 3339 time.",
        "Send the client's clock as RFC 3339, or leave `sent_at` out.";
    // Limits and load: retry these.
    RateLimited = "rate_limited", [429, 503],
        "The tenant is over its rate limit: events per second of its tier (`rate_limits`), or queries per second. PostHog paths answer 503, since posthog-js drops a batch answered 429.",
        "Retry after `Retry-After` seconds with the same event ids.";
    ClientRateLimited = "client_rate_limited", [429],
        "This client address sends more requests per second than `clients.max_requests_per_sec`.",
        "Slow down; retry after `Retry-After`.";
    ClientConnectionLimit = "client_connection_limit", [429],
        "This client address holds more connections than `clients.max_connections`.",
        "Reuse keep-alive connections instead of opening more.";
    ServerBusy = "server_busy", [503],
        "The shard holds as many request bytes (or the status listener as many connections) as its budget allows.",
        "Retry after `Retry-After` with the same event ids.";
    Backpressure = "backpressure", [503],
        "The ring to the broker producer is full: the engine is saturated.",
        "Retry after `Retry-After` with the same event ids.";
    ShuttingDown = "shutting_down", [503],
        "The engine is draining before it stops.",
        "Retry (another node, or this one once restarted).";
    BrokerUnavailable = "broker_unavailable", [503],
        "The broker is not reachable; nothing of the batch was accepted.",
        "Retry after `Retry-After` with the same event ids.";
    BrokerError = "broker_error", [503],
        "The broker refused the batch's records, or the producer stopped before it answered.",
        "Retry with the same event ids (they are stored once).";
    BrokerTimeout = "broker_timeout", [503],
        "The broker did not acknowledge within the request's deadline (`http.request_timeout_ms`); the outcome is unknown.",
        "Retry with the same event ids (they are stored once).";
    // The query API.
    InvalidQuery = "invalid_query", [400],
        "The query request is not valid: an unknown field, metric or filter, a bad time range.",
        "Fix the request (the message says what and where).";
    QueryTooExpensive = "query_too_expensive", [422],
        "The query exceeded its time or memory bound in ClickHouse.",
        "Narrow the time range, dimensions or filters.";
    TooManyQueries = "too_many_queries", [429],
        "The tenant has as many queries waiting or running as its share of the queue.",
        "Retry after `Retry-After`.";
    QueryBackpressure = "query_backpressure", [503],
        "The query queue of this node is full.",
        "Retry after `Retry-After`.";
    QueryTimeout = "query_timeout", [503],
        "The query did not finish within the time the engine waits for it.",
        "Retry later, or narrow the query.";
    QueryUnavailable = "query_unavailable", [503],
        "The query API is not running on this node, or is stopping.",
        "Send queries to a node with the ingest role.";
    ClickhouseUnavailable = "clickhouse_unavailable", [503],
        "ClickHouse did not answer the query.",
        "Retry after `Retry-After`.";
    AnswerTooLarge = "answer_too_large", [413],
        "The answer would be larger than the engine sends (a query's answer bound, or the shard's budget for answers).",
        "Lower `limit`, or ask for fewer groups or a shorter range.";
    Internal = "internal", [500],
        "A fault of the engine; the log line with the answer's `request_id` says what.",
        "Retry once; report it with the `request_id`.";
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_are_distinct_snake_case_and_fully_described() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            let name = c.as_str();
            assert!(seen.insert(name), "{name} declared twice");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(c.statuses().iter().all(|s| (400..600).contains(s)));
            assert!(c.meaning().ends_with('.') && c.action().ends_with('.'));
        }
    }
}
