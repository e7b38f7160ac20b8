//! Server version detection and the features that depend on it.

use std::fmt;

/// A ClickHouse server version, e.g. `18.16.1` or `25.3.2.39`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// Parses `SELECT version()` output.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Self {
            major,
            minor,
            patch,
        })
    }

    /// `DROP TABLE … SYNC`: from 20.10 databases are `Atomic` and a plain
    /// `DROP` returns while queries still read the table; `SYNC` waits for
    /// them, as every `DROP` did before.
    pub fn drop_suffix(&self) -> &'static str {
        if (self.major, self.minor) >= (20, 10) {
            " SYNC"
        } else {
            ""
        }
    }

    /// Table TTL (`TTL expr`) exists from 19.6.
    pub fn supports_ttl(&self) -> bool {
        (self.major, self.minor) >= (19, 6)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let old = ServerVersion::parse("18.16.1\n").unwrap();
        assert_eq!(
            old,
            ServerVersion {
                major: 18,
                minor: 16,
                patch: 1
            }
        );
        assert!(!old.supports_ttl());
        let new = ServerVersion::parse("25.3.2.39").unwrap();
        assert!(new.supports_ttl());
        assert!(new > old);
        assert_eq!(ServerVersion::parse("x"), None);
        assert_eq!(old.to_string(), "18.16.1");
    }
}
