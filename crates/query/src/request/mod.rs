//! The request of `POST /api/v1/query`, in the shape of Plausible's Stats
//! API v2, and its validation into a [`Query`].
//!
//! Everything a request names is checked against a closed vocabulary
//! ([`Metric`], [`Dimension`], [`Op`]); only filter values and the timezone
//! are free text, and both are bounded here ([`MAX_VALUE_BYTES`],
//! [`MAX_PATTERN_BYTES`], a known IANA zone). Every refusal is a
//! [`QueryError`] whose message names the offending part; none carries a
//! ClickHouse error, because nothing reaches ClickHouse before this passes.
//!
//! - [`model`]: what a validated query is made of.
//! - [`limits`]: every bound, in one place.
//! - [`parse`](parse()): the wire shape, and the checks that need the whole request.
//! - [`filters`]: the filters and their values (free text).

mod filters;
mod limits;
mod model;
mod parse;
#[cfg(test)]
mod tests;

pub use limits::*;
pub use model::*;
pub use parse::parse;

use crate::QueryError;

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::Invalid(message.into())
}

/// A short, printable rendering of user input for messages.
fn shown(s: &str) -> String {
    format!("{:?}", engine_text::shown(s, 64))
}
