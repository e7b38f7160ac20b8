//! `api`: the HTTP/1.1 edge. One shard per core, each a pinned monoio runtime
//! with its own `SO_REUSEPORT` listener, io_uring where the kernel allows it.
//!
//! Life of a request (see `README.md` beside this crate for the long form):
//! [`conn`] reads bytes under deadlines and asks [`reader`] (no I/O) what they
//! are: a head ([`http::parse_head`]) whose declared body fits its route, then
//! the body (length or chunked, bounded on every route); between the two it
//! checks route, method, auth and sizes before touching the body. Then [`ingest`] decodes gzip/zstd
//! ([`body`]), parses and validates every event in place (`engine-core`),
//! encodes records, pushes them into this shard's ring to the producer thread,
//! and awaits the broker's acknowledgements before it answers.
//!
//! Start with [`shard::start`].

pub mod body;
pub mod conn;
pub mod http;
pub mod ingest;
pub mod ratelimit;
pub mod reader;
pub mod shard;
pub mod state;

pub use shard::{start, ShardsHandle};
pub use state::AppState;
