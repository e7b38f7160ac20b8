//! Typed configuration and its layering: environment `INGESTION_*` > config
//! file > built-in defaults.
//!
//! Environment names map onto keys by section: `INGESTION_PORT` is `port`,
//! `INGESTION_REDPANDA_BATCH_SIZE` is `redpanda.batch_size`, and the explicit
//! form `INGESTION_SECTION__KEY` works for every key. Values are read as TOML
//! (numbers, booleans, arrays) and fall back to strings. Unknown keys and bad
//! values are errors that name the key. This module does no I/O: the binary
//! reads the file and the environment and passes them in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod admin;
mod clients;
mod tenants;

pub use admin::{AdminConfig, AdminToken};
pub use clients::ClientsConfig;
pub use tenants::TenantConfig;

use crate::tenant::Tier;
use crate::validate::Limits;

/// Sections that environment names may address with a single `_`.
const SECTIONS: &[&str] = &[
    "http",
    "limits",
    "redpanda",
    "clickhouse",
    "sink",
    "rate_limits",
    "admin",
    "clients",
];

/// Which io driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    Uring,
    Legacy,
}

/// When `POST /ingest` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the broker acknowledged every accepted event (`acks=all`). Default.
    Broker,
    /// Opt-in: after the events were handed to the producer, before the broker
    /// acknowledged them. Faster; events in flight are lost if the process dies.
    Received,
}

/// Record compression used by the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.codec` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP edge: SDK batches into the broker.
    Ingest,
    /// The worker: broker into ClickHouse.
    Sink,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP shards listen on.
    pub host: String,
    /// Port the HTTP shards listen on.
    pub port: u16,
    /// Number of HTTP shards (threads, each pinned to a core); `0` = one per core.
    pub shards: usize,
    /// `auto`, `uring` or `legacy` (epoll).
    pub io_driver: IoDriver,
    /// What this node runs: `["ingest", "sink"]` (default), or one of them.
    pub roles: Vec<Role>,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub redpanda: RedpandaConfig,
    pub clickhouse: ClickhouseConfig,
    pub sink: SinkConfig,
    pub rate_limits: RateLimitsConfig,
    pub admin: AdminConfig,
    pub clients: ClientsConfig,
    /// Tenants defined in the file (development and small installs).
    pub tenants: Vec<TenantConfig>,
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
    pub read_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests, in ms.
    pub idle_timeout_ms: u64,
    /// Time allowed for the broker to acknowledge a batch before answering 503, in ms.
    pub request_timeout_ms: u64,
    /// Open connections per shard; more are closed at accept.
    pub max_connections_per_shard: usize,
    /// Body buffers kept for reuse per shard.
    pub body_buffer_pool: usize,
    /// Bytes of requests one shard holds at once: bodies being read (their
    /// declared size, or `max_body_bytes` for chunked ones) and the records
    /// made of them until the broker acknowledges. A request that would go
    /// past it gets `503 server_busy` before its body is read. Bounds the
    /// edge's memory under overload (README, "Overload and memory").
    pub max_buffered_bytes_per_shard: usize,
    /// `Retry-After` sent with 503 and 429, in seconds.
    pub retry_after_secs: u32,
}

/// Per-event bounds (see [`Limits`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_string_bytes: usize,
    pub max_url_bytes: usize,
    pub max_properties_bytes: usize,
    pub max_event_bytes: usize,
    pub max_future_secs: u32,
}

/// Broker and producer settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedpandaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Topic accepted events are written to.
    pub topic: String,
    /// Partitions when the engine creates the topic.
    pub partitions: i32,
    /// Replication factor when the engine creates the topic.
    pub replication_factor: i32,
    /// Most records per produce batch (librdkafka `batch.num.messages`).
    pub batch_size: u32,
    /// Most bytes per produce batch (librdkafka `batch.size`).
    pub batch_bytes: u32,
    /// Time the producer waits to fill a batch (librdkafka `linger.ms`).
    pub linger_ms: u32,
    pub compression: Compression,
    /// Records each shard may have queued for the producer thread; full = 503.
    pub ring_capacity: usize,
    /// Bound on librdkafka's own send queue, in KiB (`queue.buffering.max.kbytes`).
    pub queue_max_kbytes: u32,
    /// `broker` (default) or `received`.
    pub ack_mode: AckMode,
    /// How often broker health is probed, in ms.
    pub health_interval_ms: u64,
    /// Extra librdkafka properties (e.g. `security.protocol`), passed through.
    pub librdkafka: BTreeMap<String, String>,
}

/// ClickHouse connection (used by the sink).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickhouseConfig {
    pub url: String,
    pub database: String,
    /// How often the edge reloads tenants from ClickHouse, in ms.
    pub tenants_refresh_ms: u64,
}

/// The worker: consumer group, batching, dead letters, dedup.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Consumer group of the workers.
    pub consumer_group: String,
    /// A batch is inserted when it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or this many bytes (encoded, approximate)...
    pub batch_max_bytes: usize,
    /// ...or its oldest record waited this long, in ms.
    pub batch_max_age_ms: u64,
    /// Topic for records that cannot be decoded.
    pub dlq_topic: String,
    /// Longest wait between insert retries while ClickHouse is down, in ms.
    pub retry_backoff_max_ms: u64,
    /// Time a retried client batch (same tenant, same event ids) is recognised, in s.
    pub dedup_window_secs: u64,
    /// Most event ids remembered for dedup per worker, over all its partitions
    /// (bounds memory, ~80 B each).
    pub dedup_max_ids: usize,
    /// Timeout of one ClickHouse request, in ms.
    pub clickhouse_timeout_ms: u64,
    /// Run `migrate` when the sink starts.
    pub migrate_on_start: bool,
    /// How often expired partitions are dropped, in s (`0` disables the job).
    pub retention_interval_secs: u64,
    /// Longest time the broker may hold a fetch waiting for data, in ms
    /// (librdkafka's `fetch.wait.max.ms`). Short, because some brokers
    /// (tansu) wait it out even when data is there.
    pub fetch_wait_max_ms: u64,
}

/// Default per-tier rate limits, in events per second (`0` = unlimited).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub free_eps: u32,
    pub paid_eps: u32,
    pub enterprise_eps: u32,
    /// Burst allowance, in seconds of the rate.
    pub burst_secs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            shards: 0,
            io_driver: IoDriver::Auto,
            roles: vec![Role::Ingest, Role::Sink],
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            redpanda: RedpandaConfig::default(),
            clickhouse: ClickhouseConfig::default(),
            sink: SinkConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            admin: AdminConfig::default(),
            clients: ClientsConfig::default(),
            tenants: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_decompressed_bytes: 8 * 1024 * 1024,
            max_batch_events: 1000,
            read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 5_000,
            max_connections_per_shard: 10_000,
            body_buffer_pool: 64,
            max_buffered_bytes_per_shard: 64 * 1024 * 1024,
            retry_after_secs: 1,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_string_bytes: l.max_string_bytes,
            max_url_bytes: l.max_url_bytes,
            max_properties_bytes: l.max_properties_bytes,
            max_event_bytes: l.max_event_bytes,
            max_future_secs: l.max_future_secs,
        }
    }
}

impl Default for RedpandaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            topic: "events".into(),
            partitions: 6,
            replication_factor: 1,
            batch_size: 1000,
            batch_bytes: 1024 * 1024,
            linger_ms: 2,
            compression: Compression::Lz4,
            ring_capacity: 1024,
            queue_max_kbytes: 256 * 1024,
            ack_mode: AckMode::Broker,
            health_interval_ms: 1000,
            librdkafka: BTreeMap::new(),
        }
    }
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        Self {
            url: "http://localhost:8123".into(),
            database: "overwatch".into(),
            tenants_refresh_ms: 10_000,
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            consumer_group: "ingestion-engine-sink".into(),
            batch_max_rows: 100_000,
            batch_max_bytes: 64 << 20,
            batch_max_age_ms: 1000,
            dlq_topic: "events-dlq".into(),
            retry_backoff_max_ms: 10_000,
            dedup_window_secs: 600,
            dedup_max_ids: 2_000_000,
            clickhouse_timeout_ms: 30_000,
            migrate_on_start: true,
            retention_interval_secs: 3600,
            fetch_wait_max_ms: 50,
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            free_eps: 1_000,
            paid_eps: 50_000,
            enterprise_eps: 1_000_000,
            burst_secs: 1,
        }
    }
}

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file: {0}")]
    File(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Maps an environment name (without `INGESTION_`) to a key path.
fn env_key_path(name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    if lower.contains("__") {
        return lower.split("__").map(str::to_string).collect();
    }
    let section = SECTIONS
        .iter()
        .filter(|s| lower.starts_with(*s) && lower.as_bytes().get(s.len()) == Some(&b'_'))
        .max_by_key(|s| s.len());
    match section {
        Some(s) => vec![s.to_string(), lower[s.len() + 1..].to_string()],
        None => vec![lower],
    }
}

fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

impl Config {
    /// Layers `env` (pairs of name and value; names without the `INGESTION_`
    /// prefix are ignored) over the TOML `file` over defaults, and checks values.
    pub fn load<'e>(
        file: Option<&str>,
        env: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match file {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::File(e.to_string()))?,
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("INGESTION_") else {
                continue;
            };
            // Names the config file itself, not a key.
            if rest == "CONFIG" {
                continue;
            }
            let path = env_key_path(rest);
            let mut cur = &mut table;
            for part in &path[..path.len() - 1] {
                let entry = cur
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = match entry {
                    toml::Value::Table(t) => t,
                    _ => return Err(invalid(name, format!("`{part}` is not a section"))),
                };
            }
            let leaf = path.last().cloned().unwrap_or_default();
            // A string-typed key keeps the raw text even when it looks like a number.
            let value = if is_string_key(&path) {
                toml::Value::String(value.to_string())
            } else if path == ["roles"] && !value.trim_start().starts_with('[') {
                // `INGESTION_ROLES=ingest,sink`
                toml::Value::Array(
                    value
                        .split(',')
                        .map(|r| toml::Value::String(r.trim().to_string()))
                        .collect(),
                )
            } else {
                env_value(value)
            };
            cur.insert(leaf, value);
        }
        let merged = toml::to_string(&table).map_err(|e| ConfigError::File(e.to_string()))?;
        let config: Config = toml::from_str(&merged).map_err(|e| {
            let msg = e.message().to_string();
            let key = e
                .span()
                .map(|s| key_at(&merged, s.start))
                .unwrap_or_default();
            invalid(if key.is_empty() { "config" } else { &key }, msg)
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that types alone do not bound.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(invalid("port", "must be 1..=65535"));
        }
        if self.shards > 1024 {
            return Err(invalid("shards", "must be 0 (one per core) ..= 1024"));
        }
        let h = &self.http;
        for (key, v) in [
            ("http.max_header_bytes", h.max_header_bytes),
            ("http.max_body_bytes", h.max_body_bytes),
            ("http.max_decompressed_bytes", h.max_decompressed_bytes),
            ("http.max_batch_events", h.max_batch_events),
            (
                "http.max_connections_per_shard",
                h.max_connections_per_shard,
            ),
            ("redpanda.ring_capacity", self.redpanda.ring_capacity),
            (
                "http.max_buffered_bytes_per_shard",
                h.max_buffered_bytes_per_shard,
            ),
            ("limits.max_event_bytes", self.limits.max_event_bytes),
            ("limits.max_string_bytes", self.limits.max_string_bytes),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (key, v) in [
            ("http.read_timeout_ms", h.read_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.request_timeout_ms", h.request_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if h.max_header_bytes < 256 {
            return Err(invalid("http.max_header_bytes", "must be at least 256"));
        }
        // The largest request (a chunked body, held twice while it is read)
        // must fit, or it could never be served.
        if h.max_buffered_bytes_per_shard < 2 * h.max_body_bytes {
            return Err(invalid(
                "http.max_buffered_bytes_per_shard",
                "must be at least twice http.max_body_bytes",
            ));
        }
        let r = &self.redpanda;
        if r.brokers.trim().is_empty() {
            return Err(invalid("redpanda.brokers", "must not be empty"));
        }
        if r.topic.trim().is_empty() {
            return Err(invalid("redpanda.topic", "must not be empty"));
        }
        if r.partitions < 1 {
            return Err(invalid("redpanda.partitions", "must be at least 1"));
        }
        if r.replication_factor < 1 {
            return Err(invalid("redpanda.replication_factor", "must be at least 1"));
        }
        if self.roles.is_empty() {
            return Err(invalid("roles", "must name at least one of ingest, sink"));
        }
        let k = &self.sink;
        if k.batch_max_rows == 0 || k.batch_max_bytes == 0 || k.batch_max_age_ms == 0 {
            return Err(invalid(
                "sink.batch_max_rows",
                "batch bounds must be greater than 0",
            ));
        }
        if k.dlq_topic == r.topic {
            return Err(invalid("sink.dlq_topic", "must differ from redpanda.topic"));
        }
        if r.batch_size == 0 || r.batch_size > 1_000_000 {
            return Err(invalid("redpanda.batch_size", "must be 1..=1000000"));
        }
        if !self.clickhouse.url.starts_with("http://")
            && !self.clickhouse.url.starts_with("https://")
        {
            return Err(invalid(
                "clickhouse.url",
                "must start with http:// or https://",
            ));
        }
        self.admin.check(self.port)?;
        self.clients.check()?;
        self.tenants()?;
        Ok(())
    }

    /// Event limits for validation.
    pub fn event_limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_string_bytes: l.max_string_bytes,
            max_url_bytes: l.max_url_bytes,
            max_properties_bytes: l.max_properties_bytes,
            max_event_bytes: l.max_event_bytes,
            max_future_secs: l.max_future_secs,
        }
    }

    /// The default rate limit of a tier, events per second.
    pub fn tier_rate_limit(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Free => self.rate_limits.free_eps,
            Tier::Paid => self.rate_limits.paid_eps,
            Tier::Enterprise => self.rate_limits.enterprise_eps,
        }
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for t in &mut shown.tenants {
            t.mask();
        }
        shown.admin.mask();
        for (k, v) in shown.redpanda.librdkafka.iter_mut() {
            if ["password", "secret", "key"].iter().any(|s| k.contains(s)) {
                *v = "***".into();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

fn is_string_key(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["host"]
            | ["redpanda", "brokers"]
            | ["redpanda", "topic"]
            | ["clickhouse", "url"]
            | ["clickhouse", "database"]
            | ["sink", "consumer_group"]
            | ["sink", "dlq_topic"]
            | ["admin", "host"]
            | ["admin", "token_sha256"]
    )
}

/// The dotted key whose line holds byte `pos` of `text` (TOML as written by
/// `toml::to_string`: `[section]` headers and `key = value` lines).
fn key_at(text: &str, pos: usize) -> String {
    let mut section = String::new();
    let mut key = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
            key.clear();
        } else if let Some((k, _)) = trimmed.split_once('=') {
            key = k.trim().trim_matches('"').to_string();
        }
        offset += line.len();
        if offset > pos {
            break;
        }
    }
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 8080);
        assert_eq!(c.redpanda.brokers, "localhost:9092");
        assert_eq!(c.redpanda.batch_size, 1000);
        assert_eq!(c.clickhouse.url, "http://localhost:8123");
        assert_eq!(c.clickhouse.database, "overwatch");
    }

    #[test]
    fn env_beats_file_beats_defaults() {
        let file = "port = 9000\n[redpanda]\nbrokers = \"file:1\"\nlinger_ms = 7\n";
        let env = [
            ("INGESTION_PORT", "9100"),
            ("INGESTION_REDPANDA_BATCH_SIZE", "500"),
            ("INGESTION_CLICKHOUSE_URL", "http://ch:8123"),
            ("INGESTION_CLICKHOUSE_DATABASE", "db2"),
            ("INGESTION_HOST", "127.0.0.1"),
            ("INGESTION_HTTP__MAX_BODY_BYTES", "2048"),
            ("OTHER_PORT", "1"),
        ];
        let c = Config::load(Some(file), env).unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.redpanda.brokers, "file:1");
        assert_eq!(c.redpanda.linger_ms, 7);
        assert_eq!(c.redpanda.batch_size, 500);
        assert_eq!(c.clickhouse.url, "http://ch:8123");
        assert_eq!(c.clickhouse.database, "db2");
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.http.max_body_bytes, 2048);
        let c = Config::load(Some(file), [("INGESTION_ROLES", "sink")]).unwrap();
        assert_eq!(c.roles, vec![Role::Sink]);
        let c = Config::load(Some(file), [("INGESTION_ROLES", "ingest, sink")]).unwrap();
        assert_eq!(c.roles, vec![Role::Ingest, Role::Sink]);
        let c = Config::load(Some(file), [("INGESTION_REDPANDA_BROKERS", "a:1,b:2")]).unwrap();
        assert_eq!(c.redpanda.brokers, "a:1,b:2");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::load(Some("[redpanda]\nlingr_ms = 1\n"), []).unwrap_err();
        assert!(err.to_string().contains("lingr_ms"), "{err}");
        let err = Config::load(None, [("INGESTION_PORTT", "1")]).unwrap_err();
        assert!(err.to_string().contains("portt"), "{err}");
        let err = Config::load(None, [("INGESTION_PORT", "http")]).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = Config::load(None, [("INGESTION_PORT", "0")]).unwrap_err();
        assert_eq!(err, invalid("port", "must be 1..=65535"));
        let err = Config::load(None, [("INGESTION_IO_DRIVER", "kqueue")]).unwrap_err();
        assert!(err.to_string().contains("io_driver"), "{err}");
        let err = Config::load(None, [("INGESTION_REDPANDA_BATCH_SIZE", "-1")]).unwrap_err();
        assert!(err.to_string().contains("redpanda.batch_size"), "{err}");
        let err = Config::load(Some("port = [1"), []).unwrap_err();
        assert!(matches!(err, ConfigError::File(_)));
    }
}
