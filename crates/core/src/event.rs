//! The wire shape of a batch and its events, parsed in place.
//!
//! A batch is `{"events":[...], "sent_at":"<rfc3339>"}`. The envelope is parsed
//! first with each event kept as raw JSON ([`sonic_rs::LazyValue`]), then each
//! event is parsed on its own, so one malformed event is reported by index
//! instead of failing its 99 neighbours. String fields are
//! `Cow<'a, str>`: they borrow from the request buffer unless the JSON string
//! holds escapes. Unknown fields are ignored (forward compatibility).

use std::borrow::Cow;

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

/// A JSON string that borrows from the input when it holds no escapes.
///
/// serde's `borrow` does not reach through `Option<Cow<str>>`, so this wrapper
/// asks the deserializer for a borrowed string itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The five event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    Pageview = 0,
    Click = 1,
    Scroll = 2,
    Performance = 3,
    Custom = 4,
}

impl EventType {
    /// All types, in code order.
    pub const ALL: [EventType; 5] = [
        EventType::Pageview,
        EventType::Click,
        EventType::Scroll,
        EventType::Performance,
        EventType::Custom,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Pageview => "pageview",
            EventType::Click => "click",
            EventType::Scroll => "scroll",
            EventType::Performance => "performance",
            EventType::Custom => "custom",
        }
    }

    /// Parses the wire name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The code stored in records.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type for a record code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// Screen size as sent by the SDK.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Screen {
    pub width: f64,
    pub height: f64,
}

/// One event as sent, before validation. Every field is optional here so that
/// a missing field is a validation reason, not a parse error.
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub tenant_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub session_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub timestamp: Option<Text<'a>>,
    #[serde(rename = "type", borrow, default)]
    pub event_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub url: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub path: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub referrer: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub title: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub locale: Option<Text<'a>>,
    #[serde(default)]
    pub screen: Option<Screen>,
    #[serde(borrow, default)]
    pub selector: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub element: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub href: Option<Text<'a>>,
    #[serde(default)]
    pub x: Option<f64>,
    #[serde(default)]
    pub y: Option<f64>,
    #[serde(default)]
    pub depth_pct: Option<f64>,
    #[serde(default)]
    pub lcp: Option<f64>,
    #[serde(default)]
    pub fcp: Option<f64>,
    #[serde(default)]
    pub inp: Option<f64>,
    #[serde(default)]
    pub cls: Option<f64>,
    #[serde(default)]
    pub ttfb: Option<f64>,
    #[serde(default)]
    pub fid: Option<f64>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub properties: Option<LazyValue<'a>>,
}

/// The batch envelope: raw events plus the optional batch `sent_at`.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow, default)]
    pub events: Option<Vec<LazyValue<'a>>>,
    #[serde(borrow, default)]
    pub sent_at: Option<Text<'a>>,
}

/// Why a body is not a batch at all (the whole request is refused with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {message}")]
    Malformed { message: String, offset: usize },
    #[error("body must be a JSON object with an `events` array")]
    MissingEvents,
    #[error("the batch holds more than {max} events, the limit")]
    TooManyEvents { max: usize },
}

/// Longest parser message kept, in bytes: sonic-rs quotes the input around
/// the fault (any UTF-8), so it is cut, on a character boundary.
pub const MAX_PARSE_MESSAGE_BYTES: usize = 256;

fn parse_message(e: &sonic_rs::Error) -> String {
    engine_text::shown(&e.to_string(), MAX_PARSE_MESSAGE_BYTES).into_owned()
}

/// `part` as a slice of `whole` with `whole`'s lifetime, when it is one (a
/// raw value sonic-rs found inside `whole`), so that nested raw JSON borrows
/// from the body like the rest; `None` when it is not inside `whole`.
pub fn reborrow<'a>(whole: &'a str, part: &str) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    whole
        .get(start..end)
        .filter(|s| std::ptr::eq(s.as_ptr(), part.as_ptr()))
}

/// The envelope with its events skipped, not collected.
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(default)]
    events: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    sent_at: Option<Text<'a>>,
}

/// Parses the envelope of a batch in place, keeping at most `max_events`
/// events: past them it stops with [`EnvelopeError::TooManyEvents`] before
/// collecting more (each raw event costs 48 bytes, so 8 MiB of `0,` held
/// 200 MB before; found by review).
pub fn parse_envelope(body: &[u8], max_events: usize) -> Result<Envelope<'_>, EnvelopeError> {
    // sonic-rs does not check UTF-8 inside the raw events it keeps (a
    // `LazyValue` is made with `from_utf8_unchecked`: a debug assertion, and
    // undefined behaviour in a release build), so the whole body is checked
    // first. Found by the error-path property test (issue 19).
    let body = std::str::from_utf8(body).map_err(|e| EnvelopeError::Malformed {
        message: "invalid UTF-8".to_string(),
        offset: e.valid_up_to(),
    })?;
    let malformed = |e: sonic_rs::Error| EnvelopeError::Malformed {
        message: parse_message(&e),
        offset: e.offset(),
    };
    let head: Head<'_> = sonic_rs::from_str(body).map_err(malformed)?;
    if head.events.is_none() {
        return Err(EnvelopeError::MissingEvents);
    }
    let events = sonic_rs::get(body, ["events"]).map_err(malformed)?;
    let raw = reborrow(body, events.as_raw_str()).unwrap_or_default();
    if !raw.starts_with('[') {
        return Err(EnvelopeError::Malformed {
            message: "`events` must be an array".to_string(),
            offset: (raw.as_ptr() as usize).saturating_sub(body.as_ptr() as usize),
        });
    }
    let mut out = Vec::new();
    for item in sonic_rs::to_array_iter(raw) {
        let item = item.map_err(malformed)?;
        if out.len() == max_events {
            return Err(EnvelopeError::TooManyEvents { max: max_events });
        }
        out.push(item);
    }
    Ok(Envelope {
        events: Some(out),
        sent_at: head.sent_at,
    })
}

/// Why one event could not be parsed: reported with the event's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventParseError {
    /// The JSON key nearest before the fault, when one can be found.
    pub field: &'static str,
    pub message: String,
}

/// Parses one raw event (an element of `events`) in place.
pub fn parse_event<'a>(raw: &'a LazyValue<'a>) -> Result<RawEvent<'a>, EventParseError> {
    if !raw.is_object() {
        return Err(EventParseError {
            field: "",
            message: "event must be a JSON object".to_string(),
        });
    }
    let text = raw.as_raw_str();
    sonic_rs::from_str::<RawEvent<'a>>(text).map_err(|e| EventParseError {
        field: key_before(text, e.offset()),
        message: parse_message(&e),
    })
}

/// Known field names, so a parse error can name the field it happened in.
const FIELDS: &[&str] = &[
    "id",
    "tenant_id",
    "session_id",
    "timestamp",
    "type",
    "user_id",
    "url",
    "path",
    "referrer",
    "title",
    "user_agent",
    "locale",
    "screen",
    "selector",
    "element",
    "text",
    "href",
    "x",
    "y",
    "depth_pct",
    "lcp",
    "fcp",
    "inp",
    "cls",
    "ttfb",
    "fid",
    "name",
    "properties",
];

/// Finds the last `"key":` before `offset` that names a known field.
fn key_before(text: &str, offset: usize) -> &'static str {
    let head = &text.as_bytes()[..offset.min(text.len())];
    let mut end = head.len();
    while let Some(colon) = head[..end].iter().rposition(|&b| b == b':') {
        let before = head[..colon].trim_ascii_end();
        if let Some(stripped) = before.strip_suffix(b"\"") {
            if let Some(open) = stripped.iter().rposition(|&b| b == b'"') {
                let key = &stripped[open + 1..];
                if let Some(f) = FIELDS.iter().find(|f| f.as_bytes() == key) {
                    return f;
                }
            }
        }
        end = colon;
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let body = br#"{"events":[{"id":"a","title":"Say \"hi\"","path":"/"}]}"#;
        let env = parse_envelope(body, 100).unwrap();
        let events = env.events.unwrap();
        let ev = parse_event(&events[0]).unwrap();
        assert!(matches!(ev.id, Some(Text(Cow::Borrowed("a")))));
        assert!(matches!(ev.path, Some(Text(Cow::Borrowed("/")))));
        assert!(matches!(ev.title, Some(Text(Cow::Owned(_)))));
        assert_eq!(ev.title.as_deref(), Some("Say \"hi\""));
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(
            parse_envelope(b"{", 10),
            Err(EnvelopeError::Malformed { .. })
        ));
        assert_eq!(
            parse_envelope(b"{}", 10).unwrap_err(),
            EnvelopeError::MissingEvents
        );
        assert!(matches!(
            parse_envelope(br#"{"events":3}"#, 10),
            Err(EnvelopeError::Malformed { .. })
        ));
        assert_eq!(
            parse_envelope(br#"{"events":[1,2,3]}"#, 2).unwrap_err(),
            EnvelopeError::TooManyEvents { max: 2 }
        );
        let env = parse_envelope(br#"{"sent_at":"x","events":[1,2]} "#, 2).unwrap();
        assert_eq!(
            (env.events.map(|e| e.len()), env.sent_at.as_deref()),
            (Some(2), Some("x"))
        );
        assert!(matches!(
            parse_envelope(br#"{"events":[1,2]} x"#, 2),
            Err(EnvelopeError::Malformed { .. })
        ));
    }

    #[test]
    fn event_errors_name_the_field() {
        let env = parse_envelope(br#"{"events":[{"id":"a","x":"left"}, 7]}"#, 10).unwrap();
        let events = env.events.unwrap();
        let err = parse_event(&events[0]).unwrap_err();
        assert_eq!(err.field, "x");
        let err = parse_event(&events[1]).unwrap_err();
        assert_eq!(err.field, "");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let env = parse_envelope(br#"{"events":[{"id":"a","future":{"a":[1,2]}}]}"#, 10).unwrap();
        let events = env.events.unwrap();
        assert_eq!(parse_event(&events[0]).unwrap().id.as_deref(), Some("a"));
    }

    #[test]
    fn type_codes_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_code(t.code()), Some(t));
            assert_eq!(EventType::from_name(t.as_str()), Some(t));
        }
        assert_eq!(EventType::from_code(9), None);
    }
}
