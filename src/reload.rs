//! `SIGHUP`: reads the config file again and applies what can change while
//! the engine runs: the file's tenants, the tiers' rate limits, the log
//! filter and the TLS certificate (read again even when its paths did not
//! change, as a renewal rewrites the same files). Any other change is reported as needing a restart and is not
//! applied; an invalid file changes nothing.

use std::sync::Arc;

use engine_core::config::Config;
use telemetry::logging::LogHandle;
use tracing::{error, info, warn};

use crate::config_file::{self, Source};

/// Keys (or `section.` prefixes) applied in place on reload.
const RELOADABLE: &[&str] = &[
    "tenants",
    "rate_limits.",
    "log.level",
    "tls.cert_path",
    "tls.key_path",
];

fn reloadable(key: &str) -> bool {
    RELOADABLE
        .iter()
        .any(|r| key == *r || (r.ends_with('.') && key.starts_with(r)))
}

/// Reloads `source` over `running`; returns the configuration now in force.
pub fn apply(
    running: &Config,
    source: &Source,
    log: &LogHandle,
    edge: Option<&Arc<api::AppState>>,
) -> Config {
    let mut next = match config_file::read(source) {
        Ok(c) => c,
        Err(e) => {
            error!(file = %source.describe(), error = format!("{e:#}"), "reload: invalid configuration; nothing changed");
            return running.clone();
        }
    };
    // Resolved at start, not read from the file.
    next.placement.shard_cores = running.placement.shard_cores.clone();
    let changed = running.changed_keys(&next);
    let (applied, restart): (Vec<String>, Vec<String>) =
        changed.into_iter().partition(|k| reloadable(k));
    // Tenants are validated before anything is applied.
    let tenants = match next.tenants() {
        Ok(t) => t,
        Err(e) => {
            error!(%e, "reload: invalid tenants; nothing changed");
            return running.clone();
        }
    };
    let mut in_force = running.clone();
    if applied.iter().any(|k| k == "log.level") {
        match log.set_level(&next.log.level) {
            Ok(true) => in_force.log.level = next.log.level.clone(),
            Ok(false) => warn!("reload: RUST_LOG is set and keeps the log filter"),
            Err(e) => error!(%e, "reload: log.level not applied"),
        }
    }
    if applied
        .iter()
        .any(|k| k == "tenants" || k.starts_with("rate_limits."))
    {
        in_force.tenants = next.tenants.clone();
        in_force.rate_limits = next.rate_limits.clone();
        if let Some(state) = edge {
            state.reloadable.store(Arc::new(api::Reloadable {
                file_tenants: tenants,
                rate_limits: next.rate_limits.clone(),
            }));
            if let Some(refresh) = state.tenant_refresh.get() {
                refresh.unpark();
            }
        }
    }
    // Certificates are read again on every reload: a renewal usually
    // replaces the files under the same names.
    if let Some(tls) = edge.and_then(|s| s.tls.as_ref()) {
        match tls.reload(&next.tls) {
            Ok(loaded) => {
                in_force.tls.cert_path = next.tls.cert_path.clone();
                in_force.tls.key_path = next.tls.key_path.clone();
                info!(fingerprint = %loaded.fingerprint, chain = loaded.chain, "TLS certificate reloaded");
            }
            Err(e) => error!(%e, "reload: TLS certificate not reloaded; the running one stays"),
        }
    }
    if restart.is_empty() {
        info!(file = %source.describe(), applied = ?applied, "configuration reloaded");
    } else {
        warn!(file = %source.describe(), applied = ?applied, needs_restart = ?restart,
            "configuration reloaded; some changes need a restart and are not in force");
    }
    in_force
}

#[cfg(test)]
mod tests {
    use super::reloadable;

    #[test]
    fn only_tenants_rate_limits_log_level_and_certificates_reload() {
        for k in [
            "tenants",
            "rate_limits.free_eps",
            "log.level",
            "tls.cert_path",
            "tls.key_path",
        ] {
            assert!(reloadable(k), "{k}");
        }
        for k in [
            "log.format",
            "port",
            "redpanda.brokers",
            "tenantsx",
            "http.max_body_bytes",
        ] {
            assert!(!reloadable(k), "{k}");
        }
    }
}
