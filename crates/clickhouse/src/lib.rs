//! `clickhouse-client`: everything that talks to ClickHouse.
//!
//! - [`transport::Client`]: HTTP transport (queries, `INSERT … FORMAT Native`),
//!   server exceptions surfaced with the server's own message.
//! - [`version::ServerVersion`]: what the server is and can do (TTL or not).
//! - [`native`]: the columnar `Native` block encoder for the `events` table;
//!   [`rowbinary`] reads `RowBinary` answers.
//! - [`receipts`]: the sink's insert receipts and staging tables (its
//!   exactly-once protocol's footprint in ClickHouse).
//! - [`cluster`]: cluster mode's shards and replicas, checked against the
//!   cluster.
//! - [`schema`]: database `overwatch`, its tables and materialized views, and
//!   the idempotent, versioned migrations that create and upgrade them,
//!   one migrator at a time ([`schema::lease`]).
//!
//! Start with [`schema::migrate`] and [`native::EventsBlock`].

pub mod cluster;
pub mod native;
pub mod native_decode;
pub mod nodes;
pub mod receipts;
pub mod rowbinary;
pub mod schema;
pub mod tenants;
pub mod transport;
pub mod version;

pub use transport::Client;
pub use version::ServerVersion;

/// Errors talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach ClickHouse at {url}: {message}")]
    Connection { url: String, message: String },
    /// The server answered with an exception.
    #[error("ClickHouse error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Server { code: Option<u32>, message: String },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from ClickHouse: {0}")]
    Protocol(String),
    /// `[clickhouse]`'s shards and the cluster disagree (see [`cluster`]).
    #[error("clickhouse.shards and cluster `{cluster}` disagree: {}", differences.join("; "))]
    Topology {
        cluster: String,
        differences: Vec<String>,
    },
    /// `migrate` on a cluster found a single server's database there.
    #[error(
        "database {db} on this node is a single server's (`events` is {engine}): `migrate` does not turn it \
         into cluster {cluster}'s in place; see \"Moving to a cluster\" in crates/clickhouse/README.md"
    )]
    SingleServerSchema {
        db: String,
        cluster: String,
        engine: String,
    },
    /// Asked to stop while waiting for another migrator's lease.
    #[error("stopped while waiting for another migrator")]
    Stopped,
}

impl Error {
    /// Whether retrying later may succeed (connection trouble, not a bad query).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connection { .. })
    }

    /// ClickHouse's error code, where the server answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Error::Server { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the server answered at all: a statement that got no answer
    /// may still run, or run later (a request that reached the server
    /// before the connection broke).
    pub fn answered(&self) -> bool {
        matches!(self, Error::Server { .. } | Error::Protocol(_))
    }
}
