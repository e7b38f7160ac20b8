//! Tenants managed through the CLI against a running engine, and retention by
//! tier with an injected clock, on the real ClickHouse.

mod common;

use std::time::Duration;

use clickhouse_client::native::{EventsBlock, RowSource};
use common::*;
use engine_core::record::{decode_record, encode_record, EventRecord, RecordBatch};
use engine_core::Tier;

#[test]
fn tenant_lifecycle_through_the_cli() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest");
    let created = tenant_cli(
        &engine,
        &broker,
        &ch,
        &["tenant", "create", "--name", "acme", "--tier", "paid"],
    );
    let id = field(&created, "tenant_id");
    let key = field(&created, "secret_key");
    let write_key = field(&created, "write_key");
    assert!(
        key.starts_with("sk_") && write_key.starts_with("pk_"),
        "{key} {write_key}"
    );
    let auth = format!("Bearer {id}:{key}");
    let send = |auth: &str| {
        post(
            engine.port,
            Some(auth),
            &[],
            &batch(&[event(0, &id, &uuid::Uuid::new_v4().to_string())]),
        )
        .status
    };

    wait_for("new tenant can ingest", Duration::from_secs(30), || {
        send(&auth) == 200
    });
    let list = tenant_cli(&engine, &broker, &ch, &["tenant", "list"]);
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains(&id) && listing.contains("acme") && listing.contains("paid"),
        "{listing}"
    );
    assert!(
        !listing.contains(&key) && !listing.contains(&write_key),
        "keys must never be listed"
    );

    // Names hold any character: they come back exactly as written.
    let odd = "back\\slash \\n\\t tab\t quote' \"é\"";
    let odd_id = field(
        &tenant_cli(
            &engine,
            &broker,
            &ch,
            &["tenant", "create", "--name", odd, "--tier", "free"],
        ),
        "tenant_id",
    );
    let rows = clickhouse_client::tenants::list(&ch.client(), "overwatch").unwrap();
    let row = rows.iter().find(|r| r.id.to_string() == odd_id).unwrap();
    assert_eq!(row.name, odd);

    tenant_cli(&engine, &broker, &ch, &["tenant", "disable", &id]);
    wait_for("disabled tenant gets 403", Duration::from_secs(30), || {
        send(&auth) == 403
    });
    tenant_cli(&engine, &broker, &ch, &["tenant", "enable", &id]);
    wait_for("enabled again", Duration::from_secs(30), || {
        send(&auth) == 200
    });

    // Both kinds ingest; the write key also from the query string.
    let write_auth = format!("Bearer {id}:{write_key}");
    assert_eq!(send(&write_auth), 200);
    let beacon = |key: &str, origin: Option<&str>| {
        let mut headers = vec![("Content-Type", "text/plain")];
        headers.extend(origin.map(|o| ("Origin", o)));
        let body = batch(&[event(0, &id, &uuid::Uuid::new_v4().to_string())]);
        call(
            "POST",
            engine.port,
            &format!("/ingest?key={id}:{key}"),
            &headers,
            Some(&body),
        )
        .status
    };
    assert_eq!(beacon(&write_key, None), 200);
    assert_eq!(beacon(&key, None), 401, "a secret key in a URL is refused");

    // Keys: listed by label and kind, never in full.
    let keys = String::from_utf8_lossy(
        &tenant_cli(&engine, &broker, &ch, &["tenant", "keys", &id]).stdout,
    )
    .into_owned();
    assert!(
        keys.contains(write_key.get(..11).unwrap()) && keys.contains(key.get(..11).unwrap()),
        "{keys}"
    );
    assert!(
        keys.contains(" write ") && keys.contains(" secret "),
        "{keys}"
    );
    assert!(!keys.contains(&write_key) && !keys.contains(&key), "{keys}");
    assert!(keys.contains("allowed origins: any"), "{keys}");

    // A second write key; revoking the first by its label.
    let added = tenant_cli(
        &engine,
        &broker,
        &ch,
        &["tenant", "add-key", &id, "--kind", "write"],
    );
    let write2 = field(&added, "write_key");
    tenant_cli(
        &engine,
        &broker,
        &ch,
        &["tenant", "revoke-key", &id, write_key.get(..11).unwrap()],
    );
    wait_for("revoked write key refused", Duration::from_secs(30), || {
        send(&write_auth) == 401
    });
    assert_eq!(send(&format!("Bearer {id}:{write2}")), 200);
    assert_eq!(send(&auth), 200, "the secret key is untouched");

    // Origins, reloaded live: set, checked, cleared.
    let bad = engine_command(engine.config_path(), &broker.addr(), engine.port)
        .env("INGESTION_CLICKHOUSE_URL", ch.url())
        .args(["tenant", "set-origins", &id, "shop.example/path"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an origin rule"));
    tenant_cli(
        &engine,
        &broker,
        &ch,
        &[
            "tenant",
            "set-origins",
            &id,
            "https://shop.example",
            "https://*.shop.example",
        ],
    );
    wait_for("origin allow-list applied", Duration::from_secs(30), || {
        beacon(&write2, Some("https://evil.example")) == 403
    });
    assert_eq!(beacon(&write2, Some("https://www.shop.example")), 200);
    assert_eq!(beacon(&write2, None), 200, "no Origin: not a browser");
    tenant_cli(&engine, &broker, &ch, &["tenant", "set-origins", &id]);
    wait_for("any origin again", Duration::from_secs(30), || {
        beacon(&write2, Some("https://evil.example")) == 200
    });

    let rotated = tenant_cli(&engine, &broker, &ch, &["tenant", "rotate-key", &id]);
    let new_auth = format!("Bearer {id}:{}", field(&rotated, "secret_key"));
    wait_for("old key refused", Duration::from_secs(30), || {
        send(&auth) == 401
    });
    assert_eq!(send(&new_auth), 200);
    assert_eq!(
        send(&format!("Bearer {id}:{write2}")),
        200,
        "rotating secrets keeps write keys"
    );
    // Config-file tenants keep working beside the registry.
    assert_eq!(
        post(
            engine.port,
            Some(DEV_AUTH),
            &[],
            &batch(&[event(0, DEV_TENANT, &uuid::Uuid::new_v4().to_string())])
        )
        .status,
        200
    );
}

/// Inserts one event per (tier, retention, age in days) straight into `events`.
fn insert_aged(ch: &ClickHouse, today_us: i64, rows: &[(Tier, u16, i64)]) {
    let mut block = EventsBlock::new();
    for (n, &(tier, retention, age_days)) in rows.iter().enumerate() {
        let ts = today_us - age_days * 86_400_000_000;
        let mut id = [0u8; 16];
        id[0] = n as u8 + 1;
        let batch = RecordBatch {
            tenant_id: [7; 16],
            batch_id: [8; 16],
            received_at_us: ts,
            sent_at_us: None,
            events: vec![EventRecord {
                path: Some("/"),
                ..EventRecord::bare(id, [9; 16], 0, ts)
            }],
        };
        let mut bytes = Vec::new();
        encode_record(&batch, &mut bytes).unwrap();
        let rec = decode_record(&bytes).unwrap();
        let src = RowSource {
            partition: 0,
            offset: n as i64,
            tier,
            retention_days: retention,
            insert_id: [0; 16],
        };
        block.push(rec, &rec.events[0], src, Default::default());
    }
    let mut out = Vec::new();
    block.encode(&mut out);
    ch.client().insert_native("overwatch.events", &out).unwrap();
}

#[test]
fn retention_drops_expired_partitions_by_tier_with_an_injected_clock() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let url = ch.url();
    let engine = Engine::start_with(&broker, TEST_CONFIG, &[("INGESTION_CLICKHOUSE_URL", &url)]);
    let migrated = tenant_cli(&engine, &broker, &ch, &["migrate"]);
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("migration"));
    // "Today" is 2030-06-15 (noon); rows are placed relative to it.
    let today_us = 1_907_755_200_000_000; // 2030-06-15T12:00:00Z
    insert_aged(
        &ch,
        today_us,
        &[
            (Tier::Free, 1, 0),           // today: kept
            (Tier::Free, 1, 1),           // yesterday: kept (inside 24 h + a day)
            (Tier::Free, 1, 2),           // two days ago: dropped
            (Tier::Paid, 90, 30),         // kept
            (Tier::Paid, 90, 92),         // dropped
            (Tier::Enterprise, 400, 300), // kept
            (Tier::Enterprise, 400, 402), // dropped
        ],
    );
    let before = ch.query("SELECT retention_days, toString(toDate(event_time)) FROM overwatch.events ORDER BY retention_days, event_time");
    assert_eq!(before.lines().count(), 7, "{before}");
    let out = tenant_cli(
        &engine,
        &broker,
        &ch,
        &["retention", "--today", "2030-06-15"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Each expired day of events goes with its two roll-ups' rows.
    assert!(text.contains("dropped 9 partitions"), "{text}");
    let after = ch.query("SELECT retention_days, toString(toDate(event_time)) FROM overwatch.events ORDER BY retention_days, event_time");
    assert_eq!(
        after, "1\t2030-06-14\n1\t2030-06-15\n90\t2030-05-16\n400\t2029-08-19",
        "before:\n{before}"
    );
    for rollup in [
        "SELECT retention_days, toString(day) FROM overwatch.sessions ORDER BY retention_days, day",
        "SELECT retention_days, toString(toDate(hour)) FROM overwatch.pageviews_hourly ORDER BY retention_days, hour",
    ] {
        assert_eq!(ch.query(rollup), after, "{rollup}");
    }
    // A second run finds nothing more to drop.
    let again = tenant_cli(
        &engine,
        &broker,
        &ch,
        &["retention", "--today", "2030-06-15"],
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("dropped 0 partitions"));

    // The sink's own job, on the real clock: a free-tier row three days old
    // goes, and the drop is counted.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    insert_aged(&ch, now_us, &[(Tier::Free, 1, 3)]);
    let sink = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_CLICKHOUSE_URL", &url),
            ("INGESTION_ROLES", "sink"),
            ("INGESTION_SINK_RETENTION_INTERVAL_SECS", "1"),
        ],
    );
    // Probes answer as on an edge node.
    let live = get(sink.port, "/health/live").unwrap();
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, r#"{"status":"live"}"#)
    );
    let ready = get(sink.port, "/health/ready").unwrap();
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"ready":true}"#)
    );
    wait_for(
        "the retention job drops the old partition",
        Duration::from_secs(30),
        || metric(sink.port, "sink_retention_partitions_dropped_total") == Some(3.0),
    );
    assert!(metric(sink.port, "sink_retention_runs_total").unwrap() >= 1.0);
    assert_eq!(
        metric(sink.port, "sink_retention_failures_total"),
        Some(0.0)
    );
    let left = ch.query("SELECT retention_days, toString(toDate(event_time)) FROM overwatch.events ORDER BY retention_days, event_time");
    assert_eq!(left, after, "only the old free-tier row went");
}
