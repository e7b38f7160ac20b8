//! `[clients]`: limits per client address at the edge, for abusive clients.
//! Off by default: behind a load balancer every connection comes from the
//! balancer, so limits need its `X-Forwarded-For`, read only from the proxies
//! listed here.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Limits per client address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Open connections one client address may hold, over all shards; `0`
    /// (the default) sets no limit. Beyond, a new connection is answered
    /// `429` and closed. Connections from a trusted proxy are not counted:
    /// they carry many clients.
    pub max_connections: u32,
    /// Requests per second one client address may send (a token bucket with
    /// a burst of one second); `0` (the default) sets no limit. Beyond:
    /// `429 client_rate_limited` with `Retry-After`. The probes
    /// (`/health/live`, `/health/ready`) are never limited.
    pub max_requests_per_sec: u32,
    /// Addresses of proxies whose `X-Forwarded-For` names the client (its
    /// right-most address that is not itself a trusted proxy). From any
    /// other peer the header is ignored: the peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Client addresses tracked at once, at most: the bound on the table's
    /// memory. When it is full, idle addresses are forgotten first; a new
    /// address that still finds no room is served unlimited (and counted in
    /// `ingest_clients_untracked_total`) rather than refused.
    pub max_tracked: usize,
    /// Leading bits of an IPv6 address that name one client (64: a `/64`,
    /// what one subscriber or host is usually given, so a client rotating
    /// through its own `/64` stays one client). IPv4 clients are counted by
    /// their whole address (`/32`). From 32 to 128.
    pub ipv6_prefix_len: u8,
}

/// Shortest `clients.ipv6_prefix_len` accepted: a shorter prefix would make
/// whole providers one client.
pub const MIN_IPV6_PREFIX_LEN: u8 = 32;

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_requests_per_sec: 0,
            trusted_proxies: Vec::new(),
            max_tracked: 65_536,
            ipv6_prefix_len: 64,
        }
    }
}

impl ClientsConfig {
    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.max_connections > 0 || self.max_requests_per_sec > 0
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.enabled() && self.max_tracked == 0 {
            return Err(invalid(
                "clients.max_tracked",
                "must be at least 1 when a client limit is set",
            ));
        }
        if !(MIN_IPV6_PREFIX_LEN..=128).contains(&self.ipv6_prefix_len) {
            return Err(invalid(
                "clients.ipv6_prefix_len",
                format!("must be from {MIN_IPV6_PREFIX_LEN} to 128"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn ipv6_prefix_len_defaults_to_a_64_and_is_bounded() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.clients.ipv6_prefix_len, 64);
        let c = Config::load(Some("[clients]\nipv6_prefix_len = 56\n"), []).unwrap();
        assert_eq!(c.clients.ipv6_prefix_len, 56);
        let env = [("INGESTION_CLIENTS__IPV6_PREFIX_LEN", "128")];
        assert_eq!(
            Config::load(None, env).unwrap().clients.ipv6_prefix_len,
            128
        );
        for bad in ["0", "31", "129"] {
            let file = format!("[clients]\nipv6_prefix_len = {bad}\n");
            let e = Config::load(Some(&file), []).unwrap_err().to_string();
            assert!(e.contains("clients.ipv6_prefix_len"), "{bad}: {e}");
        }
        // More than a u8 holds is refused too, not wrapped.
        assert!(Config::load(Some("[clients]\nipv6_prefix_len = 320\n"), []).is_err());
    }
}
