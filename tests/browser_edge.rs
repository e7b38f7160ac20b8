//! The browser end of the edge, with real HTTP requests against the real
//! engine and broker: CORS preflight, origin allow-lists, write keys in the
//! query string (sendBeacon), and the SDK file.

mod common;

use std::io::Read;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const SHOP: &str = "https://shop.example";

fn session() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn ids(body: &[u8]) -> Vec<String> {
    let v: sonic_rs::Value = sonic_rs::from_slice(body).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn stored(engine: &Engine, want: &[String]) -> usize {
    engine
        .dump()
        .iter()
        .filter(|e| want.iter().any(|w| e["event"]["id"].as_str() == Some(w)))
        .count()
}

fn error_of(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn preflight_answers_with_the_cors_headers_and_no_body() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let pre = call(
        "OPTIONS",
        engine.port,
        "/ingest",
        &[
            ("Origin", SHOP),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        None,
    );
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(pre.header("Access-Control-Allow-Origin"), Some(SHOP));
    assert_eq!(
        pre.header("Access-Control-Allow-Methods"),
        Some("POST, OPTIONS")
    );
    // The headers asked for are allowed (analytics.js adds x-retry-count).
    assert_eq!(
        pre.header("Access-Control-Allow-Headers"),
        Some("authorization,content-type")
    );
    assert_eq!(pre.header("Access-Control-Max-Age"), Some("7200"));
    assert_eq!(
        pre.header("Access-Control-Allow-Private-Network"),
        Some("true")
    );
    assert_eq!(pre.header("Vary"), Some("Origin"));
    assert!(pre.header("Content-Length").is_none() && pre.raw.is_empty());

    // A preflight whose URL names a tenant that does not allow the origin.
    let named = format!("/ingest?key={SHOP_TENANT}:{SHOP_WRITE_KEY}");
    let evil = call(
        "OPTIONS",
        engine.port,
        &named,
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_eq!(
        (evil.status, error_of(&evil).as_str()),
        (403, "origin_not_allowed")
    );
    assert!(evil.header("Access-Control-Allow-Origin").is_none());
    let ok = call(
        "OPTIONS",
        engine.port,
        &named,
        &[("Origin", "https://www.shop.example")],
        None,
    );
    assert_eq!(ok.status, 204);

    // A preflight on a keep-alive connection leaves it usable, and its body
    // (if a client sends one) is never read: the connection closes instead.
    let mut raw = Raw::connect(engine.port);
    raw.send(format!("OPTIONS /ingest HTTP/1.1\r\nHost: t\r\nOrigin: {SHOP}\r\n\r\n").as_bytes());
    assert_eq!(raw.response().status, 204);
    raw.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(raw.response().status, 200);
    raw.send(b"OPTIONS /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let plain = raw.response();
    assert_eq!(
        (plain.status, plain.header("Allow")),
        (204, Some("POST, OPTIONS"))
    );
    assert!(raw.closed());
    // Other routes take no OPTIONS.
    assert_eq!(
        call("OPTIONS", engine.port, "/health", &[], None).status,
        405
    );
}

#[test]
fn origins_are_checked_per_tenant_and_every_answer_is_readable() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let shop_auth = format!("Bearer {SHOP_TENANT}:{SHOP_WRITE_KEY}");
    let send = |origin: &str, auth: &str, tenant: &str| {
        let body = batch(&[event(0, tenant, &session()), event(1, tenant, &session())]);
        let r = post(engine.port, Some(auth), &[("Origin", origin)], &body);
        (r, ids(&body))
    };

    // Allowed: exact and wildcard, and the answer is readable by the page.
    let (r, ok_ids) = send(SHOP, &shop_auth, SHOP_TENANT);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(SHOP));
    assert_eq!(
        r.header("Access-Control-Expose-Headers"),
        Some("Retry-After")
    );
    assert_eq!(r.header("Vary"), Some("Origin"));
    let (r, sub_ids) = send("https://m.shop.example", &shop_auth, SHOP_TENANT);
    assert_eq!(r.status, 200, "{}", r.body);

    // Refused: 403 with the reason, readable by the page, nothing stored.
    let mut refused_ids = Vec::new();
    for origin in [
        "https://evil.example",
        "http://shop.example",
        "https://shop.example:8443",
    ] {
        let (r, ids) = send(origin, &shop_auth, SHOP_TENANT);
        assert_eq!(
            (r.status, error_of(&r).as_str()),
            (403, "origin_not_allowed"),
            "{origin}"
        );
        assert!(r.json()["message"].as_str().unwrap().contains(origin));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
        refused_ids.extend(ids);
    }
    // Without an Origin (servers, curl) the allow-list does not apply.
    let body = batch(&[event(2, SHOP_TENANT, &session())]);
    let r = post(
        engine.port,
        Some(&format!("Bearer {SHOP_TENANT}:secret")),
        &[],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("Access-Control-Allow-Origin").is_none());
    // The dev tenant has no allow-list: any origin.
    let (r, _) = send(
        "https://anything.example",
        &format!("Bearer {DEV_TENANT}:{DEV_WRITE_KEY}"),
        DEV_TENANT,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Errors carry the CORS headers too (bad key, wrong media type).
    let (r, _) = send(SHOP, &format!("Bearer {SHOP_TENANT}:pk_wrong"), SHOP_TENANT);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(SHOP));
    let r = call(
        "POST",
        engine.port,
        "/ingest",
        &[
            ("Origin", SHOP),
            ("Content-Type", "text/html"),
            ("Authorization", &shop_auth),
        ],
        Some(b"x"),
    );
    assert_eq!(
        (r.status, r.header("Access-Control-Allow-Origin")),
        (415, Some(SHOP))
    );
    // A `file:` page (Origin: null) may send for a tenant without an
    // allow-list, and read the answer; a tenant with one refuses it.
    let (r, _) = send(
        "null",
        &format!("Bearer {DEV_TENANT}:{DEV_WRITE_KEY}"),
        DEV_TENANT,
    );
    assert_eq!(
        (r.status, r.header("Access-Control-Allow-Origin")),
        (200, Some("null"))
    );
    let (r, _) = send("null", &shop_auth, SHOP_TENANT);
    assert_eq!(
        (r.status, r.header("Access-Control-Allow-Origin")),
        (403, Some("null"))
    );
    // A malformed Origin is never echoed.
    let (r, _) = send("https://shop.example/evil\"", &shop_auth, SHOP_TENANT);
    assert_eq!(r.status, 403);
    assert!(r.header("Access-Control-Allow-Origin").is_none());

    let mut all = ok_ids.clone();
    all.extend(sub_ids);
    wait_for(
        "accepted events in the broker",
        std::time::Duration::from_secs(30),
        || stored(&engine, &all) == all.len(),
    );
    assert_eq!(
        stored(&engine, &refused_ids),
        0,
        "refused origins stored nothing"
    );
}

#[test]
fn write_keys_travel_in_the_query_string_secret_keys_never() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    // What navigator.sendBeacon sends: text/plain, no Authorization.
    let beacon = |target: &str, body: &[u8]| {
        call(
            "POST",
            engine.port,
            target,
            &[
                ("Content-Type", "text/plain;charset=UTF-8"),
                ("Origin", SHOP),
            ],
            Some(body),
        )
    };
    let body = batch(&[
        event(0, SHOP_TENANT, &session()),
        event(3, SHOP_TENANT, &session()),
    ]);
    let encoded = format!("/ingest?key={SHOP_TENANT}%3A{SHOP_WRITE_KEY}");
    let r = beacon(&encoded, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["events_accepted"].as_u64(), Some(2));
    let sent = ids(&body);
    wait_for(
        "beaconed events in the broker",
        std::time::Duration::from_secs(30),
        || stored(&engine, &sent) == 2,
    );

    let secret = batch(&[event(0, SHOP_TENANT, &session())]);
    let r = beacon(&format!("/ingest?key={SHOP_TENANT}:secret"), &secret);
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (401, "secret_key_in_url"),
        "{}",
        r.body
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Authorization header"));
    // Even beside a valid header.
    let r = call(
        "POST",
        engine.port,
        &format!("/ingest?key={DEV_TENANT}:secret"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", DEV_AUTH),
        ],
        Some(&batch(&[event(0, DEV_TENANT, &session())])),
    );
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (401, "secret_key_in_url")
    );
    let r = beacon(&format!("/ingest?key={SHOP_TENANT}:pk_wrong"), &secret);
    assert_eq!((r.status, error_of(&r).as_str()), (401, "unauthorized"));
    // The origin rule holds for beacons too.
    let r = call(
        "POST",
        engine.port,
        &encoded,
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        Some(&secret),
    );
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (403, "origin_not_allowed")
    );
    assert_eq!(stored(&engine, &ids(&secret)), 0);
}

#[test]
fn the_sdk_is_served_with_caching_and_gzip() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/dist/sdk.js")).unwrap();
    let mut raw = Raw::connect(engine.port);
    raw.send(b"GET /sdk.js HTTP/1.1\r\nHost: t\r\n\r\n");
    let plain = raw.response();
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(plain.header("Cache-Control"), Some("public, max-age=3600"));
    assert_eq!(
        plain.raw, committed,
        "the engine serves the committed build"
    );
    let etag = plain.header("ETag").unwrap().to_string();

    raw.send(b"GET /sdk/v1.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n");
    let gz = raw.response();
    assert_eq!(
        (gz.status, gz.header("Content-Encoding")),
        (200, Some("gzip"))
    );
    assert!(
        gz.raw.len() <= 6 * 1024,
        "SDK is {} B gzipped",
        gz.raw.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(gz.raw.as_slice())
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, committed);

    raw.send(
        format!("GET /sdk.js HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    let cached = raw.response();
    assert_eq!((cached.status, cached.raw.len()), (304, 0));
    assert_eq!(cached.header("ETag"), Some(etag.as_str()));
    raw.send(b"HEAD /sdk.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut rest = String::new();
    raw.reader.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\n"), "HEAD has no body: {rest}");
}
