//! What the Segment and PostHog libraries put on the wire around their
//! JSON: the key in an HTTP Basic or Bearer header, gzip announced or not,
//! PostHog's `data=` form field (base64, maybe gzip inside), ids that are
//! not UUIDs. No I/O; the body's buffers are the shard's pool.

use edge_http::ErrorCode;
use std::borrow::Cow;

use base64::Engine as _;
use engine_core::event::Text;
use uuid::Uuid;

use crate::http::{Encoding, RequestHead, Response};
use crate::ingest::with_decoded;
use crate::shard::Shard;

/// The first bytes of every gzip stream (RFC 1952): how a body that
/// posthog-js gzips without saying so is told from JSON, which never starts
/// with them.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Longest key taken from a header or a path, in bytes; a real one is 67.
pub const MAX_KEY_BYTES: usize = 256;

/// The key an `Authorization` header carries for these libraries: the user
/// of `Basic base64(user:password)` (Segment's write key, empty password),
/// or the token of `Bearer <key>` (PostHog's capture v1). `None`: no such
/// header, or not one of these forms.
pub fn header_key(header: &[u8]) -> Option<String> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    if rest.len() > MAX_KEY_BYTES * 2 {
        return None;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let user = decoded.split(':').next().unwrap_or_default();
        (!user.is_empty()).then(|| user.to_owned())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        (!rest.is_empty()).then(|| rest.to_owned())
    } else {
        None
    }
}

/// Runs `f` on the JSON a request carries, whichever way it was wrapped:
///
/// - `Content-Encoding: gzip` or `zstd` (as on `/ingest`), or a body that
///   starts with gzip's magic bytes and says nothing (posthog-js);
/// - a form body (`application/x-www-form-urlencoded`, or one that starts
///   with `data=`): its `data` field, base64, then gzip when its bytes say so
///   (PostHog's older transport). `?compression=lz64` is 415: no maintained
///   crate decodes lz-string, and the libraries of the last years send gzip.
///
/// Every inflated body is capped at `http.max_decompressed_bytes`.
pub fn with_json<R>(
    shard: &Shard,
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
    f: impl FnOnce(&[u8]) -> Result<R, Response>,
) -> Result<R, Response> {
    let form = head.form || body.starts_with(b"data=");
    if !form {
        let encoding = match head.encoding {
            Encoding::Identity if body.starts_with(&GZIP_MAGIC) => Encoding::Gzip,
            e => e,
        };
        return with_decoded(shard, encoding, body, f);
    }
    if crate::cors::query_param(head, buf, "compression").as_deref() == Some("lz64") {
        return Err(Response::error(
            415,
            ErrorCode::UnsupportedEncoding,
            "lz64 compression is not supported; send gzip (`compression=gzip-js`) or plain JSON",
        ));
    }
    // A form body is text; a gzip Content-Encoding around it is undone first.
    with_decoded(shard, head.encoding, body, |form_bytes| {
        let Some(data) = form_urlencoded::parse(form_bytes)
            .find(|(k, _)| k == "data")
            .map(|(_, v)| v)
        else {
            return Err(Response::error(
                400,
                ErrorCode::InvalidBatch,
                "a form body must carry the events in its `data` field",
            ));
        };
        let mut raw = shard.take_buffer();
        let result = match decode_base64(&data, &mut raw) {
            Ok(()) => {
                let encoding = if raw.starts_with(&GZIP_MAGIC) {
                    Encoding::Gzip
                } else {
                    Encoding::Identity
                };
                with_decoded(shard, encoding, &raw, f)
            }
            // Not base64: the field is the JSON itself.
            Err(()) => f(data.as_bytes()),
        };
        shard.give_buffer(raw);
        result
    })
}

/// Base64 (standard or URL-safe alphabet, padded or not) into `out`.
fn decode_base64(text: &str, out: &mut Vec<u8>) -> Result<(), ()> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    // JSON starts with `{` or `[`, never base64.
    if text.starts_with(['{', '[']) {
        return Err(());
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.clear();
        if engine.decode_vec(text, out).is_ok() {
            return Ok(());
        }
    }
    out.clear();
    Err(())
}

pub use engine_core::event::reborrow;

/// At most `max` elements of the JSON array `raw` (a slice of the body):
/// the elements kept raw, or `Err(true)` past `max` (before more is
/// allocated: a body of 8 MiB of `0,` would otherwise cost 48 B each),
/// `Err(false)` when it is not an array.
pub fn array<'a>(raw: &'a str, max: usize) -> Result<Vec<sonic_rs::LazyValue<'a>>, bool> {
    if !raw.trim_start().starts_with('[') {
        return Err(false);
    }
    let mut out = Vec::new();
    for item in sonic_rs::to_array_iter(raw) {
        let item = item.map_err(|_| false)?;
        if out.len() == max {
            return Err(true);
        }
        out.push(item);
    }
    Ok(out)
}

/// A string field that is left out when it holds another type (a page's own
/// `title: 5` must not lose the event), borrowing when it can.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LooseText<'a>(pub Option<Text<'a>>);

/// A number field that is left out when it holds another type; a numeric
/// string (`"1920"`) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LooseNum(pub Option<f64>);

/// Accepts any JSON value; what the visitor makes of the wrong types is
/// `None`.
macro_rules! ignore_other_types {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Default::default())
        }
    };
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for LooseText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LooseText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LooseText(Some(Text(Cow::Borrowed(v)))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LooseText(Some(Text(Cow::Owned(v.to_owned())))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(LooseText(Some(Text(Cow::Owned(v)))))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LooseText(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LooseText(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LooseText(None))
            }
            ignore_other_types!();
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for LooseNum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LooseNum;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LooseNum(Some(v as f64)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LooseNum(Some(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(LooseNum(Some(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LooseNum(v.trim().parse().ok()))
            }
            ignore_other_types!();
        }
        d.deserialize_any(V)
    }
}

/// An id that is a string, or a number the library did not stringify
/// (`userId: 42`, `distinct_id: 4.5`).
#[derive(Debug, Clone)]
pub struct Id<'a>(pub Text<'a>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Id<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Id(Text(Cow::Owned(v.to_string()))))
            }
        }
        d.deserialize_any(V)
    }
}

/// An id as the engine stores it: `value` itself when it is a UUID, else
/// the UUID v5 of `value` in the tenant's namespace (the tenant id), so the
/// same id from the same tenant is always the same UUID: a library's retry
/// deduplicates like the engine's own SDK's.
pub fn uuid_text<'a>(tenant: &Uuid, value: &Text<'a>) -> Text<'a> {
    if Uuid::try_parse(value).is_ok() {
        return value.clone();
    }
    Text(Cow::Owned(
        Uuid::new_v5(tenant, value.as_bytes())
            .hyphenated()
            .to_string(),
    ))
}

/// The id of an event that came without one: with a client timestamp, the
/// UUID v5 of its own bytes in the tenant's namespace (an identical retry is
/// the same event and deduplicates); without one, a random id (two
/// identical calls are two events).
pub fn content_id(tenant: &Uuid, raw: &str, timestamped: bool) -> Text<'static> {
    let id = if timestamped {
        Uuid::new_v5(tenant, raw.as_bytes())
    } else {
        Uuid::new_v4()
    };
    Text(Cow::Owned(id.hyphenated().to_string()))
}

/// An RFC 3339 timestamp as validation takes it: `t` itself, or `t` with a
/// `Z` when it has no offset (a naive UTC time some server libraries send).
pub fn timestamp_text<'a>(t: &Text<'a>) -> Text<'a> {
    if engine_core::timestamp::parse_rfc3339_us(t).is_some() {
        return t.clone();
    }
    let zulu = format!("{}Z", &**t);
    if engine_core::timestamp::parse_rfc3339_us(&zulu).is_some() {
        Text(Cow::Owned(zulu))
    } else {
        t.clone()
    }
}

/// A time in µs since the epoch, as an RFC 3339 text.
pub fn time_text(us: i64) -> Text<'static> {
    Text(Cow::Owned(engine_core::timestamp::format_rfc3339_us(us)))
}

/// The path of a URL (`https://a.example/p?q#f` → `/p`), for a pageview
/// that names only its URL; `None` when it has none.
pub fn path_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let start = rest.find('/')?;
    let path = rest.get(start..)?;
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_basic_and_bearer_headers() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("pk_abc:")
        );
        assert_eq!(header_key(basic.as_bytes()).as_deref(), Some("pk_abc"));
        assert_eq!(header_key(b"bearer phc_123").as_deref(), Some("phc_123"));
        for bad in [
            &b"Basic !!!"[..],
            b"Basic ",
            b"Digest x",
            b"Bearer",
            b"\xff\xfe",
        ] {
            assert_eq!(header_key(bad), None, "{bad:?}");
        }
        let empty_user = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(":pw")
        );
        assert_eq!(header_key(empty_user.as_bytes()), None);
    }

    #[test]
    fn ids_keep_uuids_and_map_the_rest_stably() {
        let t = Uuid::from_u128(1);
        let u = Text(Cow::Borrowed("0190a5c8-0b9c-7c3e-8e3a-1b2c3d4e5f60"));
        assert_eq!(uuid_text(&t, &u), u);
        let node = Text(Cow::Borrowed("node-next-1717000000000-abc"));
        let a = uuid_text(&t, &node);
        assert_eq!(a, uuid_text(&t, &node), "the same id maps the same");
        assert!(Uuid::try_parse(&a).is_ok());
        assert_ne!(a, uuid_text(&Uuid::from_u128(2), &node), "per tenant");
        assert_eq!(content_id(&t, "{}", true), content_id(&t, "{}", true));
        assert_ne!(content_id(&t, "{}", false), content_id(&t, "{}", false));
    }

    #[test]
    fn loose_fields_reborrowed_values_and_bounded_arrays() {
        #[derive(serde::Deserialize, Default)]
        struct P<'a> {
            #[serde(borrow, default)]
            t: LooseText<'a>,
            #[serde(default)]
            n: LooseNum,
        }
        for (json, t, n) in [
            (r#"{"t":"x","n":3}"#, Some("x"), Some(3.0)),
            (r#"{"t":5,"n":"1920"}"#, None, Some(1920.0)),
            (r#"{"t":[1,{"a":[]}],"n":{"b":1}}"#, None, None),
            (r#"{"t":null,"n":true}"#, None, None),
        ] {
            let p: P<'_> = sonic_rs::from_str(json).unwrap();
            assert_eq!(p.t.0.as_deref(), t, "{json}");
            assert_eq!(p.n.0, n, "{json}");
        }
        let whole = r#"{"a":{"b":[1,2]}}"#;
        let inner: sonic_rs::LazyValue<'_> = sonic_rs::get(whole, &["a", "b"]).unwrap();
        let owned_copy = inner.as_raw_str().to_owned();
        assert_eq!(reborrow(whole, inner.as_raw_str()), Some("[1,2]"));
        assert_eq!(reborrow(whole, &owned_copy), None);
        assert_eq!(array("[1,2,3]", 3).map(|v| v.len()), Ok(3));
        assert_eq!(array("[1,2,3]", 2).map(|v| v.len()), Err(true));
        assert_eq!(array("{}", 2).map(|v| v.len()), Err(false));
        assert_eq!(array("[1,", 2).map(|v| v.len()), Err(false));
    }

    #[test]
    fn timestamps_paths_and_base64() {
        let naive = Text(Cow::Borrowed("2024-05-01T12:00:00.123456"));
        assert_eq!(&*timestamp_text(&naive), "2024-05-01T12:00:00.123456Z");
        let z = Text(Cow::Borrowed("2024-05-01T12:00:00Z"));
        assert_eq!(timestamp_text(&z), z);
        assert_eq!(path_of("https://a.example/p/q?x=1#f"), Some("/p/q"));
        assert_eq!(path_of("https://a.example"), None);
        assert_eq!(path_of("/local?x"), Some("/local"));
        let mut out = Vec::new();
        assert!(decode_base64("eyJhIjoxfQ==", &mut out).is_ok());
        assert_eq!(out, br#"{"a":1}"#);
        assert!(decode_base64("eyJhIjoxfQ", &mut out).is_ok());
        assert!(decode_base64(r#"{"a":1}"#, &mut out).is_err());
    }
}
