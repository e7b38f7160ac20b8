//! `api`: the HTTP/1.1 edge. One shard per core, each a pinned monoio runtime
//! with its own `SO_REUSEPORT` listener, io_uring where the kernel allows it.
//!
//! Life of a request (see `README.md` beside this crate for the long form):
//! [`conn`] drives the request reader ([`http::reader`]: the `edge-http`
//! crate, no I/O, fuzzed alone) over the connection's buffer and knows
//! framing, keep-alive and timeouts only. The route table ([`routes`])
//! declares every path once (methods, body limit, key, CORS policy,
//! listener, handler) and runs its checks on the head, before the body is
//! touched; the body is read under the route's limit, its bytes taken in the
//! shard's budget as they arrive ([`shard::budget`]). Handlers: [`health`]
//! answers the routes every node answers (the sink-only status endpoint uses
//! it too); [`ingest`] decodes gzip/zstd ([`body`]), parses and validates
//! every event in place (`engine-core`), encodes records, pushes them into
//! this shard's ring to the producer thread, and awaits the broker's
//! acknowledgements before it answers; [`query`] hands a query to the query
//! service. Keys are checked by [`auth`], browsers get CORS from [`cors`],
//! the SDK and the dashboard's files come from [`assets`]. Each shard's own
//! state is [`shard::Shard`].
//!
//! Start with [`shard::start`].

pub mod admin;
pub mod assets;
pub mod auth;
pub mod clients;
pub mod compat;
pub mod conn;
pub mod cors;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod ratelimit;
pub mod request_log;
pub mod routes;
pub mod shard;
pub mod state;
pub mod tls;

pub use edge_http as http;
pub use edge_http::body;
pub use shard::{start, ShardsHandle};
pub use state::{AppState, Parts, Reloadable};
