//! Every parser of engine-core fed arbitrary text (any UTF-8, multi-byte
//! characters around every bound, and bytes that are not UTF-8 at all): it
//! answers `Ok` or an error, never a panic (which aborts the engine), and
//! every message it makes is bounded. Found by a review: sonic-rs quotes an
//! unknown field's name in its message, and a byte-offset cut of it inside
//! a character aborted the process (issue 19).

use engine_core::event::{parse_envelope, parse_event, EnvelopeError, MAX_PARSE_MESSAGE_BYTES};
use engine_core::origin::{is_origin, AllowedOrigins, OriginRule};
use engine_core::tenant::{key_label, Credentials, TenantRegistry, KEY_LABEL_CHARS};
use engine_core::timestamp::parse_rfc3339_us;
use proptest::prelude::*;

/// Text that reaches the cut points: long runs of 2-, 3- and 4-byte
/// characters, mixed with ASCII and JSON's own punctuation.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        ("[éa€🦀\"\\\\:{},]{1,8}", 1usize..120).prop_map(|(unit, n)| unit.repeat(n)),
        Just("é".repeat(100)),
    ]
}

/// JSON-ish bodies built around hostile text in the places a parser
/// quotes: a key, a value, a truncated document, a bad escape.
fn hostile_bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hostile_text().prop_map(|t| format!("{{\"{t}\": 1}}").into_bytes()),
        hostile_text().prop_map(|t| format!("{{\"events\":[{{\"{t}\":\"{t}\"}}]}}").into_bytes()),
        hostile_text().prop_map(|t| format!("{{\"events\":[{{\"id\":{t}}}]}}").into_bytes()),
        hostile_text().prop_map(|t| format!("{{\"events\":[\"{t}").into_bytes()),
        hostile_text().prop_map(|t| format!("{{\"sent_at\":\"\\u{t}\"}}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..400),
        (hostile_text(), proptest::collection::vec(128u8..=255, 1..8)).prop_map(|(t, bad)| {
            let mut b = format!("{{\"events\":[{{\"type\":\"{t}").into_bytes();
            b.extend_from_slice(&bad);
            b.extend_from_slice(b"\"}]}");
            b
        }),
    ]
}

fn check_message(m: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        m.len() <= MAX_PARSE_MESSAGE_BYTES + "…".len(),
        "{} bytes",
        m.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn batch_and_event_parsers_never_panic_and_bound_their_messages(body in hostile_bodies()) {
        // A small bound, so the bounded path is explored too.
        match parse_envelope(&body, 3) {
            Err(EnvelopeError::Malformed { message, offset }) => {
                check_message(&message)?;
                prop_assert!(offset <= body.len());
            }
            Err(EnvelopeError::MissingEvents | EnvelopeError::TooManyEvents { .. }) => {}
            Ok(env) => {
                for raw in env.events.iter().flatten() {
                    if let Err(e) = parse_event(raw) {
                        check_message(&e.message)?;
                    }
                }
            }
        }
    }

    #[test]
    fn origins_timestamps_and_credentials_never_panic(t in hostile_text(), b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = OriginRule::parse(&t);
        let _ = AllowedOrigins::parse(&[t.as_str()]);
        let allow = AllowedOrigins::parse(&["https://*.shop.example"]).unwrap();
        let _ = allow.allows(t.as_bytes());
        let _ = allow.allows(&b);
        let _ = is_origin(&b);
        let _ = parse_rfc3339_us(&t);
        let label = key_label(&t);
        prop_assert!(label.len() <= KEY_LABEL_CHARS && t.starts_with(label));
        let registry = TenantRegistry::new([]);
        let header = format!("Bearer 00000000-0000-0000-0000-000000000000:{t}");
        for creds in [
            Credentials { header: Some(&b), query_key: None },
            Credentials { header: Some(t.as_bytes()), query_key: None },
            Credentials { header: Some(header.as_bytes()), query_key: Some(&t) },
        ] {
            let _ = registry.authenticate(creds);
        }
    }
}

#[test]
fn the_confirmed_case_a_long_non_ascii_key_is_a_bounded_error() {
    let body = format!("{{\"events\":[], \"{}\": 1, \"x\"", "é".repeat(300));
    match parse_envelope(body.as_bytes(), usize::MAX) {
        Err(EnvelopeError::Malformed { message, .. }) => {
            assert!(message.len() <= MAX_PARSE_MESSAGE_BYTES + 3, "{message}")
        }
        other => panic!("{other:?}"),
    }
}
