//! `telemetry`: the primitives of the engine's metrics, their renderers, and
//! tracing setup. It declares no metric of its own.
//!
//! Each crate declares and keeps its metrics (as quickwit's ingest crate
//! does): `api` the edge's, `redpanda` the producer's, `worker` the sink's,
//! `query` the query service's. Each implements [`Collector`] and the binary
//! registers it with a [`Registry`], which renders every collector in the
//! three forms the engine serves: Prometheus text (`/metrics`), the on-call
//! page's JSON snapshot (`/debug/stats`) and the HdrHistogram percentile
//! table (`/debug/latency`). A collector writes each metric once, through
//! [`Exposition`], whatever the form.
//!
//! Primitives: labels are resolved up front (an array slot per status code,
//! per rejection reason), so the hot path is a relaxed atomic add or a
//! histogram record, never a map lookup or a lock. Latency histograms are per
//! thread: a thread records into its own [`LocalHistograms`] without
//! synchronisation and publishes into its slot of [`SharedHistograms`] a few
//! times a second; exposition merges the slots.
//!
//! Health is not read back from metrics: an owner hands the node a
//! [`HealthCheck`] handle, and readiness asks it.
//!
//! Start with [`Registry`] and [`Collector`].

mod collector;
mod health;
mod histograms;
mod latency_table;
pub mod logging;
mod prometheus;
mod registry;
mod stats;
mod status;

pub use collector::{Collector, Exposition};
pub use health::HealthCheck;
pub use histograms::{clamp_us, new_histogram, LocalHistograms, SharedHistograms, MAX_LATENCY_US};
pub use latency_table::percentile_table;
pub use prometheus::{histogram_name, BUCKET_BOUNDS_US};
pub use registry::Registry;
pub use stats::{push_json_str, stats_bounds_us, PERCENTILES};
pub use status::StatusCounts;
