//! The Segment and PostHog wire formats against the real engine (both
//! roles), the real broker and the real ClickHouse: bodies shaped exactly as
//! the libraries send them (recorded from segment-analytics-python,
//! @segment/analytics-node, analytics.js, posthog-node, posthog-js), each
//! event checked field by field in `events`, retries stored once, and the
//! refusals (secret keys, origins, rate) storing nothing. The libraries
//! themselves run in `tests/compat_libraries.rs`.

mod common;

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use sonic_rs::JsonValueTrait;

const SHOP: &str = "https://shop.example";

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// The dev tenant's rows, as `id|type|session|user|path|url|referrer|title|name|properties`
/// lines, ordered by event time.
fn rows(ch: &ClickHouse, expect: usize) -> Vec<String> {
    let sql = format!(
        "SELECT toString(event_id), event_type, toString(session_id), user_id, path, url, referrer, title, name, properties, \
         user_agent, locale, selector, element, text, href, depth_pct, lcp \
         FROM overwatch.events WHERE tenant_id = toUUID('{DEV_TENANT}') ORDER BY event_time_us, event_id"
    );
    let mut got = Vec::new();
    wait_until(Duration::from_secs(60), || {
        got = ch
            .query(&sql)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        got.len() >= expect
    });
    got
}

fn cols(row: &str) -> Vec<&str> {
    row.split('\t').collect()
}

fn v5(value: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::parse_str(DEV_TENANT).unwrap(),
        value.as_bytes(),
    )
    .to_string()
}

fn now_iso(offset_secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn segment_calls_land_once_field_by_field_and_retries_store_nothing_twice() {
    let broker = Broker::start();
    let ch = ClickHouse::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let anon = "0c6a4b1e-5f7d-4f55-9d7a-1b1f4c3e2a10";
    let (m1, m2, m3) = (
        uuid::Uuid::new_v4().to_string(),
        "node-next-1717000000000-3b2e1c".to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    // segment-analytics-python: Basic auth, gzip, `writeKey` in the body too.
    let batch = format!(
        r#"{{"batch":[
          {{"type":"page","messageId":"{m1}","anonymousId":"{anon}","timestamp":"{t1}","name":"Home",
            "properties":{{"path":"/pricing","url":"https://a.example/pricing?x=1","referrer":"https://r.example/","title":"Pricing"}},
            "context":{{"userAgent":"Mozilla/5.0 test","locale":"de-DE","campaign":{{"source":"mail","medium":"email"}},
                        "library":{{"name":"analytics-python","version":"2.4.0"}}}}}},
          {{"type":"track","messageId":"{m2}","anonymousId":"{anon}","userId":42,"event":"Signed Up",
            "timestamp":"{t2}","properties":{{"plan":"pro","seats":3}}}},
          {{"type":"identify","messageId":"{m3}","anonymousId":"{anon}","userId":"u-42","timestamp":"{t3}",
            "traits":{{"email":"a@b.example"}},"context":{{"page":{{"path":"/account","url":"https://a.example/account"}}}}}}
        ],"sentAt":"{sent}","writeKey":"{DEV_WRITE_KEY}"}}"#,
        t1 = now_iso(-3),
        t2 = now_iso(-2),
        t3 = now_iso(-1),
        sent = now_iso(0),
    );
    let auth = basic(DEV_WRITE_KEY);
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        Some(&gzip(batch.as_bytes())),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["success"].as_bool(), Some(true), "{r:?}");
    // The library's retry: the same bytes again, and the Node library's
    // shape (key only in the body, no Basic header).
    let again = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[("Content-Type", "application/json")],
        Some(batch.as_bytes()),
    );
    assert_eq!(again.status, 200, "{again:?}");
    let got = rows(&ch, 3);
    std::thread::sleep(Duration::from_secs(1));
    let got_again = rows(&ch, 3);
    assert_eq!(got, got_again);
    assert_eq!(got.len(), 3, "each event once: {got:#?}");
    let page = cols(&got[0]);
    assert_eq!(page[0], m1);
    assert_eq!(page[1], "pageview");
    assert_eq!(page[2], anon);
    assert_eq!(
        &page[4..8],
        [
            "/pricing",
            "https://a.example/pricing?x=1&utm_source=mail&utm_medium=email",
            "https://r.example/",
            "Pricing"
        ]
    );
    assert_eq!((page[10], page[11]), ("Mozilla/5.0 test", "de-DE"));
    let track = cols(&got[1]);
    assert_eq!(track[0], v5(&m2), "a non-UUID messageId is its UUID v5");
    assert_eq!(
        (track[1], track[3], track[8]),
        ("custom", "42", "Signed Up")
    );
    assert_eq!(track[9], r#"{"plan":"pro","seats":3}"#);
    let identify = cols(&got[2]);
    assert_eq!(
        (identify[1], identify[3], identify[8]),
        ("custom", "u-42", "identify")
    );
    assert_eq!(identify[9], r#"{"email":"a@b.example"}"#);
    assert_eq!(
        (identify[4], identify[5]),
        ("/account", "https://a.example/account"),
        "where the user was when identified"
    );

    // analytics.js: one event per call, `text/plain`, key in the event, a
    // page of another origin; the answer is readable by that page.
    let m4 = uuid::Uuid::new_v4().to_string();
    let one = format!(
        r#"{{"type":"track","event":"Element Clicked","messageId":"{m4}","anonymousId":"{anon}","timestamp":"{t}",
            "properties":{{"selector":"button#buy","element":"button","text":"Buy","href":"/cart"}},
            "context":{{"page":{{"path":"/p/1","url":"https://a.example/p/1","referrer":"","title":"P1"}}}},
            "writeKey":"{DEV_WRITE_KEY}","sentAt":"{t}"}}"#,
        t = now_iso(0)
    );
    let r = call(
        "POST",
        engine.port,
        "/v1/t",
        &[("Content-Type", "text/plain"), ("Origin", SHOP)],
        Some(one.as_bytes()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(SHOP));
    let got = rows(&ch, 4);
    let click = cols(&got[3]);
    assert_eq!(
        (click[0], click[1], click[4]),
        (m4.as_str(), "click", "/p/1")
    );
    assert_eq!(&click[12..16], ["button#buy", "button", "Buy", "/cart"]);

    // An event without the fields it needs is refused by index; the others land.
    let mixed = format!(
        r#"{{"batch":[{{"type":"track","messageId":"{m}","anonymousId":"{anon}","event":"Ok","timestamp":"{t}"}},
                     {{"type":"track","anonymousId":"{anon}","timestamp":"{t}"}},
                     {{"type":"teleport","anonymousId":"{anon}"}}],"writeKey":"{DEV_WRITE_KEY}"}}"#,
        m = uuid::Uuid::new_v4(),
        t = now_iso(0)
    );
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[],
        Some(mixed.as_bytes()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(
        (j["events_accepted"].as_u64(), j["events_rejected"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(j["errors"][0]["field"].as_str(), Some("event"));
    assert_eq!(j["errors"][1]["reason"].as_str(), Some("unknown_type"));
    rows(&ch, 5);
    let metrics = get(engine.port, "/metrics").unwrap();
    let text = String::from_utf8_lossy(&metrics.raw).into_owned();
    // The edge counts what it delivered to the broker: the retried batch
    // twice (the sink stored it once).
    for line in [
        "ingest_compat_events_total{api=\"segment\",kind=\"page\"} 2",
        "ingest_compat_events_total{api=\"segment\",kind=\"track\"} 4",
        "ingest_compat_dropped_total{api=\"segment\",reason=\"unknown_type\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in the metrics");
    }
}

#[test]
fn posthog_bodies_land_in_every_wrapping_and_retries_store_nothing_twice() {
    let broker = Broker::start();
    let ch = ClickHouse::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let session = "0190a5c8-0b9c-7c3e-8e3a-1b2c3d4e5f60";
    let (u1, u2, u3) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    // posthog-node: `/batch/`, api_key in the body, gzip by Content-Encoding.
    let batch = format!(
        r#"{{"api_key":"{DEV_WRITE_KEY}","batch":[
          {{"event":"$pageview","distinct_id":"user-7","uuid":"{u1}","timestamp":"{t1}","type":"capture",
            "properties":{{"$current_url":"https://a.example/docs?utm_source=x","$session_id":"{session}","$referrer":"$direct","title":"Docs","$lib":"posthog-node"}}}},
          {{"event":"plan upgraded","distinct_id":"user-7","uuid":"{u2}","timestamp":"{t2}",
            "properties":{{"$session_id":"{session}","plan":"team"}}}}
        ],"sent_at":"{sent}"}}"#,
        t1 = now_iso(-2),
        t2 = now_iso(-1),
        sent = now_iso(0)
    );
    let zipped = gzip(batch.as_bytes());
    for _ in 0..2 {
        let r = call(
            "POST",
            engine.port,
            "/batch/",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            Some(&zipped),
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["status"].as_u64(), Some(1));
    }
    // posthog-js: `/e/`, an array, gzip with no header at all, the key in
    // `properties.token`, `offset` instead of a timestamp.
    let js = format!(
        r#"[{{"event":"$autocapture","uuid":"{u3}","offset":1500,"properties":{{"token":"{DEV_WRITE_KEY}","distinct_id":"anon-1",
             "$session_id":"{session}","$event_type":"click","$current_url":"https://a.example/docs","$pathname":"/docs",
             "$elements":[{{"tag_name":"a","$el_text":"Next","attr__href":"/next","attr__id":"nav"}}],"$browser_language":"en-US"}}}}]"#
    );
    let r = call(
        "POST",
        engine.port,
        "/e/?ip=1&_=1717000000000&ver=1.449.2",
        &[("Content-Type", "text/plain"), ("Origin", SHOP)],
        Some(&gzip(js.as_bytes())),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(SHOP));
    // The older form transport: `data=<base64 of JSON>`.
    let u4 = uuid::Uuid::new_v4().to_string();
    let old = format!(
        r#"{{"event":"$identify","uuid":"{u4}","timestamp":"{t}","properties":{{"token":"{DEV_WRITE_KEY}","distinct_id":"user-7","$set":{{"email":"x@y.example"}}}}}}"#,
        t = now_iso(0)
    );
    let form = format!(
        "data={}",
        form_escape(&base64::engine::general_purpose::STANDARD.encode(old))
    );
    let r = call(
        "POST",
        engine.port,
        "/e/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let got = rows(&ch, 4);
    std::thread::sleep(Duration::from_secs(1));
    let got = {
        let again = rows(&ch, 4);
        assert_eq!(got, again);
        again
    };
    assert_eq!(got.len(), 4, "{got:#?}");
    let by_id = |id: &str| {
        got.iter()
            .map(|r| cols(r))
            .find(|c| c[0] == id)
            .unwrap_or_else(|| panic!("{id} in {got:#?}"))
    };
    let page = by_id(&u1);
    assert_eq!((page[1], page[2], page[3]), ("pageview", session, "user-7"));
    assert_eq!(
        (page[4], page[5], page[7]),
        ("/docs", "https://a.example/docs?utm_source=x", "Docs")
    );
    let custom = by_id(&u2);
    assert_eq!((custom[1], custom[8]), ("custom", "plan upgraded"));
    assert!(custom[9].contains(r#""plan":"team""#), "{}", custom[9]);
    let click = by_id(&u3);
    assert_eq!(
        (click[1], click[3], click[4], click[11]),
        ("click", "anon-1", "/docs", "en-US")
    );
    assert_eq!(&click[12..16], ["#nav", "a", "Next", "/next"]);
    let identify = by_id(&u4);
    assert_eq!(
        (identify[1], identify[3], identify[8]),
        ("custom", "user-7", "identify")
    );
}

/// `application/x-www-form-urlencoded` escaping of a base64 text.
fn form_escape(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[test]
fn public_paths_refuse_secret_keys_foreign_origins_and_answer_the_start_up_documents() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let event = |key: &str| {
        format!(
            r#"{{"batch":[{{"type":"track","event":"x","anonymousId":"a","messageId":"{}","timestamp":"{}"}}],"writeKey":"{key}"}}"#,
            uuid::Uuid::new_v4(),
            now_iso(0)
        )
    };
    // The shop's write key from a page of another site: 403, readable.
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[("Origin", "https://evil.example")],
        Some(event(SHOP_WRITE_KEY).as_bytes()),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"].as_str(), Some("origin_not_allowed"));
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://evil.example")
    );
    // The same from the shop's own page is fine.
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[("Origin", SHOP)],
        Some(event(SHOP_WRITE_KEY).as_bytes()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A Basic header naming an unknown key is refused on the head.
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[("Authorization", &basic("pk_nope"))],
        Some(event(DEV_WRITE_KEY).as_bytes()),
    );
    assert_eq!(r.status, 401, "{r:?}");
    // No key anywhere.
    let r = call(
        "POST",
        engine.port,
        "/batch/",
        &[],
        Some(br#"{"batch":[{"event":"x","distinct_id":"d"}]}"#),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("unauthorized"))
    );
    // Garbage is a 400 that says so, not a hang or a panic.
    let r = call(
        "POST",
        engine.port,
        "/e/",
        &[],
        Some(b"\x1f\x8b\x08garbage"),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = call("POST", engine.port, "/v1/batch", &[], Some(b"{\"batch\":"));
    assert_eq!(r.status, 400, "{r:?}");

    // A secret key in the URL is refused, whatever the body says.
    let r = call(
        "POST",
        engine.port,
        &format!("/e/?key={DEV_TENANT}:secret"),
        &[],
        Some(event(DEV_WRITE_KEY).as_bytes()),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("secret_key_in_url"))
    );
    // A body of more events than a batch may hold is refused before they
    // are collected (a review measured 200 MB for 8 MiB of `0,`).
    let many = format!("[{}0]", "0,".repeat(400_000));
    let r = call(
        "POST",
        engine.port,
        "/e/",
        &[("Content-Encoding", "gzip")],
        Some(&gzip(many.as_bytes())),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("batch_too_large")),
        "{r:?}"
    );
    let r = call(
        "POST",
        engine.port,
        "/v1/batch",
        &[("Content-Encoding", "gzip")],
        Some(&gzip(
            format!(r#"{{"writeKey":"{DEV_WRITE_KEY}","batch":{many}}}"#).as_bytes(),
        )),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("batch_too_large")),
        "{r:?}"
    );
    // A property of another type than the engine reads loses nothing but
    // that field.
    let odd = format!(
        r#"[{{"event":"$pageview","uuid":"{}","properties":{{"token":"{DEV_WRITE_KEY}","distinct_id":4.5,
            "$current_url":"https://a.example/x","title":5,"$screen_width":"1920","$screen_height":1080,"$elements":"nope"}}}}]"#,
        uuid::Uuid::new_v4()
    );
    let r = call("POST", engine.port, "/e/", &[], Some(odd.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json().get("errors").is_none(), "{r:?}");

    // Start-up documents.
    let s = call(
        "GET",
        engine.port,
        &format!("/v1/projects/{DEV_WRITE_KEY}/settings"),
        &[("Origin", SHOP), ("Host", "engine.example:8080")],
        None,
    );
    assert_eq!(s.status, 200, "{s:?}");
    let j = s.json();
    assert_eq!(
        j["integrations"]["Segment.io"]["apiHost"].as_str(),
        Some("engine.example:8080/v1")
    );
    // Not a loopback host, no proxy header: https (a page over https
    // cannot send to http).
    assert_eq!(
        j["integrations"]["Segment.io"]["protocol"].as_str(),
        Some("https")
    );
    assert_eq!(s.header("Access-Control-Allow-Origin"), Some(SHOP));
    let unknown = call(
        "GET",
        engine.port,
        "/v1/projects/pk_nope/settings",
        &[],
        None,
    );
    assert_eq!(unknown.status, 404);
    let js = call(
        "GET",
        engine.port,
        &format!("/array/{DEV_WRITE_KEY}/config.js"),
        &[],
        None,
    );
    assert_eq!(js.status, 200);
    let body = String::from_utf8_lossy(&js.raw).into_owned();
    assert!(
        body.contains(r#"window._POSTHOG_REMOTE_CONFIG["pk_development"]"#),
        "{body}"
    );
    let evil = call(
        "GET",
        engine.port,
        "/array/%3Cscript%3E/config.js",
        &[],
        None,
    );
    assert_eq!(evil.status, 404);
    let flags = call(
        "POST",
        engine.port,
        "/flags/?v=2",
        &[("Content-Type", "application/json"), ("Origin", SHOP)],
        Some(br#"{"token":"pk_development","distinct_id":"d"}"#),
    );
    assert_eq!(flags.status, 200, "{flags:?}");
    // analytics.js's retry adds `x-retry-count`: its preflight is allowed.
    let pre = call(
        "OPTIONS",
        engine.port,
        "/v1/t",
        &[
            ("Origin", SHOP),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type,x-retry-count",
            ),
        ],
        None,
    );
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("Access-Control-Allow-Headers"),
        Some("authorization,content-type,x-retry-count")
    );
    assert!(flags.json()["flags"].is_object());
    assert_eq!(flags.header("Access-Control-Allow-Origin"), Some(SHOP));
}
