//! The whole pipeline against the real broker and the real ClickHouse 18.16:
//! HTTP → tansu → sink → ClickHouse, exactly once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sonic_rs::{JsonValueMutTrait, JsonValueTrait, Value};

fn sink_env(ch: &ClickHouse, roles: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("INGESTION_ROLES", roles.to_string()),
        ("INGESTION_CLICKHOUSE_URL", ch.url()),
        ("INGESTION_SINK_BATCH_MAX_AGE_MS", "200".to_string()),
        ("INGESTION_SINK_RETRY_BACKOFF_MAX_MS", "500".to_string()),
        ("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "5000".to_string()),
    ]
}

fn start(broker: &Broker, env: &[(&'static str, String)]) -> Engine {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Engine::start_with(broker, TEST_CONFIG, &env)
}

/// Sends one batch of `n` events for a fresh session; returns the ids the
/// engine accepted (every third event of a batch is made invalid).
fn send_batch(port: u16, n: usize, with_bad: bool) -> (Vec<u8>, Vec<String>) {
    let session = uuid::Uuid::new_v4().to_string();
    let mut events: Vec<Value> = (0..n).map(|i| event(i, DEV_TENANT, &session)).collect();
    let mut good = Vec::new();
    for (i, e) in events.iter_mut().enumerate() {
        if with_bad && i % 3 == 2 {
            e.as_object_mut().unwrap().insert("type", "bogus");
        } else {
            good.push(e.get("id").unwrap().as_str().unwrap().to_string());
        }
    }
    let body = batch(&events);
    let r = post(port, Some(DEV_AUTH), &[], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json().get("events_accepted").unwrap().as_u64().unwrap(),
        good.len() as u64
    );
    (body, good)
}

fn stored_ids(ch: &ClickHouse) -> Vec<String> {
    ch.query("SELECT toString(event_id) FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff')")
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_rows(ch: &ClickHouse, expected: usize) {
    let mut last = String::new();
    wait_for(
        &format!("{expected} rows in ClickHouse"),
        Duration::from_secs(120),
        || {
            last = ch
                .client()
                .query("SELECT count() FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff') FORMAT TabSeparated")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            last.parse::<usize>()
                .map(|n| n >= expected)
                .unwrap_or(false)
        },
    );
}

fn assert_exactly(ch: &ClickHouse, expected: &HashSet<String>) {
    let ids = stored_ids(ch);
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "duplicates in events");
    assert_eq!(&unique, expected, "events differ from what was accepted");
}

#[test]
fn accepted_events_reach_clickhouse_once_and_views_agree() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = start(&broker, &sink_env(&ch, "ingest,sink"));
    let mut expected = HashSet::new();
    let mut bodies = Vec::new();
    for b in 0..12 {
        let (body, ids) = send_batch(engine.port, 40, b % 2 == 0);
        expected.extend(ids);
        bodies.push(body);
    }
    // Client retries of whole batches: same tenant, same ids, same session.
    for body in [&bodies[1], &bodies[4], &bodies[4]] {
        let r = post(engine.port, Some(DEV_AUTH), &[], body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_rows(&ch, expected.len());
    // Give a late duplicate the chance to show up: one more batch, then exact counts.
    let (_, ids) = send_batch(engine.port, 10, false);
    expected.extend(ids);
    wait_rows(&ch, expected.len());
    assert_exactly(&ch, &expected);

    // Field by field for one event of each type.
    let row = ch.query(
        "SELECT event_type, count(), countIf(path = '/products/42'), countIf(selector = 'button#buy'), \
         countIf(depth_pct = 75), countIf(lcp = 1234.5), countIf(name = 'add_to_cart' AND visitParamExtractString(properties, 'sku') = 'A-42' AND visitParamExtractInt(properties, 'qty') = 2), \
         countIf(tier = 'enterprise' AND retention_days = 3650), countIf(locale = 'en-US') \
         FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff') GROUP BY event_type ORDER BY event_type",
    );
    for line in row.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let n = c[1];
        let col = match c[0] {
            "pageview" => 2,
            "click" => 3,
            "scroll" => 4,
            "performance" => 5,
            "custom" => 6,
            other => panic!("type {other}"),
        };
        assert_eq!(c[col], n, "{line}");
        assert_eq!(c[7], n, "{line}");
        assert_eq!(c[8], n, "{line}");
    }
    // Views agree with a GROUP BY over events (so retries did not reach them
    // either). An insert writes the table, then its views: a reader can see the
    // table first, so wait for the views to catch up, then require equality.
    let pairs = [
        (
            "SELECT sum(pageviews), uniqMerge(visitors) FROM overwatch.pageviews_hourly",
            "SELECT count(), uniq(if(user_id != '', cityHash64(user_id), cityHash64(reinterpretAsString(session_id)))) \
             FROM overwatch.events WHERE event_type = 'pageview'",
        ),
        (
            "SELECT sum(pageviews), count() FROM (SELECT session_id, sum(pageviews) AS pageviews FROM overwatch.sessions GROUP BY session_id)",
            "SELECT count(), uniq(session_id) FROM overwatch.events WHERE event_type = 'pageview'",
        ),
    ];
    for (view, direct) in pairs {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ch.query(view) != ch.query(direct) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(ch.query(view), ch.query(direct), "{view}");
    }
    assert_eq!(
        ch.query("SELECT count() FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff')"),
        expected.len().to_string()
    );

    // The sink's metrics tell the same story.
    let port = engine.port;
    let m = |name: &str| metric(port, name).unwrap_or_else(|| panic!("no metric {name}"));
    // Counted just after ClickHouse answered: a reader may be a moment early.
    wait_for("sink counters caught up", Duration::from_secs(10), || {
        m("sink_rows_inserted_total") as usize == expected.len()
            && m("sink_event_lag_seconds_count") as usize == expected.len()
    });
    // The three retried batches: 40 + 2 × 27 valid events.
    assert_eq!(m("sink_duplicates_skipped_total"), 94.0);
    assert!(m("sink_batches_inserted_total") >= 1.0);
    assert_eq!(m("sink_clickhouse_up"), 1.0);
    assert_eq!(m("sink_dead_letters_total"), 0.0);
    assert!(m("sink_insert_duration_seconds_count") >= 1.0);
    wait_for(
        "consumer lag reported as 0",
        Duration::from_secs(20),
        || metric(port, "sink_consumer_lag") == Some(0.0),
    );
    let health = get(port, "/health").unwrap().json();
    assert_eq!(
        health["clickhouse"]["used_by_this_node"].as_bool(),
        Some(true)
    );
    assert_eq!(
        health["sink"]["rows_inserted"].as_u64(),
        Some(expected.len() as u64)
    );
}

#[test]
fn a_retry_after_a_sink_restart_is_dropped_by_the_window_reloaded_from_clickhouse() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    // The sink first: it must not wait for an edge to create the topic.
    let sink = start(&broker, &sink_env(&ch, "sink"));
    let edge = start(&broker, &sink_env(&ch, "ingest"));
    let (body, ids) = send_batch(edge.port, 30, true);
    let expected: HashSet<String> = ids.into_iter().collect();
    wait_rows(&ch, expected.len());
    sink.terminate();
    // A new sink knows nothing but what ClickHouse holds.
    let sink = start(&broker, &sink_env(&ch, "sink"));
    let r = post(edge.port, Some(DEV_AUTH), &[], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(
        "the retry reaches the new sink",
        Duration::from_secs(60),
        || metric(sink.port, "sink_duplicates_skipped_total") == Some(expected.len() as f64),
    );
    assert_exactly(&ch, &expected);
    assert_eq!(metric(sink.port, "sink_rows_inserted_total"), Some(0.0));
}

#[test]
fn a_killed_sink_and_a_stopped_clickhouse_lose_nothing_and_double_nothing() {
    let mut ch = ClickHouse::start();
    let broker = Broker::start();
    let edge = start(&broker, &sink_env(&ch, "ingest"));
    let mut sink = start(&broker, &sink_env(&ch, "sink"));
    let port = edge.port;
    let expected = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let expected = expected.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (_, ids) = send_batch(port, 20, false);
                expected.lock().unwrap().extend(ids);
            }
        })
    };
    let count = |ch: &ClickHouse| -> usize {
        ch.client()
            .query("SELECT count() FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff') FORMAT TabSeparated")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // kill -9 the sink twice while events stream in.
    for round in 1..=2 {
        let target = round * 200;
        wait_for("rows before the kill", Duration::from_secs(60), || {
            count(&ch) >= target
        });
        sink.kill9();
        sink = start(&broker, &sink_env(&ch, "sink"));
    }
    // A sink-only node answers its status endpoint, not ingest.
    let r = post(sink.port, Some(DEV_AUTH), &[], b"{}");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("sink role"), "{}", r.body);
    let live = get(sink.port, "/health/live").unwrap();
    assert_eq!(
        live.body, r#"{"status":"live"}"#,
        "the same body as on an edge node"
    );
    assert_eq!(metric(sink.port, "sink_running"), Some(1.0));
    // ClickHouse down for a while under load, then back.
    // The new sink gets partitions once the killed members' sessions expire
    // (or its watchdog rejoins a group tansu left without an assignment).
    wait_for(
        "rows from the restarted sink before ClickHouse stops",
        Duration::from_secs(120),
        || count(&ch) >= 600 && metric(sink.port, "sink_rows_inserted_total") > Some(0.0),
    );
    ch.stop();
    let during = expected.lock().unwrap().len();
    wait_for(
        "events accepted while ClickHouse is down",
        Duration::from_secs(60),
        || expected.lock().unwrap().len() >= during + 200,
    );
    // Ready may be 503 for a stall first (partitions still moving to the
    // restarted sink); wait for the reason this step is about.
    wait_for(
        "sink reports ClickHouse down",
        Duration::from_secs(30),
        || {
            get(sink.port, "/health/ready").is_ok_and(|r| {
                r.status == 503 && r.json()["reason"].as_str() == Some("clickhouse_unreachable")
            })
        },
    );
    assert_eq!(metric(sink.port, "sink_clickhouse_up"), Some(0.0));
    assert!(metric(sink.port, "sink_insert_failures_total").unwrap() >= 1.0);
    // The sink polls on with its partitions paused: it stays in the group.
    wait_for(
        "partitions paused while ClickHouse is down",
        Duration::from_secs(30),
        || metric(sink.port, "sink_paused") == Some(1.0),
    );
    assert!(metric(sink.port, "sink_assigned_partitions").unwrap() > 0.0);
    let health = get(sink.port, "/health").unwrap().json();
    assert_eq!(
        health["sink"]["state"].as_str(),
        Some("clickhouse_unreachable"),
        "{health:?}"
    );
    ch.restart();
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let expected = expected.lock().unwrap().clone();
    wait_rows(&ch, expected.len());
    assert_exactly(&ch, &expected);
    wait_for("sink ready again", Duration::from_secs(30), || {
        get(sink.port, "/health/ready").is_ok_and(|r| r.status == 200)
    });
    wait_for("partitions resumed", Duration::from_secs(30), || {
        metric(sink.port, "sink_paused") == Some(0.0)
            && metric(sink.port, "sink_group_lag") == Some(0.0)
    });
    drop(sink);
}

#[test]
fn a_poison_record_goes_to_the_dead_letter_topic_and_the_sink_keeps_going() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = start(&broker, &sink_env(&ch, "ingest,sink"));
    let (_, first) = send_batch(engine.port, 10, false);
    wait_rows(&ch, first.len());

    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let poison: [(&[u8], &[u8]); 2] = [
        (&[1u8; 32], b"\x01not an archive"),
        (&[2u8; 32], b"\x09future format"),
    ];
    for (key, payload) in poison {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to("events")
                    .key(key)
                    .payload(payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let (_, second) = send_batch(engine.port, 10, false);
    let expected: HashSet<String> = first.into_iter().chain(second).collect();
    wait_rows(&ch, expected.len());
    assert_exactly(&ch, &expected);

    let out = engine_command(engine.config_path(), &broker.addr(), engine.port)
        .args(["dlq", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let letters: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| sonic_rs::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    wait_for("dead letters counted", Duration::from_secs(10), || {
        metric(engine.port, "sink_dead_letters_total") == Some(2.0)
    });
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.get("reason").unwrap().as_str().unwrap())
        .collect();
    reasons.sort();
    assert!(reasons[0].starts_with("corrupt record"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("unsupported record version 9"),
        "{reasons:?}"
    );
}
