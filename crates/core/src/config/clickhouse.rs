//! `[clickhouse]`: where the sink, the query API and the tenant registry
//! find ClickHouse.

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
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        Self {
            url: HttpUrl::parse("http://localhost:8123").unwrap_or_else(|_| unreachable!()),
            database: "overwatch".into(),
            user: String::new(),
            password: String::new(),
            tenants_refresh_ms: Duration::from_secs(10),
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
