//! Where the configuration comes from. `--config` (or `INGESTION_CONFIG`)
//! names the file; without it, the first of [`SEARCH`] that exists is read,
//! so a source checkout and an installed package both find theirs from any
//! working directory. `INGESTION_*` variables override the file. The engine
//! logs which file it read, or that it read none.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use engine_core::config::Config;

/// Files tried in order when none is named: a source checkout's, relative
/// to the working directory, then the package's.
pub const SEARCH: &[&str] = &["config/default.toml", "/etc/ingestion-engine/config.toml"];

/// The file a configuration was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Named by `--config` or `INGESTION_CONFIG`.
    Named(PathBuf),
    /// Found in [`SEARCH`].
    Found(PathBuf),
    /// No file: built-in defaults and the environment.
    Defaults,
}

impl Source {
    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Named(p) | Source::Found(p) => Some(p),
            Source::Defaults => None,
        }
    }

    /// One line for the log and `check-config`.
    pub fn describe(&self) -> String {
        match self {
            Source::Named(p) => format!("{} (named)", absolute(p).display()),
            Source::Found(p) => format!("{} (found)", absolute(p).display()),
            Source::Defaults => format!(
                "none: built-in defaults and INGESTION_* environment (no --config, none of {} exists)",
                SEARCH.join(", ")
            ),
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Finds the file for `named` (see the module docs).
pub fn locate(named: Option<&Path>) -> Source {
    match named {
        Some(p) => Source::Named(p.to_path_buf()),
        None => SEARCH
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .map_or(Source::Defaults, Source::Found),
    }
}

/// Reads `source` under the process environment and checks it.
pub fn read(source: &Source) -> Result<Config> {
    let text = match source.path() {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(
        text.as_deref(),
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .with_context(|| match source.path() {
        Some(p) => format!(
            "invalid configuration ({} and INGESTION_* environment)",
            p.display()
        ),
        None => "invalid configuration (INGESTION_* environment)".to_string(),
    })
}

/// [`locate`] then [`read`].
pub fn load(named: Option<&Path>) -> Result<(Config, Source)> {
    let source = locate(named);
    let config = read(&source)?;
    Ok((config, source))
}
