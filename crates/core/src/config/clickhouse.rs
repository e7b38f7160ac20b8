//! `[clickhouse]`: where the sink, the query API and the tenant registry
//! find ClickHouse.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// ClickHouse connection (used by the sink).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickhouseConfig {
    /// HTTP interface, `http://` or `https://`.
    pub url: String,
    pub database: String,
    /// User the engine connects as; empty = ClickHouse's `default` user
    /// without credentials.
    pub user: String,
    /// Password of `user`. Never logged; `check-config` masks it.
    pub password: String,
    /// How often the edge reloads tenants from ClickHouse, in ms.
    pub tenants_refresh_ms: u64,
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        Self {
            url: "http://localhost:8123".into(),
            database: "overwatch".into(),
            user: String::new(),
            password: String::new(),
            tenants_refresh_ms: 10_000,
        }
    }
}

impl ClickhouseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(invalid(
                "clickhouse.url",
                "must start with http:// or https://",
            ));
        }
        if self.user.is_empty() && !self.password.is_empty() {
            return Err(invalid(
                "clickhouse.password",
                "is set without clickhouse.user",
            ));
        }
        Ok(())
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
