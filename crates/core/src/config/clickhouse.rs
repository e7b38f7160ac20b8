//! `[clickhouse]`: where the sink, the query API and the tenant registry
//! find ClickHouse: one server (`url`), or a cluster (`cluster` and its
//! `[[clickhouse.shards]]`, each with its replicas' HTTP URLs).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{millis, HttpUrl};
use super::{invalid, ConfigError};

/// ClickHouse connection (used by the sink).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickhouseConfig {
    /// HTTP interface, `http://` or `https://`.
    pub url: HttpUrl,
    pub database: String,
    /// User the engine connects as; empty = ClickHouse's `default` user
    /// without credentials.
    pub user: String,
    /// Password of `user`. Never logged; `check-config` masks it.
    pub password: String,
    /// How often the edge reloads tenants from ClickHouse, in ms.
    #[serde(with = "millis")]
    pub tenants_refresh_ms: Duration,
    /// The ClickHouse cluster (a name in `system.clusters`) the schema lives
    /// on; empty: one server, `url`. In a cluster `url` is any of its nodes
    /// (migrations, tenants and the query API go there) and the sink writes
    /// each shard's rows straight to `shards`' replicas.
    pub cluster: String,
    /// The cluster's shards, in the order of `system.clusters`' `shard_num`
    /// (the first listed is shard 1), each with the HTTP URLs of its
    /// replicas. Set with `cluster` and only with it. Not the top-level
    /// `shards` key (the edge's thread count).
    pub shards: Vec<ShardConfig>,
}

/// One shard of `[clickhouse]`'s cluster: `[[clickhouse.shards]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The HTTP interfaces of its replicas (`system.clusters` in 18.16 names
    /// hosts and native ports only, so these are listed here).
    pub replicas: Vec<HttpUrl>,
}

/// Most shards a cluster may list (a bound on the per-shard state every
/// sink keeps).
pub const MAX_CLUSTER_SHARDS: usize = 256;
/// Most replicas a shard may list.
pub const MAX_SHARD_REPLICAS: usize = 16;

impl Default for ClickhouseConfig {
    fn default() -> Self {
        Self {
            url: HttpUrl::parse("http://localhost:8123").unwrap_or_else(|_| unreachable!()),
            database: "overwatch".into(),
            user: String::new(),
            password: String::new(),
            tenants_refresh_ms: Duration::from_secs(10),
            cluster: String::new(),
            shards: Vec::new(),
        }
    }
}

impl ClickhouseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.user.is_empty() && !self.password.is_empty() {
            return Err(invalid(
                "clickhouse.password",
                "is set without clickhouse.user",
            ));
        }
        self.check_cluster()
    }

    fn check_cluster(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            if !self.shards.is_empty() {
                return Err(invalid(
                    "clickhouse.shards",
                    "is set without clickhouse.cluster (the cluster's name in system.clusters)",
                ));
            }
            return Ok(());
        }
        // It is written into DDL (`ON CLUSTER name`) unquoted.
        let name_ok = self.cluster.len() <= 64
            && self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !self.cluster.starts_with('-');
        if !name_ok {
            return Err(invalid(
                "clickhouse.cluster",
                "must be a cluster name of letters, digits, `_` and `-` (at most 64)",
            ));
        }
        if self.shards.is_empty() {
            return Err(invalid(
                "clickhouse.shards",
                "must list the cluster's shards ([[clickhouse.shards]] replicas = [URL, ...])",
            ));
        }
        if self.shards.len() > MAX_CLUSTER_SHARDS {
            return Err(invalid(
                "clickhouse.shards",
                format!(
                    "lists {} shards; at most {MAX_CLUSTER_SHARDS}",
                    self.shards.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let key = format!("clickhouse.shards[{i}].replicas");
            if shard.replicas.is_empty() {
                return Err(invalid(&key, "must list at least one replica's URL"));
            }
            if shard.replicas.len() > MAX_SHARD_REPLICAS {
                return Err(invalid(
                    &key,
                    format!(
                        "lists {} replicas; at most {MAX_SHARD_REPLICAS}",
                        shard.replicas.len()
                    ),
                ));
            }
            for url in &shard.replicas {
                if !seen.insert(url.as_str()) {
                    return Err(invalid(&key, format!("{url} is listed twice")));
                }
            }
        }
        Ok(())
    }

    /// Whether the schema lives on a cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// The cluster's name, in cluster mode.
    pub fn cluster_name(&self) -> Option<&str> {
        self.is_cluster().then_some(self.cluster.as_str())
    }

    /// `user` and `password` when a user is set.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        (!self.user.is_empty()).then_some((self.user.as_str(), self.password.as_str()))
    }

    pub(super) fn mask(&mut self) {
        if !self.password.is_empty() {
            self.password = "***".into();
        }
    }
}
