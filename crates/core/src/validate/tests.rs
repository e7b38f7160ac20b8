//! Unit and property tests of the validation rules: each reason from a real
//! event, and that nothing panics on arbitrary input.

use super::*;
use crate::event::{parse_envelope, parse_event};
use crate::timestamp::parse_rfc3339_us;
use proptest::prelude::*;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const NOW: &str = "2026-11-27T12:00:00Z";

fn ctx(limits: &Limits, sent_at: Option<i64>, retention_days: u32) -> BatchContext<'_> {
    BatchContext::new(
        Uuid::nil(),
        parse_rfc3339_us(NOW).unwrap(),
        sent_at,
        retention_days,
        limits,
    )
}

fn base(extra: &str, ty: &str) -> String {
    format!(
        r#"{{"id":"550e8400-e29b-41d4-a716-446655440000","tenant_id":"{TENANT}",
        "session_id":"11111111-1111-1111-1111-111111111111",
        "timestamp":"2026-11-27T11:59:00Z","type":"{ty}"{extra}}}"#
    )
}

fn check_with(json: &str, sent_at: Option<i64>, retention: u32) -> Result<u8, Rejection> {
    let limits = Limits::default();
    let body = format!(r#"{{"events":[{json}]}}"#);
    let env = parse_envelope(body.as_bytes(), usize::MAX).unwrap();
    let events = env.events.unwrap();
    let raw = parse_event(&events[0]).unwrap();
    validate_event(&raw, &ctx(&limits, sent_at, retention)).map(|r| r.event_type)
}

fn check(json: &str) -> Result<u8, Rejection> {
    check_with(json, None, 30)
}

fn rej(reason: Reason, field: &'static str) -> Result<u8, Rejection> {
    Err(Rejection { reason, field })
}

#[test]
fn accepts_each_type() {
    assert_eq!(
        check(&base(r#","path":"/","title":"Home""#, "pageview")),
        Ok(0)
    );
    assert_eq!(
        check(&base(r#","selector":"button","x":1,"y":2"#, "click")),
        Ok(1)
    );
    assert_eq!(check(&base(r#","element":"a""#, "click")), Ok(1));
    assert_eq!(check(&base(r#","depth_pct":100"#, "scroll")), Ok(2));
    assert_eq!(
        check(&base(r#","lcp":1200.5,"cls":0.1"#, "performance")),
        Ok(3)
    );
    assert_eq!(
        check(&base(
            r#","name":"signup","properties":{"plan":"pro"}"#,
            "custom"
        )),
        Ok(4)
    );
}

#[test]
fn the_reference_example_is_valid_for_a_long_retention() {
    let ev = r#"{"id":"550e8400-e29b-41d4-a716-446655440000",
     "tenant_id":"00000000-0000-0000-0000-000000000000",
     "session_id":"11111111-1111-1111-1111-111111111111",
     "timestamp":"2024-01-01T00:00:00Z","type":"pageview",
     "title":"Home","path":"/"}"#;
    assert_eq!(check_with(ev, None, 3650), Ok(0));
    assert_eq!(
        check_with(ev, None, 365),
        rej(Reason::TimestampTooOld, "timestamp")
    );
}

#[test]
fn required_common_fields() {
    let no_id = base("", "pageview").replace(r#""id":"550e8400-e29b-41d4-a716-446655440000","#, "");
    assert_eq!(check(&no_id), rej(Reason::MissingField, "id"));
    let no_session = base(r#","path":"/""#, "pageview").replace(
        r#""session_id":"11111111-1111-1111-1111-111111111111","#,
        "",
    );
    assert_eq!(check(&no_session), rej(Reason::MissingField, "session_id"));
    let no_type = base(r#","path":"/""#, "pageview").replace(r#","type":"pageview""#, "");
    assert_eq!(check(&no_type), rej(Reason::MissingField, "type"));
    let no_ts =
        base(r#","path":"/""#, "pageview").replace(r#""timestamp":"2026-11-27T11:59:00Z","#, "");
    assert_eq!(check(&no_ts), rej(Reason::MissingField, "timestamp"));
}

#[test]
fn uuids_tenant_and_type() {
    let bad = base(r#","path":"/""#, "pageview").replace("550e8400-e29b", "zzze8400-e29b");
    assert_eq!(check(&bad), rej(Reason::InvalidUuid, "id"));
    let other =
        base(r#","path":"/""#, "pageview").replace(TENANT, "22222222-2222-2222-2222-222222222222");
    assert_eq!(check(&other), rej(Reason::TenantMismatch, "tenant_id"));
    assert_eq!(check(&base("", "hover")), rej(Reason::UnknownType, "type"));
}

#[test]
fn per_type_rules() {
    assert_eq!(
        check(&base("", "pageview")),
        rej(Reason::MissingField, "path")
    );
    assert_eq!(
        check(&base(r#","path":"home""#, "pageview")),
        rej(Reason::InvalidPath, "path")
    );
    assert_eq!(
        check(&base("", "click")),
        rej(Reason::MissingField, "selector")
    );
    assert_eq!(
        check(&base("", "scroll")),
        rej(Reason::MissingField, "depth_pct")
    );
    assert_eq!(
        check(&base(r#","depth_pct":101"#, "scroll")),
        rej(Reason::OutOfRange, "depth_pct")
    );
    assert_eq!(
        check(&base(r#","depth_pct":-1"#, "scroll")),
        rej(Reason::OutOfRange, "depth_pct")
    );
    assert_eq!(
        check(&base("", "performance")),
        rej(Reason::MissingMetric, "lcp")
    );
    assert_eq!(
        check(&base(r#","fid":-3"#, "performance")),
        rej(Reason::OutOfRange, "fid")
    );
    assert_eq!(
        check(&base("", "custom")),
        rej(Reason::MissingField, "name")
    );
    assert_eq!(
        check(&base(r#","name":"","properties":{}"#, "custom")),
        rej(Reason::MissingField, "name")
    );
    assert_eq!(
        check(&base(r#","name":" \t\n""#, "custom")),
        rej(Reason::MissingField, "name")
    );
    assert_eq!(
        check(&base(r#","path":"""#, "pageview")),
        rej(Reason::MissingField, "path")
    );
    assert_eq!(
        check(&base(r#","path":"  ""#, "pageview")),
        rej(Reason::MissingField, "path")
    );
    assert_eq!(
        check(&base(r#","selector":"","element":" ""#, "click")),
        rej(Reason::MissingField, "selector")
    );
    assert_eq!(
        check(&base(r#","selector":"","element":"a""#, "click")),
        Ok(1)
    );
    assert_eq!(
        check(&base(r#","path":"/""#, "pageview").replace(r#""type":"pageview""#, r#""type":"""#)),
        rej(Reason::MissingField, "type")
    );
    assert_eq!(
        check(&base(r#","name":"n","properties":[1]"#, "custom")),
        rej(Reason::InvalidProperties, "properties")
    );
    assert_eq!(
        check(&base(r#","selector":"b","x":-5"#, "click")),
        rej(Reason::OutOfRange, "x")
    );
    assert_eq!(
        check(&base(
            r#","path":"/","screen":{"width":1e9,"height":10}"#,
            "pageview"
        )),
        rej(Reason::OutOfRange, "screen")
    );
}

#[test]
fn string_limits() {
    let long = "a".repeat(1025);
    assert_eq!(
        check(&base(
            &format!(r#","path":"/","title":"{long}""#),
            "pageview"
        )),
        rej(Reason::StringTooLong, "title")
    );
    // URLs have their own, larger limit.
    assert_eq!(
        check(&base(&format!(r#","path":"/","url":"{long}""#), "pageview")),
        Ok(0)
    );
    let huge = "a".repeat(4097);
    assert_eq!(
        check(&base(&format!(r#","path":"/","url":"{huge}""#), "pageview")),
        rej(Reason::StringTooLong, "url")
    );
    let big_props = format!(
        r#","name":"n","properties":{{"k":"{}"}}"#,
        "v".repeat(17_000)
    );
    assert_eq!(
        check(&base(&big_props, "custom")),
        rej(Reason::StringTooLong, "properties")
    );
    let limits = Limits::default();
    assert_eq!(check_event_size(limits.max_event_bytes, &limits), Ok(()));
    assert_eq!(
        check_event_size(limits.max_event_bytes + 1, &limits),
        Err(Rejection {
            reason: Reason::EventTooLarge,
            field: ""
        })
    );
}

#[test]
fn timestamps_and_skew() {
    let future =
        base(r#","path":"/""#, "pageview").replace("2026-11-27T11:59:00Z", "2026-11-27T13:00:00Z");
    assert_eq!(check(&future), rej(Reason::TimestampInFuture, "timestamp"));
    // The client clock is one hour fast: sent_at says 13:00 while we receive at 12:00.
    let sent = parse_rfc3339_us("2026-11-27T13:00:30Z");
    assert_eq!(check_with(&future, sent, 30), Ok(0));
    let garbage = base(r#","path":"/""#, "pageview").replace("2026-11-27T11:59:00Z", "yesterday");
    assert_eq!(check(&garbage), rej(Reason::InvalidTimestamp, "timestamp"));
    let old =
        base(r#","path":"/""#, "pageview").replace("2026-11-27T11:59:00Z", "2026-10-01T00:00:00Z");
    assert_eq!(check(&old), rej(Reason::TimestampTooOld, "timestamp"));
}

#[test]
fn escaped_strings_are_accepted() {
    assert_eq!(
        check(&base(r#","path":"/a\u00e9","title":"q\"t""#, "pageview")),
        Ok(0)
    );
}

#[test]
fn reasons_index_all() {
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(Reason::NAMES[i], r.as_str());
    }
}

proptest! {
    #[test]
    fn parse_and_validate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits::default();
        let c = ctx(&limits, None, 30);
        if let Ok(env) = parse_envelope(&bytes, usize::MAX) {
            for raw in env.events.iter().flatten() {
                if let Ok(ev) = parse_event(raw) {
                    let _ = validate_event(&ev, &c);
                }
            }
        }
    }

    #[test]
    fn arbitrary_field_values_never_panic(
        id in ".{0,40}", ts in ".{0,40}", ty in "(pageview|click|scroll|performance|custom|.{0,8})",
        n in -1e4f64..1e4, path in ".{0,20}",
    ) {
        let json = sonic_rs::to_string(&sonic_rs::json!({
            "events": [{"id": id, "tenant_id": TENANT, "session_id": id, "timestamp": ts,
                        "type": ty, "path": path, "depth_pct": n, "lcp": n, "name": path}]
        })).unwrap();
        let limits = Limits::default();
        let c = ctx(&limits, None, 30);
        let env = parse_envelope(json.as_bytes(), usize::MAX).unwrap();
        let events = env.events.unwrap();
        if let Ok(ev) = parse_event(&events[0]) {
            let _ = validate_event(&ev, &c);
        }
    }
}
