//! `engine-core`: the contract of the ingestion engine, with no I/O and no threads.
//!
//! Everything the edge decides about an SDK batch is decided here, so it can be
//! unit-tested, fuzzed and benchmarked alone:
//!
//! - [`event`]: the wire shape of a batch and of each event, parsed in place with
//!   sonic-rs (strings borrow from the request buffer).
//! - [`validate`]: the rules. [`validate::validate_event`] turns a borrowed
//!   [`event::RawEvent`] into a [`record::EventRecord`] or a [`validate::Rejection`]
//!   (reason + field), allocating nothing on the success path.
//! - [`record`]: the versioned rkyv record the broker carries, encoder and decoder.
//! - [`tenant`]: tenants, tiers, write and secret keys, request authentication.
//! - [`origin`]: browser origins and a tenant's allow-list of them.
//! - [`config`]: the typed configuration and its file/environment layering.
//!
//! Start with [`validate::validate_event`]; the HTTP shards in the `api` crate call
//! [`event::parse_envelope`] then that, event by event.

pub mod config;
pub mod event;
pub mod origin;
pub mod record;
pub mod sample;
pub mod tenant;
pub mod timestamp;
pub mod validate;

pub use event::{parse_envelope, parse_event, Envelope, EventType, RawEvent};
pub use record::{decode_record, encode_record, EventRecord, RecordBatch, RECORD_VERSION};
pub use tenant::{KeyKind, Tenant, TenantRegistry, Tier};
pub use validate::{validate_event, BatchContext, Limits, Reason, Rejection};
