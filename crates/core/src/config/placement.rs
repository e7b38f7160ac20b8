//! `[placement]`: which cores the engine's threads run on. `tuning/README.md`
//! ("Cores") says how to choose them.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Core ids, as numbered by the kernel (`lscpu`, `/proc/cpuinfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Cores of the shards, shard `i` on `shard_cores[i % len]`. Empty (the
    /// default): the cores this process may run on, in order.
    pub shard_cores: Vec<usize>,
    /// Cores the other threads may run on: the producer, the sink, the query
    /// workers, the broker probe (librdkafka's own threads inherit the
    /// producer's). Empty (the default): wherever the kernel puts them.
    pub service_cores: Vec<usize>,
}

/// Core ids must be below this: the size of the kernel's `cpu_set_t`
/// (`CPU_SETSIZE`).
const MAX_CORE_ID: usize = 1024;

impl PlacementConfig {
    pub(super) fn check(&self, shards: usize) -> Result<(), ConfigError> {
        for (key, cores) in [
            ("placement.shard_cores", &self.shard_cores),
            ("placement.service_cores", &self.service_cores),
        ] {
            if let Some(c) = cores.iter().find(|&&c| c >= MAX_CORE_ID) {
                return Err(invalid(key, format!("core {c} is not a core id")));
            }
        }
        if shards > 0 && self.shard_cores.len() > shards {
            return Err(invalid(
                "placement.shard_cores",
                format!("names {} cores for {shards} shards", self.shard_cores.len()),
            ));
        }
        Ok(())
    }
}
