//! The query parser fed arbitrary text in every place a request carries
//! text (field names, metrics, dimensions, ranges, filter values and
//! patterns, time zones) and bytes that are not UTF-8: it answers a query
//! or a bounded 400 message, never a panic. The confirmed case: a secret key
//! holder sent `{"ééé…": 1}` and a byte cut of sonic-rs's message inside a
//! character aborted the whole engine (issue 19).

use proptest::prelude::*;
use query::{parse, QueryError};

const NOW: i64 = 1_700_000_000;
/// Longest message a refusal may carry: the longest of ours is a few
/// hundred bytes, quoted input is cut to 64 or 200.
const MAX_MESSAGE_BYTES: usize = 600;

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,120}",
        ("[éa€🦀\\\\\"(.*{}]{1,6}", 1usize..150).prop_map(|(unit, n)| unit.repeat(n)),
        Just("é".repeat(100)),
    ]
}

fn json(s: &str) -> String {
    sonic_rs::to_string(s).unwrap()
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hostile_text().prop_map(|t| format!("{{{}: 1}}", json(&t)).into_bytes()),
        hostile_text().prop_map(|t| format!("{{\"{t}\": 1}}").into_bytes()),
        hostile_text().prop_map(|t| {
            format!("{{\"metrics\":[{}],\"date_range\":\"7d\"}}", json(&t)).into_bytes()
        }),
        hostile_text().prop_map(|t| {
            format!("{{\"metrics\":[\"visitors\"],\"date_range\":{}}}", json(&t)).into_bytes()
        }),
        hostile_text().prop_map(|t| {
            format!(
                "{{\"metrics\":[\"visitors\"],\"date_range\":\"7d\",\"dimensions\":[{}]}}",
                json(&t)
            )
            .into_bytes()
        }),
        (hostile_text(), prop_oneof![Just("is"), Just("contains"), Just("matches"), Just("is_not")])
            .prop_map(|(t, op)| {
                format!(
                    "{{\"metrics\":[\"visitors\"],\"date_range\":\"7d\",\"filters\":[[\"{op}\",\"path\",[{}]]]}}",
                    json(&t)
                )
                .into_bytes()
            }),
        hostile_text().prop_map(|t| {
            format!(
                "{{\"metrics\":[\"visitors\"],\"date_range\":\"7d\",\"timezone\":{}}}",
                json(&t)
            )
            .into_bytes()
        }),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn any_body_is_a_query_or_a_bounded_refusal(body in bodies()) {
        match parse(&body, NOW) {
            Ok(q) => {
                let _ = query::sql::build(&q, "overwatch", uuid::Uuid::nil());
            }
            Err(QueryError::Invalid(m)) => {
                prop_assert!(m.len() <= MAX_MESSAGE_BYTES, "{} bytes: {m}", m.len());
            }
        }
    }
}

#[test]
fn the_confirmed_case_is_a_refusal() {
    let body = format!("{{\"{}\": 1}}", "é".repeat(100));
    let Err(QueryError::Invalid(m)) = parse(body.as_bytes(), NOW) else {
        panic!("accepted");
    };
    assert!(m.len() <= MAX_MESSAGE_BYTES, "{m}");
}
