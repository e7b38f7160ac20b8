//! `[log]`: what the engine logs and in which shape.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (journald, Loki, Elasticsearch).
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter directives: a level (`info`) or per-module ones
    /// (`info,api=debug`). `RUST_LOG`, when set, wins. Reloaded on SIGHUP.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty (e.g. \"info\")"));
        }
        Ok(())
    }
}
