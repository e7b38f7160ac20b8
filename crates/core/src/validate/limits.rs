//! Property tests at the length limits: every bounded field gets values of
//! exactly `limit - 1`, `limit` and `limit + 1` bytes whose last characters
//! are one to four bytes wide, so the limit falls inside a character as often
//! as between two. A value is accepted exactly when its byte length is at
//! most the limit: a check that counted characters, or that was off by one,
//! fails here.

use super::*;
use crate::event::{parse_envelope, parse_event};
use crate::timestamp::parse_rfc3339_us;
use proptest::prelude::*;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const NOW: &str = "2026-11-27T12:00:00Z";

/// Which limit a string field is held to.
#[derive(Debug, Clone, Copy)]
enum Bound {
    String,
    Url,
    Locale,
}

/// Every length-checked string field of an event.
const FIELDS: [(&str, Bound); 12] = [
    ("user_id", Bound::String),
    ("url", Bound::Url),
    ("path", Bound::String),
    ("referrer", Bound::Url),
    ("title", Bound::String),
    ("user_agent", Bound::String),
    ("locale", Bound::Locale),
    ("selector", Bound::String),
    ("element", Bound::String),
    ("text", Bound::String),
    ("href", Bound::Url),
    ("name", Bound::String),
];

fn limit_of(bound: Bound, l: &Limits) -> usize {
    match bound {
        Bound::String => l.max_string_bytes,
        Bound::Url => l.max_url_bytes,
        Bound::Locale => MAX_LOCALE_BYTES,
    }
}

/// One character of each UTF-8 width, and a few more of each.
const POOL: [char; 10] = ['a', 'Z', 'é', 'ß', '€', 'ह', '中', '🙂', '𝄞', '\u{10ffff}'];

/// A value of exactly `len` bytes: `/` (so it is a valid path too), then
/// `prefix` characters while they fit, ASCII padding, and `tail` characters of
/// `width` bytes ending the value (so with `len = limit + 1` and `width > 1`
/// the limit falls inside the last character).
fn value_of(len: usize, prefix: &[char], width: usize, tail: usize) -> String {
    let tail_char = POOL
        .iter()
        .copied()
        .find(|c| c.len_utf8() == width)
        .expect("a character of each width");
    let tail = tail.min(len.saturating_sub(1) / width);
    let body = len - 1 - tail * width;
    let mut s = String::from("/");
    for c in prefix {
        if s.len() + c.len_utf8() > 1 + body {
            break;
        }
        s.push(*c);
    }
    while s.len() < 1 + body {
        s.push('x');
    }
    s.extend(std::iter::repeat_n(tail_char, tail));
    assert_eq!(s.len(), len, "{s:?}");
    s
}

/// `s` as a JSON string, its non-ASCII characters raw or as `\u` escapes
/// (surrogate pairs above U+FFFF): the limit is on the decoded value.
fn json_string(s: &str, escaped: bool) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if escaped && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A valid pageview with `field` set to `value` (raw JSON), in place of the
/// base event's own (a duplicate key is a parse error).
fn event(field: &str, value: &str) -> String {
    let mut fields = vec![
        (
            "id",
            r#""550e8400-e29b-41d4-a716-446655440000""#.to_string(),
        ),
        ("tenant_id", format!(r#""{TENANT}""#)),
        (
            "session_id",
            r#""11111111-1111-1111-1111-111111111111""#.to_string(),
        ),
        ("timestamp", r#""2026-11-27T11:59:00Z""#.to_string()),
        ("type", r#""pageview""#.to_string()),
        ("path", r#""/""#.to_string()),
    ];
    fields.retain(|(k, _)| *k != field);
    fields.push((field, value.to_string()));
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!(r#""{k}":{v}"#))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Validates one event under `limits`: `Ok(())` or its rejection.
fn validate(json: &str, limits: &Limits) -> Result<(), Rejection> {
    let body = format!(r#"{{"events":[{json}]}}"#);
    let env = parse_envelope(body.as_bytes(), usize::MAX).expect("a valid envelope");
    let events = env.events.expect("events");
    let raw = parse_event(&events[0]).expect("a parsed event");
    let ctx = BatchContext::new(
        Uuid::nil(),
        parse_rfc3339_us(NOW).unwrap(),
        None,
        30,
        limits,
    );
    validate_event(&raw, &ctx).map(|_| ())
}

/// Whether `value` in `field` is accepted exactly when it fits the limit.
fn check_field(
    field: &'static str,
    bound: Bound,
    limits: &Limits,
    value: &str,
    escaped: bool,
) -> Result<(), TestCaseError> {
    let limit = limit_of(bound, limits);
    let json = event(field, &json_string(value, escaped));
    let got = validate(&json, limits);
    let want = if value.len() <= limit {
        Ok(())
    } else {
        Err(Rejection {
            reason: Reason::StringTooLong,
            field,
        })
    };
    prop_assert_eq!(
        got,
        want,
        "{} of {} bytes ({} characters) against a limit of {} bytes",
        field,
        value.len(),
        value.chars().count(),
        limit
    );
    Ok(())
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (8usize..300, 8usize..600, 16usize..400).prop_map(|(s, u, p)| Limits {
        max_string_bytes: s,
        max_url_bytes: u,
        max_properties_bytes: p,
        ..Limits::default()
    })
}

fn prefix_strategy() -> impl Strategy<Value = Vec<char>> {
    prop::collection::vec(prop::sample::select(&POOL[..]), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn string_fields_are_accepted_exactly_up_to_their_byte_limit(
        limits in prop_oneof![Just(Limits::default()), limits_strategy()],
        f in 0..FIELDS.len(),
        delta in -1isize..=1,
        prefix in prefix_strategy(),
        width in 1usize..=4,
        tail in 1usize..=3,
        escaped in any::<bool>(),
    ) {
        let (field, bound) = FIELDS[f];
        let len = limit_of(bound, &limits).checked_add_signed(delta).unwrap();
        let value = value_of(len, &prefix, width, tail);
        check_field(field, bound, &limits, &value, escaped)?;
    }

    #[test]
    fn properties_are_accepted_exactly_up_to_their_raw_byte_limit(
        limits in prop_oneof![Just(Limits::default()), limits_strategy()],
        delta in -1isize..=1,
        prefix in prefix_strategy(),
        width in 1usize..=4,
        tail in 1usize..=3,
    ) {
        // `{"k":"/…"}`: 8 bytes around the value, raw UTF-8 inside.
        let limit = limits.max_properties_bytes;
        let len = limit.checked_add_signed(delta).unwrap();
        let raw = format!(r#"{{"k":"{}"}}"#, value_of(len - 8, &prefix, width, tail));
        prop_assert_eq!(raw.len(), len);
        let got = validate(&event("properties", &raw), &limits);
        let want = if len <= limit {
            Ok(())
        } else {
            Err(Rejection { reason: Reason::StringTooLong, field: "properties" })
        };
        prop_assert_eq!(got, want, "properties of {} bytes against {}", len, limit);
    }

    #[test]
    fn events_are_accepted_exactly_up_to_their_byte_limit(
        limit in 1usize..1_000_000,
        delta in -1isize..=1,
    ) {
        let limits = Limits { max_event_bytes: limit, ..Limits::default() };
        let len = limit.checked_add_signed(delta).unwrap();
        let want = if len <= limit {
            Ok(())
        } else {
            Err(Rejection { reason: Reason::EventTooLarge, field: "" })
        };
        prop_assert_eq!(check_event_size(len, &limits), want);
    }

    #[test]
    fn timestamps_are_refused_past_their_byte_limit(
        delta in -1isize..=1,
        digit in 0u8..10,
    ) {
        // `2026-11-27T11:59:00.` (20 bytes), fraction digits, `Z`.
        let len = MAX_TIMESTAMP_BYTES.checked_add_signed(delta).unwrap();
        let digits = String::from(char::from(b'0' + digit)).repeat(len - 21);
        let ts = format!("2026-11-27T11:59:00.{digits}Z");
        prop_assert_eq!(ts.len(), len);
        prop_assert!(parse_rfc3339_us(&ts).is_some(), "a valid timestamp: {}", ts);
        let json = event("timestamp", &format!(r#""{ts}""#));
        let got = validate(&json, &Limits::default());
        let want = if len <= MAX_TIMESTAMP_BYTES {
            Ok(())
        } else {
            Err(Rejection { reason: Reason::InvalidTimestamp, field: "timestamp" })
        };
        prop_assert_eq!(got, want, "a timestamp of {} bytes", len);
    }
}

#[test]
fn the_values_have_the_lengths_and_widths_asked() {
    // The generator itself: exact lengths, and the limit inside a character.
    for width in 1..=4 {
        for len in [8, 9, 10, 35, 36, 1024, 1025] {
            let v = value_of(len, &['é', '🙂', 'a'], width, 3);
            assert_eq!(v.len(), len);
            let last = v.chars().last().unwrap();
            assert_eq!(last.len_utf8(), width, "{v:?}");
        }
    }
    // 1025 bytes ending in a 4-byte character: byte 1024 is inside it.
    let v = value_of(1025, &[], 4, 1);
    assert!(!v.is_char_boundary(1024));
    assert!(v.chars().count() <= 1024);
}
