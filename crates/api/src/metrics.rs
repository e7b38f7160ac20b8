//! The edge's metrics, declared here once and rendered by telemetry through
//! [`Collector`]: responses by status, events accepted and rejected by
//! reason, bytes and connections per shard, and the latency of each stage of
//! `POST /ingest`. Counters are per shard and padded, so shards never share a
//! cache line; exposition sums them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use telemetry::{Collector, Exposition, LocalHistograms, SharedHistograms, StatusCounts};

use crate::compat::Api;

/// Latency stages measured at the edge, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Whole `POST /ingest`: first byte of the request to response written.
    Request = 0,
    /// Decompression, envelope parse, event parse and validation.
    ParseValidate = 1,
    /// Hand-off to the producer until the broker acknowledged every record.
    BrokerAck = 2,
}

impl Stage {
    /// All stages, in slot order.
    pub const ALL: [Stage; 3] = [Stage::Request, Stage::ParseValidate, Stage::BrokerAck];

    /// The metric's name.
    pub fn metric(self) -> &'static str {
        match self {
            Stage::Request => "ingest_request_latency_seconds",
            Stage::ParseValidate => "ingest_parse_validate_latency_seconds",
            Stage::BrokerAck => "ingest_broker_ack_latency_seconds",
        }
    }
}

/// A shard's stage histograms, recorded without synchronisation.
pub type ShardHistograms = LocalHistograms<3>;

impl Stage {
    /// Records `micros` for this stage in `h`.
    pub fn record(self, h: &mut ShardHistograms, micros: u64) {
        h.record(self as usize, micros);
    }
}

/// HTTP statuses the edge answers with: always exposed, zero or not. Any
/// other status is counted too and exposed once seen.
pub const STATUSES: [u16; 17] = [
    100, 200, 400, 401, 403, 404, 405, 408, 411, 413, 415, 417, 429, 431, 500, 501, 503,
];

/// Counters of one shard.
#[derive(Debug)]
pub struct ShardCounters {
    pub responses: StatusCounts,
    pub events_accepted: AtomicU64,
    /// By rejection reason, in the reasons' index order.
    pub events_rejected: Vec<AtomicU64>,
    pub bytes_received: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub rate_limited_events: AtomicU64,
    /// Requests refused with 429 on their head: the tenant was already over
    /// its rate limit, so the body (and its events) was never read.
    pub rate_limited_requests: AtomicU64,
    /// Connections refused for their address's limit (`[clients]`).
    pub clients_refused: AtomicU64,
    /// Requests refused for their client's rate (`[clients]`).
    pub clients_rate_limited: AtomicU64,
    /// Connections and requests served unlimited: the client table was full.
    pub clients_untracked: AtomicU64,
    /// Request bytes held now (`http.max_buffered_bytes_per_shard`).
    pub buffered_bytes: AtomicI64,
    /// Requests refused because the shard's buffered bytes were at their bound.
    pub busy_refusals: AtomicU64,
    /// Rises every time the shard's event loop publishes its histograms
    /// (every 100 ms): the systemd watchdog's proof that the shard runs.
    pub heartbeats: AtomicU64,
    /// TLS handshakes completed on the HTTPS listener.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed or did not finish within `http.read_timeout_ms`.
    pub tls_handshake_failures: AtomicU64,
    /// Events the Segment and PostHog adapters delivered, by adapter and
    /// kind ([`compat_event_labels`] order).
    compat_events: Vec<AtomicU64>,
    /// Events those adapters refused, by adapter and rejection reason.
    compat_dropped: Vec<AtomicU64>,
}

/// The `(api, kind)` pairs of `ingest_compat_events_total`, in slot order.
pub fn compat_event_labels() -> Vec<(&'static str, &'static str)> {
    Api::ALL
        .iter()
        .flat_map(|a| a.kinds().iter().map(move |k| (a.name(), *k)))
        .collect()
}

/// The slot of `api`'s first kind.
fn compat_kind_base(api: Api) -> usize {
    Api::ALL
        .iter()
        .take_while(|a| **a != api)
        .map(|a| a.kinds().len())
        .sum()
}

impl ShardCounters {
    fn new(reasons: usize) -> Self {
        Self {
            responses: StatusCounts::default(),
            events_accepted: AtomicU64::new(0),
            events_rejected: (0..reasons).map(|_| AtomicU64::new(0)).collect(),
            bytes_received: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            rate_limited_events: AtomicU64::new(0),
            rate_limited_requests: AtomicU64::new(0),
            clients_refused: AtomicU64::new(0),
            clients_rate_limited: AtomicU64::new(0),
            clients_untracked: AtomicU64::new(0),
            buffered_bytes: AtomicI64::new(0),
            busy_refusals: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            tls_handshakes: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            compat_events: (0..compat_event_labels().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            compat_dropped: (0..Api::ALL.len() * reasons)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Counts `n` events of `api`'s kind `kind` delivered.
    pub fn compat_events(&self, api: Api, kind: usize, n: u64) {
        if let Some(c) = self.compat_events.get(compat_kind_base(api) + kind) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one event of `api` refused for the reason of index `reason`.
    pub fn compat_dropped(&self, api: Api, reason: usize) {
        let reasons = self.events_rejected.len();
        let slot = Api::ALL.iter().position(|a| *a == api).unwrap_or(0) * reasons + reason;
        if let Some(c) = self.compat_dropped.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one response with `status`.
    pub fn count_status(&self, status: u16) {
        self.responses.count(status);
    }
}

/// Every metric of the edge.
#[derive(Debug)]
pub struct EdgeMetrics {
    reasons: &'static [&'static str],
    shards: Vec<CachePadded<ShardCounters>>,
    /// Published stage histograms, one slot per shard.
    pub histograms: SharedHistograms<3>,
}

impl EdgeMetrics {
    /// Metrics of `shards` shards; `reasons` names the rejection reasons in
    /// their index order.
    pub fn new(shards: usize, reasons: &'static [&'static str]) -> Self {
        Self {
            reasons,
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardCounters::new(reasons.len())))
                .collect(),
            histograms: SharedHistograms::new(shards),
        }
    }

    /// The counters of shard `i`.
    pub fn shard(&self, i: usize) -> &ShardCounters {
        &self.shards[i]
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Sum of a counter over shards.
    pub fn sum(&self, f: impl Fn(&ShardCounters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Each shard's heartbeat count, in shard order.
    pub fn heartbeats(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|s| s.heartbeats.load(Ordering::Relaxed))
            .collect()
    }

    /// Total events accepted.
    pub fn events_accepted(&self) -> u64 {
        self.sum(|s| &s.events_accepted)
    }

    /// Total responses with `status`.
    pub fn responses(&self, status: u16) -> u64 {
        self.shards.iter().map(|s| s.responses.get(status)).sum()
    }

    /// A stage merged over every shard.
    pub fn merged(&self, stage: Stage) -> Histogram<u64> {
        self.histograms.merged(stage as usize)
    }
}

impl Collector for EdgeMetrics {
    fn part(&self) -> &'static str {
        "edge"
    }

    fn collect(&self, out: &mut Exposition<'_>) {
        let responses = StatusCounts::labeled(self.shards.iter().map(|s| &s.responses), &STATUSES);
        out.labeled_counter(
            "ingest_http_responses_total",
            "HTTP responses by status code.",
            "status",
            &responses,
        );
        out.counter(
            "ingest_events_accepted_total",
            "Events acknowledged by the broker.",
            self.events_accepted(),
        );
        let rejected: Vec<(&str, u64)> = (self.reasons.iter().enumerate())
            .map(|(i, r)| (*r, self.sum(|s| &s.events_rejected[i])))
            .collect();
        out.labeled_counter(
            "ingest_events_rejected_total",
            "Events rejected by validation, by reason.",
            "reason",
            &rejected,
        );
        let sum_slot = |f: fn(&ShardCounters) -> &Vec<AtomicU64>, i: usize| -> u64 {
            self.shards
                .iter()
                .map(|s| f(s).get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
                .sum()
        };
        let events: Vec<((&str, &str), u64)> = compat_event_labels()
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, sum_slot(|s| &s.compat_events, i)))
            .collect();
        out.labeled_counter2(
            "ingest_compat_events_total",
            "Events the Segment and PostHog adapters delivered to the broker, by adapter and call kind.",
            ("api", "kind"),
            &events,
        );
        let dropped: Vec<((&str, &str), u64)> = Api::ALL
            .iter()
            .enumerate()
            .flat_map(|(a, api)| {
                self.reasons
                    .iter()
                    .enumerate()
                    .map(move |(r, reason)| ((api.name(), *reason), a * self.reasons.len() + r))
            })
            .map(|(l, slot)| (l, sum_slot(|s| &s.compat_dropped, slot)))
            .collect();
        out.labeled_counter2(
            "ingest_compat_dropped_total",
            "Events the Segment and PostHog adapters refused, by adapter and reason (also in ingest_events_rejected_total).",
            ("api", "reason"),
            &dropped,
        );
        for (name, help, f) in [
            (
                "ingest_bytes_received_total",
                "Request body bytes received, as sent.",
                (|s| &s.bytes_received) as fn(&ShardCounters) -> &AtomicU64,
            ),
            ("ingest_connections_total", "Connections accepted.", |s| {
                &s.connections_total
            }),
            (
                "ingest_connections_refused_total",
                "Connections closed at accept (per-shard limit).",
                |s| &s.connections_refused,
            ),
            (
                "ingest_rate_limited_events_total",
                "Events refused with 429 (read, then over their tenant's rate limit).",
                |s| &s.rate_limited_events,
            ),
            (
                "ingest_rate_limited_requests_total",
                "Requests refused with 429 on their head, body unread: their tenant was already over its rate limit.",
                |s| &s.rate_limited_requests,
            ),
            (
                "ingest_clients_refused_connections_total",
                "Connections refused with 429: their address held its limit (clients.max_connections).",
                |s| &s.clients_refused,
            ),
            (
                "ingest_clients_rate_limited_requests_total",
                "Requests refused with 429: their client's rate (clients.max_requests_per_sec).",
                |s| &s.clients_rate_limited,
            ),
            (
                "ingest_clients_untracked_total",
                "Connections and requests served unlimited because the client table was full (clients.max_tracked).",
                |s| &s.clients_untracked,
            ),
            (
                "ingest_busy_refusals_total",
                "Requests answered 503 server_busy: their shard held http.max_buffered_bytes_per_shard of requests.",
                |s| &s.busy_refusals,
            ),
            (
                "ingest_tls_handshakes_total",
                "TLS handshakes completed on the HTTPS listener (tls.port).",
                |s| &s.tls_handshakes,
            ),
            (
                "ingest_tls_handshake_failures_total",
                "TLS handshakes that failed (not TLS, no shared version or cipher) or took longer than http.read_timeout_ms.",
                |s| &s.tls_handshake_failures,
            ),
        ] {
            out.counter(name, help, self.sum(f));
        }
        let gauge = |f: fn(&ShardCounters) -> &AtomicI64| -> i64 {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed).max(0))
                .sum()
        };
        out.gauge(
            "ingest_connections_open",
            "Open connections.",
            gauge(|s| &s.connections_open),
        );
        out.gauge(
            "ingest_buffered_bytes",
            "Bytes of request bodies and their records held by the shards now.",
            gauge(|s| &s.buffered_bytes),
        );
        for stage in Stage::ALL {
            out.latency(stage.metric(), &self.merged(stage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_reach_the_exposition() {
        let m = EdgeMetrics::new(2, &["bad", "worse"]);
        m.shard(0).count_status(200);
        m.shard(1).count_status(200);
        m.shard(1).count_status(503);
        m.shard(1).count_status(999);
        m.shard(1).events_rejected[1].fetch_add(3, Ordering::Relaxed);
        m.shard(0).events_accepted.fetch_add(5, Ordering::Relaxed);
        let mut local = ShardHistograms::new(1);
        for v in 1..=1000 {
            Stage::Request.record(&mut local, v);
        }
        assert_eq!(m.merged(Stage::Request).len(), 0);
        local.publish(&m.histograms);
        assert_eq!(m.merged(Stage::Request).len(), 1000);
        let r = telemetry::Registry::new();
        r.register(std::sync::Arc::new(m));
        let text = r.render_prometheus();
        for line in [
            "ingest_http_responses_total{status=\"200\"} 2",
            "ingest_http_responses_total{status=\"503\"} 1",
            "ingest_http_responses_total{status=\"429\"} 0",
            "ingest_http_responses_total{status=\"other\"} 1",
            "ingest_events_rejected_total{reason=\"worse\"} 3",
            "ingest_events_rejected_total{reason=\"bad\"} 0",
            "ingest_events_accepted_total 5",
            "ingest_request_latency_seconds_count 1000",
            "ingest_request_latency_hist_seconds_count 1000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let table = r.render_latency_table();
        assert!(
            table.contains("# stage: ingest_request_latency_seconds"),
            "{table}"
        );
        assert!(table.contains("Total count    =         1000"), "{table}");
    }
}
