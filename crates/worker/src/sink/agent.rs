//! Browser, operating system and device from an event's `user_agent`, for the
//! `browser`, `os` and `device` columns the dashboards group by.
//!
//! Parsing is woothee's (a maintained dataset compiled in, no regex engine,
//! about 2 µs per string). Pages send the same few user agents over and over,
//! so each sink thread keeps a bounded cache of classified strings: a hit is
//! one hash lookup. The cache holds at most [`AGENT_CACHE_ENTRIES`] strings and
//! is emptied when full (a new working set refills it within a batch).

use foldhash::{HashMap, HashMapExt};
use woothee::parser::Parser;

/// Most user agents a sink thread keeps classified. Each entry is the user
/// agent (bounded by the edge's `limits.max_string_bytes`) and three short
/// names.
pub const AGENT_CACHE_ENTRIES: usize = 4096;

/// What a user agent says, as the dashboards name it. Empty where unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    /// `Chrome`, `Safari`, `Firefox`, `Edge`, … or a crawler's name.
    pub browser: Box<str>,
    /// `Windows`, `macOS`, `iOS`, `Android`, `Linux`, `ChromeOS`, …
    pub os: Box<str>,
    /// `Desktop`, `Mobile`, `Tablet`, `Bot` or `Other`.
    pub device: &'static str,
}

const UNKNOWN: &str = "UNKNOWN";

fn known(s: &str) -> &str {
    if s == UNKNOWN {
        ""
    } else {
        s
    }
}

/// Classifies one user agent (no cache).
pub fn classify(parser: &Parser, ua: &str) -> Agent {
    let Some(r) = parser.parse(ua) else {
        return Agent::default();
    };
    let os = match r.os {
        "Mac OSX" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "Windows Phone OS" => "Windows Phone",
        w if w.starts_with("Windows") => "Windows",
        other => known(other),
    };
    let device = match r.category {
        "pc" => "Desktop",
        // Android tablets leave `Mobile` out of their user agent.
        "smartphone" if r.os == "iPad" || (r.os == "Android" && !ua.contains("Mobile")) => "Tablet",
        "smartphone" | "mobilephone" => "Mobile",
        "crawler" => "Bot",
        "appliance" | "misc" => "Other",
        _ => "",
    };
    Agent {
        browser: known(r.name).into(),
        os: os.into(),
        device,
    }
}

/// A parser and its bounded cache; one per sink thread.
pub struct AgentCache {
    parser: Parser,
    seen: HashMap<Box<str>, Agent>,
}

impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCache")
            .field("entries", &self.seen.len())
            .finish()
    }
}

impl Default for AgentCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentCache {
    pub fn new() -> Self {
        Self {
            parser: Parser::new(),
            seen: HashMap::with_capacity(256),
        }
    }

    /// The classification of `ua`, from the cache when it was seen before.
    pub fn get(&mut self, ua: &str) -> &Agent {
        if !self.seen.contains_key(ua) {
            if self.seen.len() >= AGENT_CACHE_ENTRIES {
                self.seen.clear();
            }
            let agent = classify(&self.parser, ua);
            self.seen.insert(ua.into(), agent);
        }
        &self.seen[ua]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_agents() {
        let mut c = AgentCache::new();
        let cases = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", ("Chrome", "Windows", "Desktop")),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", ("Safari", "iOS", "Mobile")),
            ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", ("Safari", "iOS", "Tablet")),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", ("Chrome", "Android", "Mobile")),
            ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", ("Chrome", "Android", "Tablet")),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", ("Safari", "macOS", "Desktop")),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", ("Firefox", "Linux", "Desktop")),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", ("Edge", "Windows", "Desktop")),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ("Googlebot", "", "Bot")),
            ("", ("", "", "")),
            ("\u{1F600}'; DROP TABLE", ("", "", "")),
        ];
        for _ in 0..2 {
            for (ua, (browser, os, device)) in cases {
                let a = c.get(ua);
                assert_eq!(
                    (&*a.browser, &*a.os, a.device),
                    (browser, os, device),
                    "{ua}"
                );
            }
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut c = AgentCache::new();
        for i in 0..AGENT_CACHE_ENTRIES * 2 + 7 {
            let ua =
                format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0");
            assert_eq!(&*c.get(&ua).browser, "Firefox");
            assert!(c.seen.len() <= AGENT_CACHE_ENTRIES);
        }
    }
}
