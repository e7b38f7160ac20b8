//! Browser origins and a tenant's allow-list of them.
//!
//! A rule is an exact origin (`https://shop.example`, `http://localhost:3000`)
//! or a wildcard over subdomains (`https://*.shop.example`, which matches
//! `https://a.shop.example` and `https://a.b.shop.example` but not
//! `https://shop.example` itself: list that too). Scheme, host and port must
//! all match; hosts compare case-insensitively. An empty allow-list allows
//! every origin (development); the opaque origin `null` (sandboxed frames,
//! `file:` pages) matches no rule.

use std::fmt;

/// Longest origin accepted, in bytes (scheme, host and port).
pub const MAX_ORIGIN_BYTES: usize = 256;

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin:?} is not an origin rule: {why} (expected scheme://host[:port], host may start with `*.`)")]
pub struct OriginError {
    pub origin: String,
    pub why: &'static str,
}

/// One allowed origin or wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: String,
    /// Lowercase host; for a wildcard, the suffix after `*.`.
    host: String,
    port: Option<u16>,
    wildcard: bool,
}

/// The parts of an origin: scheme, lowercase host, port.
type Parts<'a> = (&'a str, String, Option<u16>);

fn split_origin(s: &str) -> Result<Parts<'_>, &'static str> {
    if s.len() > MAX_ORIGIN_BYTES {
        return Err("too long");
    }
    let (scheme, rest) = s.split_once("://").ok_or("no scheme")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Err("bad scheme");
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query, fragment or user");
    }
    // An IPv6 host is bracketed; its colons are not the port's.
    let host_end = if rest.starts_with('[') {
        rest.find(']').ok_or("bad host")? + 1
    } else {
        rest.find(':').unwrap_or(rest.len())
    };
    // `host_end` follows an ASCII byte, but a checked split costs nothing.
    let (host, after) = rest.split_at_checked(host_end).ok_or("bad host")?;
    let port = match after {
        "" => None,
        p => {
            let port = p.strip_prefix(':').ok_or("bad host")?;
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad port");
            }
            Some(port.parse::<u16>().map_err(|_| "bad port")?)
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.*[]:_".contains(&b))
    {
        return Err("bad host");
    }
    Ok((scheme, host.to_ascii_lowercase(), port))
}

impl OriginRule {
    /// Parses a rule; `*` may only open the host, as `*.`.
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let err = |why| OriginError {
            origin: s.to_string(),
            why,
        };
        let (scheme, host, port) = split_origin(s.trim()).map_err(err)?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(err("`*` may only open the host, as `*.`"));
        }
        if host.is_empty() || host.starts_with('.') || host.ends_with('.') {
            return Err(err("bad host"));
        }
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
            wildcard,
        })
    }

    /// Whether a request's origin (already split) matches this rule.
    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if scheme != self.scheme || port != self.port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(self.host.as_str())
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl fmt::Display for OriginRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "{}://{star}{}", self.scheme, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Whether `origin` (an `Origin` header value) is a well-formed serialized
/// origin, safe to echo in `Access-Control-Allow-Origin`.
pub fn is_origin(origin: &[u8]) -> bool {
    std::str::from_utf8(origin).is_ok_and(|s| !s.contains('*') && split_origin(s).is_ok())
}

/// A tenant's allowed origins; empty allows any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    rules: Vec<OriginRule>,
}

impl AllowedOrigins {
    /// Parses every rule; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, OriginError> {
        Ok(Self {
            rules: rules
                .iter()
                .map(|r| OriginRule::parse(r.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether any origin is allowed.
    pub fn is_any(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, as written back.
    pub fn rules(&self) -> &[OriginRule] {
        &self.rules
    }

    /// Whether a request with this `Origin` header value may ingest.
    pub fn allows(&self, origin: &[u8]) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        match split_origin(origin) {
            Ok((scheme, host, port)) if !host.contains('*') => {
                self.rules.iter().any(|r| r.matches(scheme, &host, port))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(rules: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(rules).unwrap()
    }

    #[test]
    fn exact_and_wildcard() {
        let a = list(&[
            "https://shop.example",
            "https://*.shop.example",
            "http://localhost:3000",
        ]);
        for ok in [
            "https://shop.example",
            "https://SHOP.example",
            "https://www.shop.example",
            "https://a.b.shop.example",
            "http://localhost:3000",
        ] {
            assert!(a.allows(ok.as_bytes()), "{ok}");
        }
        for no in [
            "http://shop.example",
            "https://shop.example:8443",
            "https://evilshop.example",
            "https://shop.example.evil",
            "https://.shop.example",
            "http://localhost",
            "http://localhost:3001",
            "null",
            "",
            "https://*.shop.example",
        ] {
            assert!(!a.allows(no.as_bytes()), "{no}");
        }
        assert!(AllowedOrigins::default().allows(b"null"));
    }

    #[test]
    fn rules_round_trip_and_refusals() {
        for r in [
            "https://*.shop.example",
            "http://127.0.0.1:8080",
            "https://a.b",
            "http://[::1]:8080",
            "http://[::1]",
        ] {
            assert_eq!(OriginRule::parse(r).unwrap().to_string(), r);
        }
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://a.*.example",
            "https://*",
            "https://shop.example:99999",
            "HTTPS://shop.example",
            "https://user@shop.example",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
        assert!(is_origin(b"https://shop.example:8443"));
        assert!(!is_origin(b"https://shop.example/x"));
        assert!(!is_origin(b"null"));
    }

    proptest! {
        #[test]
        fn never_panics(origin in ".{0,300}", rule in "[a-z]{1,5}://[*a-z.]{0,20}(:[0-9]{1,6})?") {
            if let Ok(r) = AllowedOrigins::parse(&[rule]) {
                let _ = r.allows(origin.as_bytes());
            }
            let _ = is_origin(origin.as_bytes());
        }
    }
}
