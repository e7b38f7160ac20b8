//! `[tls]`: HTTPS on the edge's shards.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// HTTPS on the same shards as plain HTTP, on its own port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's certificate first.
    /// HTTPS is on when this and `key_path` are set. Read again on `SIGHUP`
    /// (renewed certificates apply to new connections; open ones keep theirs).
    pub cert_path: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// Port of the HTTPS listener, on `host`.
    pub port: u16,
    /// Keep plain HTTP on `port` beside HTTPS (`false`: HTTPS only).
    pub plain_http: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: None,
            key_path: None,
            port: 8443,
            plain_http: true,
        }
    }
}

impl TlsConfig {
    /// Whether HTTPS is on.
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some() && self.key_path.is_some()
    }

    pub(super) fn check(&self, port: u16, admin_port: u16) -> Result<(), ConfigError> {
        match (&self.cert_path, &self.key_path) {
            (Some(_), None) => return Err(invalid("tls.key_path", "is needed with tls.cert_path")),
            (None, Some(_)) => return Err(invalid("tls.cert_path", "is needed with tls.key_path")),
            _ => {}
        }
        if !self.enabled() {
            return Ok(());
        }
        if self.port == 0 {
            return Err(invalid("tls.port", "must be 1..=65535"));
        }
        if self.port == port || self.port == admin_port {
            return Err(invalid("tls.port", "must differ from port and admin.port"));
        }
        Ok(())
    }
}
