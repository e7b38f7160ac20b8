//! Log setup: text or JSON lines on stderr (journald reads either), with a
//! filter that `SIGHUP` can replace without restarting.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Errors setting or changing the log filter.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log filter {directives:?}: {message}")]
    Filter { directives: String, message: String },
    #[error("the log filter cannot be reloaded: {0}")]
    Reload(String),
}

/// Changes the filter of the installed subscriber.
#[derive(Debug, Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it wins over the config, now and on reload.
    from_env: bool,
}

fn parse(directives: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(directives).map_err(|e| LogError::Filter {
        directives: directives.to_string(),
        message: e.to_string(),
    })
}

/// Installs the global subscriber: `json` for one JSON object per line,
/// `level` as filter directives unless `RUST_LOG` is set. Until this runs,
/// nothing is logged; errors before it go to stderr through `main`'s result.
pub fn init(level: &str, json: bool) -> Result<LogHandle, LogError> {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = parse(env.as_deref().unwrap_or(level))?;
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only for a person at a terminal; journald stores the bytes.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, tools) keeps the first subscriber.
    let _ = if json {
        registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt).try_init()
    };
    Ok(LogHandle {
        filter: handle,
        from_env: env.is_some(),
    })
}

impl LogHandle {
    /// Replaces the filter; `Ok(false)` when `RUST_LOG` keeps it.
    pub fn set_level(&self, level: &str) -> Result<bool, LogError> {
        if self.from_env {
            return Ok(false);
        }
        let filter = parse(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| LogError::Reload(e.to_string()))?;
        Ok(true)
    }
}

/// Text logs at `info` (or `RUST_LOG`), for tools and tests.
pub fn init_default() {
    let _ = init("info", false);
}
