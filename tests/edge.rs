//! The durable edge against a real broker: HTTP in, records in the topic.

mod common;

use std::io::Write;
use std::time::Duration;

use common::attacks::*;
use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

const SESSION: &str = "11111111-1111-1111-1111-111111111111";

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("{k} missing in {v:?}"))
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{k} missing in {v:?}"))
}

fn events_of_batch(dump: &[Value], batch_id: &str) -> Vec<Value> {
    dump.iter()
        .filter(|l| l.get("batch_id").and_then(|b| b.as_str()) == Some(batch_id))
        .map(|l| l.get("event").unwrap().clone())
        .collect()
}

#[test]
fn reference_example_is_accepted_and_stored() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let body = br#"{"events":[{"id":"550e8400-e29b-41d4-a716-446655440000",
         "tenant_id":"00000000-0000-0000-0000-000000000000",
         "session_id":"11111111-1111-1111-1111-111111111111",
         "timestamp":"2024-01-01T00:00:00Z","type":"pageview",
         "title":"Home","path":"/"}]}"#;
    let r = post(engine.port, Some(DEV_AUTH), &[], body);
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(s(&j, "status"), "success");
    assert!(uuid::Uuid::parse_str(s(&j, "batch_id")).is_ok());
    assert_eq!(n(&j, "events_accepted"), 1);
    assert_eq!(n(&j, "events_rejected"), 0);
    assert!(j.get("ingest_latency_ms").unwrap().is_u64());
    assert!(j.get("errors").is_none());

    let dump = engine.dump();
    let stored = events_of_batch(&dump, s(&j, "batch_id"));
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(s(e, "id"), "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(s(e, "tenant_id"), DEV_TENANT);
    assert_eq!(s(e, "session_id"), SESSION);
    assert_eq!(s(e, "timestamp"), "2024-01-01T00:00:00Z");
    assert_eq!(s(e, "type"), "pageview");
    assert_eq!(s(e, "title"), "Home");
    assert_eq!(s(e, "path"), "/");
}

#[test]
fn mixed_batch_reports_exact_indexes_and_the_broker_holds_exactly_the_rest() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let mut events: Vec<Value> = (0..100).map(|i| event(i, DEV_TENANT, SESSION)).collect();
    let mut expected = vec![
        (3, "invalid_uuid", "id"),
        (17, "missing_field", "path"),
        (42, "tenant_mismatch", "tenant_id"),
        (55, "out_of_range", "depth_pct"),
        (63, "missing_metric", "lcp"),
        (71, "invalid_timestamp", "timestamp"),
        (88, "unknown_type", "type"),
        (90, "malformed_event", "x"),
        (99, "timestamp_in_future", "timestamp"),
    ];
    events[3]
        .as_object_mut()
        .unwrap()
        .insert("id", "not-a-uuid");
    events[15] = event(15, DEV_TENANT, SESSION); // pageview
    events[17] = event(15, DEV_TENANT, SESSION);
    events[17].as_object_mut().unwrap().remove(&"path");
    events[42]
        .as_object_mut()
        .unwrap()
        .insert("tenant_id", "22222222-2222-2222-2222-222222222222");
    events[55] = event(2, DEV_TENANT, SESSION);
    events[55].as_object_mut().unwrap().insert("depth_pct", 140);
    events[63] = sonic_rs::json!({"id": uuid::Uuid::new_v4().to_string(), "tenant_id": DEV_TENANT,
        "session_id": SESSION, "timestamp": now_rfc3339(), "type": "performance"});
    events[71]
        .as_object_mut()
        .unwrap()
        .insert("timestamp", "01/02/2026");
    events[88].as_object_mut().unwrap().insert("type", "hover");
    events[90] = event(1, DEV_TENANT, SESSION);
    events[90].as_object_mut().unwrap().insert("x", "left");
    events[99]
        .as_object_mut()
        .unwrap()
        .insert("timestamp", "2099-01-01T00:00:00Z");
    // A second session in the same batch goes to its own record.
    let other_session = "55555555-5555-5555-5555-555555555555";
    events[20]
        .as_object_mut()
        .unwrap()
        .insert("session_id", other_session);
    // An escaped string is stored decoded.
    events[25] = event(0, DEV_TENANT, SESSION);
    events[25]
        .as_object_mut()
        .unwrap()
        .insert("title", "Say \"hi\" \u{e9}");

    let r = post(engine.port, Some(DEV_AUTH), &[], &batch(&events));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(s(&j, "status"), "partial");
    assert_eq!(n(&j, "events_accepted"), 91);
    assert_eq!(n(&j, "events_rejected"), 9);
    let errors: Vec<(u64, String, String)> = j
        .get("errors")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                n(e, "index"),
                s(e, "reason").to_string(),
                s(e, "field").to_string(),
            )
        })
        .collect();
    expected.sort();
    let expected: Vec<(u64, String, String)> = expected
        .iter()
        .map(|(i, r, f)| (*i as u64, r.to_string(), f.to_string()))
        .collect();
    assert_eq!(errors, expected);

    let dump = engine.dump();
    let stored = events_of_batch(&dump, s(&j, "batch_id"));
    assert_eq!(stored.len(), 91);
    let rejected: Vec<u64> = expected.iter().map(|e| e.0).collect();
    for (i, sent) in events.iter().enumerate() {
        let id = s(sent, "id");
        let found: Vec<&Value> = stored.iter().filter(|e| s(e, "id") == id).collect();
        if rejected.contains(&(i as u64)) {
            assert!(found.is_empty(), "rejected event {i} was stored");
            continue;
        }
        assert_eq!(found.len(), 1, "event {i} stored {} times", found.len());
        let got = found[0];
        for key in [
            "session_id",
            "type",
            "path",
            "title",
            "selector",
            "text",
            "name",
            "url",
            "user_agent",
            "locale",
        ] {
            assert_eq!(
                got.get(key).and_then(|v| v.as_str()),
                sent.get(key).and_then(|v| v.as_str()),
                "event {i} field {key}"
            );
        }
        for key in ["x", "y", "depth_pct", "lcp", "fcp", "cls", "ttfb"] {
            assert_eq!(
                got.get(key).and_then(|v| v.as_f64()),
                sent.get(key).and_then(|v| v.as_f64()),
                "event {i} field {key}"
            );
        }
        if let Some(p) = sent.get("properties") {
            assert_eq!(got.get("properties").unwrap(), p, "event {i} properties");
        }
    }
    // Records are keyed by tenant+session: both sessions' events were stored,
    // each session wholly in one partition.
    let partitions = |session: &str| -> Vec<u64> {
        let mut p: Vec<u64> = dump
            .iter()
            .filter(|l| {
                l.get("event").unwrap().get("session_id").unwrap().as_str() == Some(session)
            })
            .map(|l| n(l, "partition"))
            .collect();
        p.dedup();
        p
    };
    assert_eq!(partitions(SESSION).len(), 1);
    assert_eq!(partitions(other_session).len(), 1);
}

#[test]
fn every_error_status_comes_from_a_real_request() {
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_HTTP__MAX_BODY_BYTES", "65536"),
            ("INGESTION_HTTP__MAX_BATCH_EVENTS", "50"),
        ],
    );
    let port = engine.port;
    let good = batch(&[event(0, DEV_TENANT, SESSION)]);
    let check = |r: Resp, status: u16, error: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let j = r.json();
        assert_eq!(s(&j, "status"), "error", "{}", r.body);
        if !error.is_empty() {
            assert_eq!(s(&j, "error"), error, "{}", r.body);
        }
        assert!(!s(&j, "message").is_empty());
        r
    };
    check(
        post(port, Some(DEV_AUTH), &[], b"{\"events\":[{"),
        400,
        "invalid_json",
    );
    check(post(port, Some(DEV_AUTH), &[], b"[1,2]"), 400, "");
    check(
        post(port, Some(DEV_AUTH), &[], b"{\"events\":[]}"),
        400,
        "empty_batch",
    );
    check(
        post(port, Some(DEV_AUTH), &[], b"{\"event\":[]}"),
        400,
        "invalid_batch",
    );
    let r = check(post(port, None, &[], &good), 401, "unauthorized");
    assert!(r.header("www-authenticate").is_some());
    check(
        post(
            port,
            Some("Bearer 00000000-0000-0000-0000-000000000000:wrong"),
            &[],
            &good,
        ),
        401,
        "unauthorized",
    );
    check(
        post(port, Some("Basic Zm9vOmJhcg=="), &[], &good),
        401,
        "unauthorized",
    );
    let disabled = format!("Bearer {DISABLED_TENANT}:secret");
    check(
        post(port, Some(&disabled), &[], &good),
        403,
        "tenant_disabled",
    );
    check(get(port, "/nope").unwrap(), 404, "not_found");
    let r = check(get(port, "/ingest").unwrap(), 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    let big = vec![b' '; 70_000];
    check(post(port, Some(DEV_AUTH), &[], &big), 413, "body_too_large");
    let many: Vec<Value> = (0..51).map(|i| event(i, DEV_TENANT, SESSION)).collect();
    check(
        post(port, Some(DEV_AUTH), &[], &batch(&many)),
        413,
        "batch_too_large",
    );
    check(
        post(
            port,
            Some(DEV_AUTH),
            &[("Content-Type", "text/html")],
            &good,
        ),
        415,
        "unsupported_media_type",
    );
    check(
        post(port, Some(DEV_AUTH), &[("Content-Encoding", "br")], &good),
        415,
        "unsupported_encoding",
    );
    // All events rejected: 400 with the per-event reasons.
    let mut bad = event(0, DEV_TENANT, SESSION);
    bad.as_object_mut().unwrap().insert("type", "nope");
    let r = post(port, Some(DEV_AUTH), &[], &batch(&[bad]));
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(s(&j, "status"), "error");
    assert_eq!(n(&j, "events_rejected"), 1);

    // 429: the limited tenant allows 50 events/s with a burst of one batch.
    let limited = format!("Bearer {LIMITED_TENANT}:secret");
    let fifty: Vec<Value> = (0..50).map(|i| event(i, LIMITED_TENANT, SESSION)).collect();
    assert_eq!(post(port, Some(&limited), &[], &batch(&fifty)).status, 200);
    let r = check(
        post(port, Some(&limited), &[], &batch(&fifty)),
        429,
        "rate_limited",
    );
    assert!(r.header("retry-after").unwrap().parse::<u32>().unwrap() >= 1);
    // Other tenants are unaffected.
    assert_eq!(post(port, Some(DEV_AUTH), &[], &good).status, 200);

    // 431: an oversized head.
    let mut raw = Raw::connect(port);
    let huge = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    raw.send(huge.as_bytes());
    check(raw.response(), 431, "");

    let metrics = get(port, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    for line in [
        "ingest_http_responses_total{status=\"401\"} 3",
        "ingest_http_responses_total{status=\"429\"} 1",
        "ingest_events_rejected_total{reason=\"unknown_type\"} 1",
    ] {
        assert!(
            metrics.body.contains(line),
            "missing {line}\n{}",
            metrics.body
        );
    }
    // The second batch's 429 is counted one of two ways, by how much of the
    // limit refilled between the batches (one event's worth takes 20 ms):
    // refused on its head, body unread (one request), or read and then
    // refused (its 50 events). Exactly one of them.
    let early = metrics
        .body
        .contains("ingest_rate_limited_requests_total 1\n")
        && metrics
            .body
            .contains("ingest_rate_limited_events_total 0\n");
    let read = metrics
        .body
        .contains("ingest_rate_limited_requests_total 0\n")
        && metrics
            .body
            .contains("ingest_rate_limited_events_total 50\n");
    assert!(
        early ^ read,
        "the 429 counted neither way\n{}",
        metrics.body
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `http.max_decompressed_bytes` of the bomb test's engine (the default).
const BOMB_CAP: u64 = 8 << 20;
/// Its shards: each decodes one body at a time, on its own thread.
const BOMB_SHARDS: u64 = 2;
/// Bombs sent at once, in each of two rounds.
const CONCURRENT_BOMBS: u64 = 8;
/// `http.max_body_bytes` (the default): a bomb's compressed size is under it.
const MAX_BODY_BYTES: u64 = 1 << 20;

#[test]
fn gzip_zstd_bombs_and_oversized_bodies() {
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_SHARDS", &BOMB_SHARDS.to_string()),
            (
                "INGESTION_HTTP__MAX_DECOMPRESSED_BYTES",
                &BOMB_CAP.to_string(),
            ),
        ],
    );
    let port = engine.port;
    let events: Vec<Value> = (0..20).map(|i| event(i, DEV_TENANT, SESSION)).collect();
    let body = batch(&events);
    let r = post(
        port,
        Some(DEV_AUTH),
        &[("Content-Encoding", "gzip")],
        &gzip(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(n(&r.json(), "events_accepted"), 20);
    let r = post(
        port,
        Some(DEV_AUTH),
        &[("Content-Encoding", "zstd")],
        &zstd::encode_all(&body[..], 3).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(n(&r.json(), "events_accepted"), 20);
    let r = post(
        port,
        Some(DEV_AUTH),
        &[("Content-Encoding", "gzip")],
        b"definitely not gzip",
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Bombs, each far past the cap in under the 1 MiB body limit: 256 MiB
    // of zeros in gzip (32 times the cap), 1 GiB in zstd, and 1 GiB in zstd
    // declaring a 128 MiB window (the most the decoder accepts), whose
    // window buffer must not cost what it declares.
    let zeros = vec![b'0'; 16 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..16 {
        gz.write_all(&zeros).unwrap();
    }
    let gz_bomb = gz.finish().unwrap();
    let zstd_bomb = |window_log: Option<u32>| {
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        if let Some(log) = window_log {
            z.window_log(log).unwrap();
            z.long_distance_matching(true).unwrap();
        }
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        z.finish().unwrap()
    };
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gz_bomb),
        ("zstd", zstd_bomb(None)),
        ("zstd", zstd_bomb(Some(27))),
    ];
    for (encoding, bomb) in &bombs {
        assert!(
            (bomb.len() as u64) < MAX_BODY_BYTES,
            "a {encoding} bomb of {} bytes",
            bomb.len()
        );
    }

    // The engine's peak resident size while CONCURRENT_BOMBS bombs arrive at
    // once, twice, above its size before them (VmHWM, reset first: the peak
    // itself, not what is left after).
    let pid = engine.pid();
    let rss_before = proc_status_kib(pid, "VmRSS");
    reset_peak_rss(pid);
    let bombs = std::sync::Arc::new(bombs);
    let mut statuses = Vec::new();
    for _round in 0..2 {
        let senders: Vec<_> = (0..CONCURRENT_BOMBS as usize)
            .map(|i| {
                let bombs = bombs.clone();
                std::thread::spawn(move || {
                    let (encoding, bomb) = &bombs[i % bombs.len()];
                    let r = post(
                        port,
                        Some(DEV_AUTH),
                        &[("Content-Encoding", encoding)],
                        bomb,
                    );
                    (i % bombs.len(), r.status, r.body)
                })
            })
            .collect();
        statuses.extend(senders.into_iter().map(|t| t.join().unwrap()));
    }
    let grown_kib = proc_status_kib(pid, "VmHWM").saturating_sub(rss_before);
    // What the bombs may cost at the peak, above the engine before them:
    // - per shard decoding (each decodes one body at a time, so at most
    //   min(bombs, shards) of them): the output buffer grown by doubling
    //   from a pooled buffer to twice the cap, each step touched as far as
    //   it was filled (about 3 × the cap), and the zstd window filled as far
    //   as the output reached (the cap, whatever window the frame declares);
    //   the allocator keeps each freed chain resident until its pages are
    //   reused, and a shard's next decodes take new ones for a while: up to
    //   2 chains, 8 × the cap. Measured with 8 concurrent bombs, 4 rounds,
    //   from a fresh engine: 2 shards, 5.5 to 8.6 × the cap per shard for
    //   caps of 1, 4, 8 and 32 MiB (138 MiB at 8 MiB);
    // - each bomb's body, read whole into a pooled buffer of at most
    //   `max_body_bytes` before it is decoded;
    // - 24 MiB that does not grow with the cap: pages of code run for the
    //   first time, the connections' buffers (17 to 24 MiB measured with a
    //   1 MiB cap).
    // An unbounded decode is 256 MiB (gzip) or 1 GiB (zstd) per bomb.
    let decoding = CONCURRENT_BOMBS.min(BOMB_SHARDS);
    let bound_kib =
        (decoding * 8 * BOMB_CAP + CONCURRENT_BOMBS * MAX_BODY_BYTES + (24 << 20)) / 1024;
    println!(
        "bombs: {} at once, twice: peak {} KiB above the {rss_before} KiB before, bound {bound_kib} KiB",
        CONCURRENT_BOMBS, grown_kib
    );
    assert!(
        grown_kib <= bound_kib,
        "the engine's peak grew by {grown_kib} KiB under {CONCURRENT_BOMBS} bombs at once, \
         over the {bound_kib} KiB that {decoding} decodes capped at {BOMB_CAP} bytes allow"
    );
    for (kind, status, body) in &statuses {
        let (encoding, _) = &bombs[*kind];
        assert_eq!(*status, 413, "a {encoding} bomb: {body}");
    }

    // Oversized body, declared: refused before it is read.
    let mut raw = Raw::connect(port);
    raw.send(format!("POST /ingest HTTP/1.1\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 50 << 20).as_bytes());
    let r = raw.response();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // Oversized body, chunked: refused once it passes the limit.
    let mut raw = Raw::connect(port);
    raw.send(format!("POST /ingest HTTP/1.1\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
    let chunk = format!("{:x}\r\n{}\r\n", 256 * 1024, "a".repeat(256 * 1024));
    for _ in 0..5 {
        let _ = raw.reader.get_mut().write_all(chunk.as_bytes());
    }
    assert_eq!(raw.response().status, 413);
}

#[test]
fn keep_alive_pipelining_chunked_and_expect_continue() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let mut raw = Raw::connect(engine.port);
    // Keep-alive: several requests, one connection.
    for i in 0..3 {
        let body = batch(&[event(i, DEV_TENANT, SESSION)]);
        raw.send(&ingest_request(DEV_AUTH, &body, ""));
        let r = raw.response();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // Pipelining: three requests in one write, answered in order.
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = event(i, DEV_TENANT, SESSION);
        ids.push(s(&ev, "id").to_string());
        all.extend(ingest_request(DEV_AUTH, &batch(&[ev]), ""));
    }
    all.extend_from_slice(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.send(&all);
    let mut batches = Vec::new();
    for _ in 0..3 {
        let r = raw.response();
        assert_eq!(r.status, 200, "{}", r.body);
        batches.push(s(&r.json(), "batch_id").to_string());
    }
    let live = raw.response();
    assert_eq!(live.status, 200);
    assert_eq!(s(&live.json(), "status"), "live");
    let dump = engine.dump();
    for (b, id) in batches.iter().zip(&ids) {
        let stored = events_of_batch(&dump, b);
        assert_eq!(stored.len(), 1);
        assert_eq!(s(&stored[0], "id"), id, "pipelined responses out of order");
    }

    // Chunked body with Expect: 100-continue.
    let body = batch(&[event(0, DEV_TENANT, SESSION), event(1, DEV_TENANT, SESSION)]);
    raw.send(format!("POST /ingest HTTP/1.1\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").as_bytes());
    let cont = raw.response();
    assert_eq!(cont.status, 100);
    let (a, b) = body.split_at(body.len() / 2);
    let mut chunked = Vec::new();
    for part in [a, b] {
        chunked.extend(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    raw.send(&chunked);
    let r = raw.response();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(n(&r.json(), "events_accepted"), 2);

    // Expect: 100-continue with bad credentials: refused before the body.
    let mut raw = Raw::connect(engine.port);
    raw.send(b"POST /ingest HTTP/1.1\r\nAuthorization: Bearer x:y\r\nContent-Type: application/json\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(raw.response().status, 401);
    assert!(raw.closed());
}

#[test]
fn slow_and_idle_clients_cannot_hold_a_shard() {
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_HTTP__READ_TIMEOUT_MS", "500"),
            ("INGESTION_HTTP__IDLE_TIMEOUT_MS", "1000"),
        ],
    );
    // Slowloris: a head that never ends gets 408 and is closed.
    let mut raw = Raw::connect(engine.port);
    raw.send(b"POST /ingest HTTP/1.1\r\nHost: t\r\n");
    let r = raw.response();
    assert_eq!(r.status, 408);
    assert!(raw.closed());
    // A body that never arrives: 408.
    let mut raw = Raw::connect(engine.port);
    raw.send(format!("POST /ingest HTTP/1.1\r\nAuthorization: {DEV_AUTH}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"events\"").as_bytes());
    assert_eq!(raw.response().status, 408);
    // An idle keep-alive connection is closed without a response.
    let mut idle = Raw::connect(engine.port);
    assert!(idle.closed());
    // Meanwhile the shards keep serving.
    assert_eq!(get(engine.port, "/health/live").unwrap().status, 200);
}

#[test]
fn broker_outage_gives_503_and_the_engine_recovers_by_itself() {
    let mut broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[("INGESTION_HTTP__REQUEST_TIMEOUT_MS", "2000")],
    );
    let port = engine.port;
    let send = || {
        post(
            port,
            Some(DEV_AUTH),
            &[],
            &batch(&[event(0, DEV_TENANT, SESSION)]),
        )
    };
    assert_eq!(send().status, 200);

    broker.stop();
    wait_for("not ready", Duration::from_secs(30), || {
        get(port, "/health/ready")
            .map(|r| r.status == 503)
            .unwrap_or(false)
    });
    let ready = get(port, "/health/ready").unwrap();
    assert_eq!(s(&ready.json(), "reason"), "broker_unreachable");
    let r = send();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").unwrap().parse::<u32>().unwrap() >= 1);
    let health = get(port, "/health").unwrap().json();
    assert!(!health
        .get("broker")
        .unwrap()
        .get("up")
        .unwrap()
        .as_bool()
        .unwrap());

    broker.restart();
    wait_for("ready again", Duration::from_secs(60), || {
        get(port, "/health/ready")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    let mut accepted = None;
    wait_for("accepted again", Duration::from_secs(60), || {
        let r = send();
        if r.status == 200 {
            accepted = Some(s(&r.json(), "batch_id").to_string());
        }
        r.status == 200
    });
    let dump = engine.dump();
    assert_eq!(events_of_batch(&dump, &accepted.unwrap()).len(), 1);
}

#[test]
fn tools_check_config_hash_key_and_bad_config() {
    let dir = std::env::temp_dir().join(format!("cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, TEST_CONFIG).unwrap();
    let out = engine_command(&cfg, "127.0.0.1:1", 18123)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("port = 18123"), "{text}");
    assert!(text.contains("brokers = \"127.0.0.1:1\""), "{text}");
    assert!(
        !text.contains("2bb80d537b1da3e38bd30361aa855686bde0eacd"),
        "{text}"
    );

    let out = engine_command(&cfg, "127.0.0.1:1", 18123)
        .env("INGESTION_REDPANDA_LINGR_MS", "5")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lingr_ms"));
    let out = engine_command(&cfg, "127.0.0.1:1", 18123)
        .env("INGESTION_PORT", "eighty")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));

    let out = engine_command(&cfg, "127.0.0.1:1", 18123)
        .args(["hash-key", "secret"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
}

#[test]
fn the_legacy_driver_can_be_forced() {
    let broker = Broker::start();
    let engine = Engine::start_with(&broker, TEST_CONFIG, &[("INGESTION_IO_DRIVER", "legacy")]);
    let health = get(engine.port, "/health").unwrap().json();
    assert_eq!(s(&health, "io_driver"), "epoll");
    let r = post(
        engine.port,
        Some(DEV_AUTH),
        &[],
        &batch(&[event(0, DEV_TENANT, SESSION)]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut raw = Raw::connect(engine.port);
    let body = batch(&[event(1, DEV_TENANT, SESSION)]);
    let mut two = ingest_request(DEV_AUTH, &body, "");
    two.extend(ingest_request(DEV_AUTH, &body, ""));
    raw.send(&two);
    assert_eq!(raw.response().status, 200);
    assert_eq!(raw.response().status, 200);
}

#[test]
fn framing_attacks_get_4xx_and_every_shard_keeps_serving() {
    let broker = Broker::start();
    let engine = Engine::start(&broker);
    let port = engine.port;
    // More rounds than shards (2), on new connections, so the kernel hands
    // the attacks to every shard.
    for round in 0..4 {
        for (what, raw, status) in framing_attacks() {
            assert_refused(port, &format!("{what} (round {round})"), &raw, status);
        }
    }
    // Every shard still answers: one connection per request again.
    for i in 0..8 {
        assert_eq!(get(port, "/health").unwrap().status, 200, "health {i}");
        let r = post(
            port,
            Some(DEV_AUTH),
            &[],
            &batch(&[event(i, DEV_TENANT, SESSION)]),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A small body on a bodiless route is read and discarded; the
    // connection stays usable.
    let mut raw = Raw::connect(port);
    raw.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    for _ in 0..2 {
        let r = raw.response();
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"live"}"#));
    }
    let metrics = get(port, "/metrics").unwrap().body;
    assert!(
        metrics.contains("ingest_http_responses_total{status=\"413\"} 24"),
        "{metrics}"
    );
}

#[test]
fn a_sink_only_node_answers_the_same_routes_with_the_same_bodies_and_bounds() {
    let broker = Broker::start();
    let edge = Engine::start(&broker);
    // ClickHouse unreachable: the sink is up but not ready.
    let sink = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_ROLES", "sink"),
            ("INGESTION_CLICKHOUSE_URL", "http://127.0.0.1:1"),
        ],
    );
    for (port, role) in [(edge.port, "ingest"), (sink.port, "sink")] {
        let live = get(port, "/health/live").unwrap();
        assert_eq!(live.status, 200);
        assert_eq!(live.body, r#"{"status":"live"}"#, "{role}");
        let health = get(port, "/health").unwrap();
        assert_eq!(health.status, 200);
        let h = health.json();
        assert_eq!(s(&h, "version"), env!("CARGO_PKG_VERSION"));
        let roles = h.get("roles").unwrap().as_array().unwrap();
        assert_eq!(roles.len(), 1);
        assert_eq!(roles[0].as_str(), Some(role));
        let nope = get(port, "/nope").unwrap();
        assert_eq!(nope.status, 404, "{role}");
        assert_eq!(s(&nope.json(), "error"), "not_found");
        let mut raw = Raw::connect(port);
        raw.send(b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = raw.response();
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD")),
            "{role}"
        );
        // The same bounds: the reader is shared.
        let (what, raw, status) = &framing_attacks()[0];
        assert_refused(port, &format!("{what} on {role}"), raw, *status);
        let (what, raw, status) = &framing_attacks()[6];
        assert_refused(port, &format!("{what} on {role}"), raw, *status);
    }
    let ready = get(sink.port, "/health/ready").unwrap();
    assert_eq!(ready.status, 503);
    assert_eq!(s(&ready.json(), "reason"), "clickhouse_unreachable");
    assert!(ready.header("retry-after").is_some());
    let r = post(sink.port, Some(DEV_AUTH), &[], b"{}");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("sink role"), "{}", r.body);
}

#[cfg(debug_assertions)]
#[test]
fn a_shard_panic_ends_the_process_instead_of_leaving_it_half_dead() {
    use std::os::unix::process::ExitStatusExt;
    let broker = Broker::start();
    let mut engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[("ENGINE_FAULT_PANIC_PATH", "/debug/fault/panic")],
    );
    assert_eq!(get(engine.port, "/health/live").unwrap().status, 200);
    // The connection dies with the process: no answer to check.
    let _ = get(engine.port, "/debug/fault/panic");
    let status = engine
        .wait_exit(Duration::from_secs(10))
        .expect("the engine outlived its panicking shard");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let log = engine.log();
    assert!(log.contains("panic: aborting the process"), "{log}");
    assert!(log.contains("thread 'shard-"), "{log}");
    assert!(log.contains("fault injection"), "{log}");
    assert!(
        get(engine.port, "/health/live").is_err(),
        "port still answers"
    );
}

#[test]
fn abusive_clients_are_limited_per_address_and_proxies_name_the_client() {
    let broker = Broker::start();
    // Without trusted proxies: the peer is the client.
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_CLIENTS__MAX_CONNECTIONS", "3"),
            ("INGESTION_CLIENTS__MAX_REQUESTS_PER_SEC", "20"),
        ],
    );
    let port = engine.port;
    let ask = |raw: &mut Raw, path: &str, extra: &str| {
        raw.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
        raw.response()
    };
    // Three connections held (the start-up probes' may still be closing:
    // a refused one is retried); the fourth is answered 429 and closed.
    let mut held: Vec<Raw> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "could not hold 3 connections"
        );
        let mut raw = Raw::connect(port);
        match ask(&mut raw, "/health/live", "").status {
            200 => held.push(raw),
            429 => std::thread::sleep(Duration::from_millis(50)),
            s => panic!("{s}"),
        }
    }
    // It sent its request already: it still reads the answer, not a reset.
    let mut fourth = Raw::connect(port);
    fourth.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = fourth.response();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"].as_str(), Some("client_connection_limit"));
    assert!(fourth.closed());
    // Closing one frees its place.
    drop(held.pop());
    wait_for("a freed connection place", Duration::from_secs(5), || {
        let mut again = Raw::connect(port);
        again.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
        again.response().status == 200
    });
    drop(held);
    // Requests: a token bucket of a second's worth (20), refilled at 20/s.
    // Whatever the machine's speed, a burst over t seconds (measured around
    // it, so it holds the engine's own interval) has between 20 and
    // 20 + 20 × t of its requests served: a burst up to the first refusal,
    // on one connection, from a bucket full after a second of rest. The
    // probes are never limited.
    std::thread::sleep(Duration::from_millis(1100));
    let mut raw = Raw::connect(port);
    let b = burst(400, || ask(&mut raw, "/metrics", ""));
    assert_bucket(&b, 20, 20.0, 20.0, b.took, "a client's burst");
    let limited = b.refused.unwrap();
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.json()["error"].as_str(),
        Some("client_rate_limited")
    );
    assert_eq!(limited.header("retry-after"), Some("1"));
    // The budget is the address's, not the connection's: a new connection
    // finds the bucket as the refusal left it (under one token), plus what
    // refilled since that request was sent.
    let mut raw = Raw::connect(port);
    let after = b.last_sent;
    let b = burst(400, || ask(&mut raw, "/metrics", ""));
    assert_bucket(&b, 0, 1.0, 20.0, after.elapsed(), "a new connection");
    assert_eq!(
        b.refused
            .as_ref()
            .map(|r| r.json()["error"].as_str().map(String::from)),
        Some(Some("client_rate_limited".to_string()))
    );
    // A client's own X-Forwarded-For changes nothing: it is not a proxy (a
    // fresh budget for 198.51.100.1 would serve 20 at once).
    let after = b.last_sent;
    let b = burst(400, || {
        ask(&mut raw, "/metrics", "X-Forwarded-For: 198.51.100.1\r\n")
    });
    assert_bucket(&b, 0, 1.0, 20.0, after.elapsed(), "X-Forwarded-For");
    assert_eq!(
        b.refused
            .as_ref()
            .map(|r| r.json()["error"].as_str().map(String::from)),
        Some(Some("client_rate_limited".to_string()))
    );
    for _ in 0..30 {
        assert_ne!(ask(&mut raw, "/health/live", "").status, 429);
    }
    // The counters, read on this connection once the budget is back (new
    // connections would meet the connection limit while closed ones linger):
    // three refusals, one per burst.
    std::thread::sleep(Duration::from_millis(1100));
    let text = ask(&mut raw, "/metrics", "").body;
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("ingest_clients_refused_connections_total") >= 1.0);
    assert_eq!(value("ingest_clients_rate_limited_requests_total"), 3.0);
    engine.terminate();

    // Behind a trusted proxy (here, loopback): each forwarded client has
    // its own budget (5 a second, a burst of 5), and the proxy's
    // connections are not counted.
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_CLIENTS__MAX_CONNECTIONS", "2"),
            ("INGESTION_CLIENTS__MAX_REQUESTS_PER_SEC", "5"),
            ("INGESTION_CLIENTS__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    );
    let port = engine.port;
    let mut conns: Vec<Raw> = (0..4).map(|_| Raw::connect(port)).collect();
    let from = |raw: &mut Raw, client: &str| {
        ask(
            raw,
            "/metrics",
            &format!("X-Forwarded-For: 6.6.6.6, {client}\r\n"),
        )
    };
    let mut i = 0;
    let b = burst(400, || {
        i += 1;
        from(&mut conns[i % 4], "198.51.100.1")
    });
    assert_bucket(&b, 5, 5.0, 5.0, b.took, "a forwarded client, 4 connections");
    let refused = b.refused.unwrap();
    assert_eq!(
        (refused.status, refused.json()["error"].as_str()),
        (429, Some("client_rate_limited"))
    );
    assert_eq!(
        from(&mut conns[0], "198.51.100.2").status,
        200,
        "another client"
    );
    engine.terminate();
}

/// A burst of requests up to the first refusal.
struct Burst {
    /// Answered 200.
    served: usize,
    /// The first other answer, if one came.
    refused: Option<Resp>,
    /// From before the first request to after the last answer.
    took: Duration,
    /// When the last request was sent.
    last_sent: std::time::Instant,
}

/// Sends requests (by `ask`) until the first answer that is not 200, or
/// `max` of them.
fn burst(max: usize, mut ask: impl FnMut() -> Resp) -> Burst {
    let started = std::time::Instant::now();
    let mut b = Burst {
        served: 0,
        refused: None,
        took: Duration::ZERO,
        last_sent: started,
    };
    for _ in 0..max {
        b.last_sent = std::time::Instant::now();
        let r = ask();
        if r.status != 200 {
            b.refused = Some(r);
            break;
        }
        b.served += 1;
    }
    b.took = started.elapsed();
    b
}

/// That a burst ended in a refusal, with what a token bucket refilled at
/// `rate` a second serves over `took`: at least `least` (the whole tokens it
/// surely held at the start), at most the `most` it could hold at the start
/// and what refilled meanwhile.
fn assert_bucket(b: &Burst, least: usize, most: f64, rate: f64, took: Duration, what: &str) {
    let most = most + rate * took.as_secs_f64();
    assert!(
        b.served >= least && b.served as f64 <= most,
        "{what}: {} served in {took:?}; a bucket refilled at {rate}/s serves {least} to {most:.1}",
        b.served
    );
    assert!(
        b.refused.is_some(),
        "{what}: {} requests in {:?}, none refused at {rate}/s",
        b.served,
        b.took
    );
}
