//! `[admin]`: where the admin surfaces (`/metrics`, `/health`, `/debug/*`,
//! the on-call page) are served, and who may read them.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{invalid, ConfigError};
use sha2::{Digest, Sha256};

use crate::tenant::parse_key_hash;

/// The admin listener and token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (with `port`).
    pub host: String,
    /// Port of a separate admin listener; `0` (the default) serves the admin
    /// surfaces on the main port, as the probes are. With a port set, the
    /// main port answers them `404`, so a public edge does not expose them;
    /// `/health/live` and `/health/ready` stay on the main port.
    pub port: u16,
    /// SHA-256 (hex) of the admin token (`ingestion-engine hash-key`); when
    /// set, `/metrics`, `/health` and `/debug/stats|latency` need
    /// `Authorization: Bearer <token>` (`401` without it), wherever they are
    /// served. Prometheus sends it with `authorization: {credentials: …}`.
    pub token_sha256: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            token_sha256: String::new(),
        }
    }
}

impl AdminConfig {
    /// Whether the admin surfaces have their own listener.
    pub fn separate(&self) -> bool {
        self.port != 0
    }

    pub(super) fn check(&self, main_port: u16) -> Result<(), ConfigError> {
        if self.separate() && self.port == main_port {
            return Err(invalid(
                "admin.port",
                "must differ from `port` (0 serves the admin surfaces on the main port)",
            ));
        }
        if !self.token_sha256.is_empty() && parse_key_hash(&self.token_sha256).is_none() {
            return Err(invalid(
                "admin.token_sha256",
                "must be 64 hex characters (see `ingestion-engine hash-key`)",
            ));
        }
        Ok(())
    }

    /// The token's hash, when a token is required.
    pub fn token(&self) -> Option<AdminToken> {
        parse_key_hash(&self.token_sha256).map(AdminToken)
    }

    pub(super) fn mask(&mut self) {
        if !self.token_sha256.is_empty() {
            self.token_sha256 = "***".into();
        }
    }
}

/// The admin token's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// Whether an `Authorization` header value (`Bearer <token>`) holds the
    /// token; compared in constant time.
    pub fn admits(&self, authorization: &[u8]) -> bool {
        let Some(token) = authorization
            .strip_prefix(b"Bearer ")
            .map(|t| t.trim_ascii())
        else {
            return false;
        };
        let Ok(token) = std::str::from_utf8(token) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_by_its_hash() {
        let c = AdminConfig {
            token_sha256: crate::tenant::hash_key_hex("adm_secret"),
            ..AdminConfig::default()
        };
        c.check(8080).unwrap();
        let t = c.token().unwrap();
        assert!(t.admits(b"Bearer adm_secret"));
        assert!(!t.admits(b"Bearer adm_secre"));
        assert!(!t.admits(b"adm_secret"));
        assert!(!t.admits(b"Bearer "));
        assert!(AdminConfig::default().token().is_none());
        let bad = AdminConfig {
            token_sha256: "zz".into(),
            ..AdminConfig::default()
        };
        assert!(bad
            .check(8080)
            .unwrap_err()
            .to_string()
            .contains("admin.token_sha256"));
        let same = AdminConfig {
            port: 8080,
            ..AdminConfig::default()
        };
        assert!(same
            .check(8080)
            .unwrap_err()
            .to_string()
            .contains("admin.port"));
    }
}
