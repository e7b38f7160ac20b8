//! `query`: the tenant query API. A site owner's dashboard (and any client
//! holding a tenant's secret key) asks for metrics by dimensions over a date
//! range, in the shape of Plausible's Stats API v2; this crate turns that
//! request into SQL over the tenant's rows and nothing else.
//!
//! - [`request`]: the wire model and its validation into a [`request::Query`]
//!   (closed vocabularies, bounded values, ranges, limits).
//! - [`sql`]: the query as ClickHouse SQL, the tenant taken from the key,
//!   every value an escaped literal.
//! - [`service`]: the worker threads that run it, behind [`admission`]
//!   (rate and each tenant's share of the queue) and the bounded [`cache`];
//!   [`runner`] runs one query on ClickHouse with a `query_id`, its time
//!   bound, and a kill when no answer came; [`metrics`], the service's own
//!   metrics.
//!
//! The first two steps have no I/O: pure functions, unit- and
//! property-tested on hostile input. Start with [`request::parse`], then
//! [`sql::build`].

pub mod admission;
pub mod cache;
pub mod metrics;
pub mod request;
pub mod runner;
pub mod service;
pub mod sql;

pub use request::{parse, Query};

/// Why a query is refused (400, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
}
