//! Values the configuration parses once, so no owner re-parses a string on
//! use: durations (in the unit their key names), broker lists and HTTP URLs.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `Duration` written as whole milliseconds (keys ending in `_ms`).
pub mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A `Duration` written as whole seconds (keys ending in `_secs`).
pub mod secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Bootstrap brokers, each `host:port`. Written as `"a:9092,b:9092"` (the
/// form librdkafka and `INGESTION_REDPANDA_BROKERS` use) or as an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers(Vec<String>);

impl Brokers {
    /// Checks each address; the list may not be empty.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Brokers, String> {
        let list: Vec<String> = items
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(s.to_string())
                }
                _ => Err(format!("`{s}` is not host:port")),
            })
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err("must name at least one broker".into());
        }
        Ok(Brokers(list))
    }

    /// The addresses, comma-separated (librdkafka's `bootstrap.servers`).
    pub fn joined(&self) -> String {
        self.0.join(",")
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined())
    }
}

impl Serialize for Brokers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.joined())
    }
}

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Brokers, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Brokers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port,host:port\" or an array of host:port")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Brokers, E> {
                Brokers::parse(v.split(',')).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Brokers, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    items.push(s);
                }
                Brokers::parse(items.iter().map(String::as_str)).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An `http://` or `https://` URL with a host, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let s = s.trim().trim_end_matches('/');
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or_else(|| format!("`{s}` must start with http:// or https://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') || h.starts_with('[') => {
                port.parse::<u16>()
                    .map_err(|_| format!("`{s}`: `{port}` is not a port"))?;
                h
            }
            _ => authority,
        };
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        Ok(HttpUrl(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HttpUrl, D::Error> {
        let s = String::deserialize(d)?;
        HttpUrl::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_urls_are_checked_once() {
        let b = Brokers::parse("a:9092, b:19092".split(',')).unwrap();
        assert_eq!(b.joined(), "a:9092,b:19092");
        assert!(Brokers::parse(["a"]).is_err());
        assert!(Brokers::parse(["a:0"]).is_err());
        assert!(Brokers::parse([""]).is_err());
        assert_eq!(
            HttpUrl::parse("http://ch:8123/").unwrap().as_str(),
            "http://ch:8123"
        );
        assert!(HttpUrl::parse("ch:8123").is_err());
        assert!(HttpUrl::parse("http://:8123").is_err());
        assert!(HttpUrl::parse("http://ch:port").is_err());
    }
}
