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
mod clickhouse;
mod clients;
mod edge;
mod limits;
mod log;
mod placement;
mod producer;
mod sink;
mod tenants;
mod tls;
mod types;

pub use admin::{AdminConfig, AdminToken};
pub use clickhouse::{ClickhouseConfig, ShardConfig, MAX_CLUSTER_SHARDS, MAX_SHARD_REPLICAS};
pub use clients::ClientsConfig;
pub use edge::{HttpConfig, IoDriver};
pub use limits::{LimitsConfig, RateLimitScope, RateLimitsConfig};
pub use log::{LogConfig, LogFormat};
pub use placement::PlacementConfig;
pub use producer::{AckMode, Compression, RedpandaConfig};
pub use sink::SinkConfig;
pub use tenants::TenantConfig;
pub use tls::TlsConfig;
pub use types::{Brokers, HttpUrl};

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
    "log",
    "placement",
    "tls",
];

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
    pub log: LogConfig,
    pub placement: PlacementConfig,
    pub tls: TlsConfig,
    /// Tenants defined in the file (development and small installs).
    pub tenants: Vec<TenantConfig>,
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
            log: LogConfig::default(),
            placement: PlacementConfig::default(),
            tls: TlsConfig::default(),
            tenants: Vec::new(),
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
        .filter_map(|s| Some((*s, lower.strip_prefix(*s)?.strip_prefix('_')?)))
        .max_by_key(|(s, _)| s.len());
    match section {
        Some((s, key)) => vec![s.to_string(), key.to_string()],
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

    /// Checks values that types alone do not bound, section by section.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(invalid("port", "must be 1..=65535"));
        }
        if self.shards > 1024 {
            return Err(invalid("shards", "must be 0 (one per core) ..= 1024"));
        }
        if self.roles.is_empty() {
            return Err(invalid("roles", "must name at least one of ingest, sink"));
        }
        self.http.check()?;
        self.limits.check()?;
        self.redpanda.check()?;
        self.sink.check(&self.redpanda.topic)?;
        self.clickhouse.check()?;
        self.admin.check(self.port)?;
        self.clients.check()?;
        self.log.check()?;
        self.placement.check(self.shards)?;
        self.tls.check(self.port, self.admin.port)?;
        self.tenants()?;
        Ok(())
    }

    /// Event limits for validation.
    pub fn event_limits(&self) -> Limits {
        self.limits.event_limits()
    }

    /// The default rate limit of a tier, events per second.
    pub fn tier_rate_limit(&self, tier: Tier) -> u32 {
        self.rate_limits.for_tier(tier)
    }

    /// Dotted keys whose values differ between `self` and `other` (a whole
    /// array, such as `tenants`, counts as one key), in order.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        flatten(&key, v, out);
                    }
                }
                other => {
                    out.insert(prefix.to_string(), other.clone());
                }
            }
        }
        let table = |c: &Config| {
            let mut out = BTreeMap::new();
            if let Ok(v) = toml::Value::try_from(c) {
                flatten("", &v, &mut out);
            }
            out
        };
        let (a, b) = (table(self), table(other));
        let mut keys: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for t in &mut shown.tenants {
            t.mask();
        }
        shown.admin.mask();
        shown.clickhouse.mask();
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
            | ["clickhouse", "user"]
            | ["clickhouse", "password"]
            | ["log", "level"]
            | ["tls", "cert_path"]
            | ["tls", "key_path"]
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
        assert_eq!(c.redpanda.brokers.joined(), "localhost:9092");
        assert_eq!(c.redpanda.batch_size, 1000);
        assert_eq!(c.clickhouse.url.as_str(), "http://localhost:8123");
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
        assert_eq!(c.redpanda.brokers.joined(), "file:1");
        assert_eq!(c.redpanda.linger_ms, std::time::Duration::from_millis(7));
        assert_eq!(c.redpanda.batch_size, 500);
        assert_eq!(c.clickhouse.url.as_str(), "http://ch:8123");
        assert_eq!(c.clickhouse.database, "db2");
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.http.max_body_bytes, 2048);
        let c = Config::load(Some(file), [("INGESTION_ROLES", "sink")]).unwrap();
        assert_eq!(c.roles, vec![Role::Sink]);
        let c = Config::load(Some(file), [("INGESTION_ROLES", "ingest, sink")]).unwrap();
        assert_eq!(c.roles, vec![Role::Ingest, Role::Sink]);
        let c = Config::load(Some(file), [("INGESTION_REDPANDA_BROKERS", "a:1,b:2")]).unwrap();
        assert_eq!(c.redpanda.brokers.joined(), "a:1,b:2");
    }

    #[test]
    fn changed_keys_name_each_difference() {
        let a = Config::load(Some("[log]\nlevel = \"info\"\n"), []).unwrap();
        assert!(a.changed_keys(&a).is_empty());
        let b = Config::load(
            Some("port = 9000\n[log]\nlevel = \"debug\"\n[rate_limits]\nfree_eps = 5\n"),
            [],
        )
        .unwrap();
        assert_eq!(
            a.changed_keys(&b),
            vec!["log.level", "port", "rate_limits.free_eps"]
        );
    }

    #[test]
    fn a_cluster_lists_its_shards_and_only_with_its_name() {
        let file = "[clickhouse]\nurl = \"http://127.0.0.1:47211\"\ncluster = \"acc\"\n\
                    [[clickhouse.shards]]\nreplicas = [\"http://127.0.0.1:47211\", \"http://127.0.0.1:47212\"]\n\
                    [[clickhouse.shards]]\nreplicas = [\"http://127.0.0.1:47213\"]\n";
        let c = Config::load(Some(file), []).unwrap();
        assert!(c.clickhouse.is_cluster());
        assert_eq!(c.clickhouse.shards.len(), 2);
        assert_eq!(
            c.clickhouse.shards[0].replicas[1].as_str(),
            "http://127.0.0.1:47212"
        );
        // The same from the environment, as inline TOML.
        let c = Config::load(
            None,
            [
                ("INGESTION_CLICKHOUSE__CLUSTER", "acc"),
                (
                    "INGESTION_CLICKHOUSE__SHARDS",
                    "[{ replicas = [\"http://a:8123\", \"http://b:8123\"] }]",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.clickhouse.shards[0].replicas.len(), 2);
        for (file, key, says) in [
            (
                "[[clickhouse.shards]]\nreplicas = [\"http://a:1\"]\n",
                "clickhouse.shards",
                "without clickhouse.cluster",
            ),
            ("[clickhouse]\ncluster = \"acc\"\n", "clickhouse.shards", "must list"),
            (
                "[clickhouse]\ncluster = \"a c\"\n[[clickhouse.shards]]\nreplicas = [\"http://a:1\"]\n",
                "clickhouse.cluster",
                "letters",
            ),
            (
                "[clickhouse]\ncluster = \"acc\"\n[[clickhouse.shards]]\nreplicas = []\n",
                "clickhouse.shards[0].replicas",
                "at least one",
            ),
            (
                "[clickhouse]\ncluster = \"acc\"\n[[clickhouse.shards]]\nreplicas = [\"http://a:1\"]\n\
                 [[clickhouse.shards]]\nreplicas = [\"http://a:1\"]\n",
                "clickhouse.shards[1].replicas",
                "listed twice",
            ),
            (
                "[clickhouse]\ncluster = \"acc\"\n[[clickhouse.shards]]\nreplicas = [\"a:1\"]\n",
                "clickhouse.shards",
                "http://",
            ),
            (
                "[clickhouse]\ncluster = \"acc\"\n[[clickhouse.shards]]\nreplica = [\"http://a:1\"]\n",
                "replica",
                "unknown",
            ),
        ] {
            let err = Config::load(Some(file), []).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{file}: {err}");
        }
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
        let err = Config::load(None, [("INGESTION_REDPANDA_BROKERS", "a:1,b")]).unwrap_err();
        assert!(
            err.to_string().contains("redpanda.brokers")
                && err.to_string().contains("`b` is not host:port"),
            "{err}"
        );
        let err = Config::load(Some("[clickhouse]\nurl = \"ch:8123\"\n"), []).unwrap_err();
        assert!(err.to_string().contains("clickhouse.url"), "{err}");
        let c = Config::load(Some("[redpanda]\nbrokers = [\"a:1\", \"b:2\"]\n"), []).unwrap();
        assert_eq!(c.redpanda.brokers.joined(), "a:1,b:2");
        let err = Config::load(Some("port = [1"), []).unwrap_err();
        assert!(matches!(err, ConfigError::File(_)));
    }
}
