//! `[limits]` (bounds on each event) and `[rate_limits]` (events per second
//! per tier).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::tenant::Tier;
use crate::validate::Limits;

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

impl LimitsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("limits.max_event_bytes", self.max_event_bytes),
            ("limits.max_string_bytes", self.max_string_bytes),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The bounds as validation takes them.
    pub fn event_limits(&self) -> Limits {
        Limits {
            max_string_bytes: self.max_string_bytes,
            max_url_bytes: self.max_url_bytes,
            max_properties_bytes: self.max_properties_bytes,
            max_event_bytes: self.max_event_bytes,
            max_future_secs: self.max_future_secs,
        }
    }
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
    /// Where a tenant's limit holds: on each edge (`edge`), or over the
    /// whole fleet (`cluster`: each edge enforces limit / N, N the edges
    /// live in the node registry).
    pub scope: RateLimitScope,
}

/// Where a tenant's rate limit is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// Each edge enforces the whole limit on what it sees: N edges sharing
    /// a tenant's traffic let it through up to N times its limit.
    #[default]
    Edge,
    /// Each edge enforces its share: the limit divided by the edges that
    /// heartbeat into the node registry within its live time (rounded up;
    /// at least 1 event/s), read every 10 s.
    Cluster,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            free_eps: 1_000,
            paid_eps: 50_000,
            enterprise_eps: 1_000_000,
            burst_secs: 1,
            scope: RateLimitScope::Edge,
        }
    }
}

impl RateLimitsConfig {
    /// The default rate limit of a tier, events per second.
    pub fn for_tier(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Free => self.free_eps,
            Tier::Paid => self.paid_eps,
            Tier::Enterprise => self.enterprise_eps,
        }
    }
}
