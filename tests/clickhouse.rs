//! Against a real ClickHouse 18.16 (started privately on free ports) and the
//! modern engine (chdb): migrations, the Native encoder, the views.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{free_port, ClickHouse};
use std::time::{Duration, Instant};

use clickhouse_client::native::{AgentColumns, EventsBlock, RowSource};
use clickhouse_client::schema::{self, full_ddl, lease, migrate, MIGRATIONS};
use clickhouse_client::{Client, Error, ServerVersion};
use engine_core::record::{decode_record, encode_record, EventRecord, RecordBatch};
use engine_core::Tier;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn uuid(n: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 0x10 + n;
    b[15] = n;
    b
}

/// A block of 50 events of every type over two tenants and three sessions.
pub fn sample_block(now_us: i64) -> (EventsBlock, usize) {
    sample_block_of(now_us, [0; 16])
}

/// [`sample_block`] with every row naming insert `insert_id`.
pub fn sample_block_of(now_us: i64, insert_id: [u8; 16]) -> (EventsBlock, usize) {
    let paths = ["/", "/pricing", "/docs"];
    let mut block = EventsBlock::new();
    let mut n = 0;
    for t in 0..2u8 {
        let events: Vec<EventRecord<'_>> = (0..25u8)
            .map(|i| EventRecord {
                id: uuid(t * 100 + i),
                session_id: uuid(200 + i % 3),
                event_type: i % 5,
                timestamp_us: now_us - i64::from(i) * 60_000_000,
                client_timestamp_us: now_us - i64::from(i) * 60_000_000,
                user_id: Some("u-1"),
                url: Some("https://example.com/x"),
                path: Some(paths[usize::from(i) % 3]),
                referrer: None,
                title: Some("T"),
                user_agent: Some("ua"),
                locale: Some("en-US"),
                screen_width: Some(1920),
                screen_height: None,
                selector: (i % 5 == 1).then_some("button#buy"),
                element: None,
                text: Some("quote \" and tab \t"),
                href: None,
                x: (i % 5 == 1).then_some(10.5),
                y: None,
                depth_pct: (i % 5 == 2).then_some(f64::from(i) * 3.0),
                lcp: (i % 5 == 3).then_some(1000.0 + f64::from(i)),
                fcp: (i % 5 == 3).then_some(500.0),
                inp: None,
                cls: (i % 5 == 3).then_some(0.1),
                ttfb: None,
                fid: None,
                name: (i % 5 == 4).then_some("signup"),
                properties: (i % 5 == 4).then_some(r#"{"plan":"pro"}"#),
            })
            .collect();
        let batch = RecordBatch {
            tenant_id: uuid(t),
            batch_id: uuid(50 + t),
            received_at_us: now_us,
            sent_at_us: None,
            events,
        };
        let mut bytes = Vec::new();
        encode_record(&batch, &mut bytes).unwrap();
        let archived = decode_record(&bytes).unwrap();
        for e in archived.events.iter() {
            let src = RowSource {
                partition: i32::from(t),
                offset: n as i64,
                tier: Tier::Paid,
                retention_days: 90,
                insert_id,
            };
            let agent = AgentColumns {
                browser: ["Chrome", "Firefox"][usize::from(t)],
                os: "Windows",
                device: "Desktop",
            };
            block.push(archived, e, src, agent);
            n += 1;
        }
    }
    (block, n)
}

fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// Every migration's version from `first` on: what a database at
/// `first - 1` is brought up by.
fn versions_from(first: u32) -> Vec<u32> {
    MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|&v| v >= first)
        .collect()
}

#[test]
fn migrations_encoder_and_views_on_clickhouse_18() {
    let server = ClickHouse::start();
    let ch = server.client();
    let version = ch.version().unwrap();
    assert!(version.major >= 18, "{version}");

    let first = migrate(&ch, "overwatch").unwrap();
    assert_eq!(
        first.applied,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let again = migrate(&ch, "overwatch").unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already.len(), MIGRATIONS.len());
    let recorded = ch
        .query("SELECT count() FROM overwatch.schema_migrations")
        .unwrap();
    assert_eq!(recorded.trim(), MIGRATIONS.len().to_string());

    let (block, rows) = sample_block(now_us());
    let mut bytes = Vec::new();
    block.encode(&mut bytes);
    ch.insert_native("overwatch.events", &bytes).unwrap();
    let count = ch.query("SELECT count() FROM overwatch.events").unwrap();
    assert_eq!(count.trim(), rows.to_string());

    // Field by field for one known row.
    let row = ch
        .query(
            "SELECT toString(tenant_id), toString(event_id), event_type, path, text, lcp, screen_width, screen_height, tier, \
             retention_days, broker_partition, broker_offset FROM overwatch.events WHERE event_id = toUUID('13000000-0000-0000-0000-000000000003') \
             FORMAT TabSeparated",
        )
        .unwrap();
    assert_eq!(
        row.trim_end(),
        "10000000-0000-0000-0000-000000000000\t13000000-0000-0000-0000-000000000003\tperformance\t/\tquote \" and tab \\t\t1003\t1920\t\\N\tpaid\t90\t0\t3"
    );

    // Every view agrees with a GROUP BY over events.
    let same = |view: &str, direct: &str| {
        let a = ch.query(&format!("{view} FORMAT TabSeparated")).unwrap();
        let b = ch.query(&format!("{direct} FORMAT TabSeparated")).unwrap();
        assert!(!a.trim().is_empty(), "empty view result: {view}");
        assert_eq!(a, b, "\n{view}\nvs\n{direct}");
    };
    same(
        "SELECT tenant_id, session_id, sum(pageviews), maxMerge(visitor), minMerge(started), maxMerge(ended), \
         argMinMerge(entry_page), argMaxMerge(exit_page), argMinMerge(referrer), argMinMerge(url), anyMerge(browser), \
         anyMerge(os), anyMerge(device) FROM overwatch.sessions GROUP BY tenant_id, session_id ORDER BY tenant_id, session_id",
        "SELECT tenant_id, session_id, count(), max(user_id), min(event_time), max(event_time), argMin(path, event_time), \
         argMax(path, event_time), argMin(referrer, event_time), argMin(url, event_time), any(browser), any(os), any(device) \
         FROM overwatch.events WHERE event_type = 'pageview' GROUP BY tenant_id, session_id ORDER BY tenant_id, session_id",
    );
    same(
        "SELECT tenant_id, hour, path, sum(pageviews), uniqMerge(visitors) FROM overwatch.pageviews_hourly \
         GROUP BY tenant_id, hour, path ORDER BY tenant_id, hour, path",
        "SELECT tenant_id, toStartOfHour(event_time) AS h, path, count(), uniqExact(if(user_id != '', user_id, toString(session_id))) \
         FROM overwatch.events WHERE event_type = 'pageview' GROUP BY tenant_id, h, path ORDER BY tenant_id, h, path",
    );
    // The sink's classification reached the columns.
    assert_eq!(
        ch.query("SELECT browser, os, device, count() FROM overwatch.events GROUP BY browser, os, device ORDER BY browser FORMAT TabSeparated")
            .unwrap(),
        "Chrome\tWindows\tDesktop\t25\nFirefox\tWindows\tDesktop\t25\n"
    );

    // Server exceptions carry the server's message.
    match ch.query("SELECT * FROM overwatch.nope") {
        Err(Error::Server {
            code: Some(60),
            message,
        }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A dead server is a connection error, and says so.
    let dead = Client::new(
        &format!("http://127.0.0.1:{}", free_port()),
        Duration::from_secs(2),
    );
    let err = dead.version().unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!dead.ping());
}

#[test]
fn the_same_ddl_and_encoder_bytes_work_on_a_modern_engine() {
    let dir = std::env::temp_dir().join(format!("chdb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The DDL a modern server gets (with TTL).
    let modern = ServerVersion::parse("26.0.0").unwrap();
    let ddl = full_ddl("overwatch", modern).join(";\n") + ";\n";
    let ddl_path = dir.join("schema.sql");
    std::fs::write(&ddl_path, ddl).unwrap();
    let (block, rows) = sample_block(now_us());
    let mut bytes = Vec::new();
    block.encode(&mut bytes);
    let native = dir.join("events.native");
    std::fs::write(&native, &bytes).unwrap();
    let out = Command::new(root().join("scripts/chdb-check"))
        .arg("--ddl")
        .arg(&ddl_path)
        .arg("--native")
        .arg(format!("overwatch.events={}", native.display()))
        .args(["--query", "SELECT count() AS n FROM overwatch.events"])
        .args(["--query", "SELECT countIf(event_type = 'pageview') AS n FROM overwatch.events"])
        .args(["--query", "SELECT sum(pageviews) AS n FROM overwatch.pageviews_hourly"])
        .args(["--query", "SELECT sum(pageviews) AS n FROM overwatch.sessions"])
        .args(["--query", "SELECT toString(event_id) AS id, path, lcp FROM overwatch.events WHERE event_id = toUUID('13000000-0000-0000-0000-000000000003')"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chdb check failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("{{\"n\":{rows}}}"), "{stdout}");
    // Both roll-ups, filled by their views on the modern engine too.
    assert_eq!(lines[1], "{\"n\":10}", "{stdout}");
    assert_eq!(lines[2], lines[1], "{stdout}");
    assert_eq!(lines[3], lines[1], "{stdout}");
    assert!(
        lines[4].contains(
            "\"id\":\"13000000-0000-0000-0000-000000000003\",\"path\":\"\\/\",\"lcp\":1003"
        ),
        "{stdout}"
    );
}

#[test]
fn the_sinks_insert_protocol_runs_on_a_modern_engine() {
    use clickhouse_client::receipts::{self, Receipt, RECEIPT_TENANT};
    let dir = std::env::temp_dir().join(format!("chdb-protocol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let modern = ServerVersion::parse("26.0.0").unwrap();
    let stage = "sink_stage_t_1_a";
    let mut ddl = full_ddl("overwatch", modern);
    ddl.push(receipts::create_stage_sql(
        &receipts::Tables::single("overwatch"),
        stage,
    ));
    let ddl_path = dir.join("schema.sql");
    std::fs::write(&ddl_path, ddl.join(";\n") + ";\n").unwrap();
    // Noon today: every row in one partition.
    let day = (now_us() / 1_000_000 / 86_400) as u16;
    let noon = (i64::from(day) * 86_400 + 43_200) * 1_000_000;
    let id = uuid::Uuid::from_u128(0xabc);
    let (mut block, rows) = sample_block_of(noon, *id.as_bytes());
    block.push_receipt(&Receipt {
        insert_id: id,
        topic: "events".into(),
        partition: 1,
        first_offset: 0,
        last_offset: 1,
        index: 0,
        inserts: 1,
        rows: rows as u64,
        retention_days: 90,
        day,
        event_time: (noon / 1_000_000) as u32,
        tier: Tier::Paid,
        written_at_us: noon,
        last_hash: receipts::record_hash(b"record 1"),
    });
    let mut bytes = Vec::new();
    block.encode(&mut bytes);
    let native = dir.join("stage.native");
    std::fs::write(&native, &bytes).unwrap();
    let source = format!("overwatch.{stage}");
    let rows_of = receipts::insert_rows_sql(&source, id, rows as u64, "");
    let [(sessions, repair), _] = schema::rollup_selects(&rows_of);
    let run = |queries: &[String]| {
        let mut c = Command::new(root().join("scripts/chdb-check"));
        c.arg("--ddl")
            .arg(&ddl_path)
            .arg("--native")
            .arg(format!("overwatch.{stage}={}", native.display()));
        for q in queries {
            c.args(["--query", q]);
        }
        c.output().unwrap()
    };
    let receipt_tenant = format!("tenant_id = toUUID('{RECEIPT_TENANT}')");
    let out = run(&[
        format!("INSERT INTO overwatch.events SELECT * FROM {rows_of}"),
        receipts::check_sql(&receipts::Tables::single("overwatch"), id, 90, day),
        format!("SELECT count() AS n FROM overwatch.events WHERE insert_id = toUUID('{id}')"),
        format!("SELECT sum(pageviews) AS n FROM overwatch.sessions WHERE {receipt_tenant}"),
        format!(
            "SELECT sum(pageviews) AS n FROM overwatch.pageviews_hourly WHERE {receipt_tenant}"
        ),
        format!("INSERT INTO overwatch.{sessions} {repair}"),
        format!("SELECT sum(pageviews) AS n FROM overwatch.sessions WHERE {receipt_tenant}"),
        format!("TRUNCATE TABLE {source}"),
        format!("DROP TABLE {source}{}", modern.drop_suffix()),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "protocol on chdb failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // One copy in events and in each roll-up.
    assert_eq!(lines[0], "1\t1\t1", "{stdout}");
    assert_eq!(lines[1], format!("{{\"n\":{}}}", rows + 1), "{stdout}");
    assert_eq!(lines[2], "{\"n\":1}", "{stdout}");
    assert_eq!(lines[3], "{\"n\":1}", "{stdout}");
    // The repair's SELECT ran too (here on top of the view's row).
    assert_eq!(lines[4], "{\"n\":2}", "{stdout}");
    // An emptied staging table (a ClickHouse restart) is refused on 18.16
    // by the guard; a modern engine skips the guard on no rows, so nothing
    // lands, and the sink's receipt check after every write sees that.
    let out = run(&[
        format!("TRUNCATE TABLE {source}"),
        format!("INSERT INTO overwatch.events SELECT * FROM {rows_of}"),
        format!("SELECT count() AS n FROM overwatch.events WHERE insert_id = toUUID('{id}')"),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.trim() == "{\"n\":0}" || stderr.contains("THROW_IF"),
        "an empty stage inserted something:\n{stdout}\n{stderr}"
    );
}

/// Applies migrations up to `last` by hand and records them, as an older
/// engine would have left the database.
fn migrate_up_to(ch: &Client, db: &str, last: u32) {
    let server = ch.version().unwrap();
    ch.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .unwrap();
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = TinyLog"
    ))
    .unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version <= last) {
        for stmt in (m.statements)(db, server) {
            ch.execute(&stmt).unwrap();
        }
        ch.execute(&format!(
            "INSERT INTO {db}.schema_migrations VALUES ({}, '{}', now())",
            m.version, m.name
        ))
        .unwrap();
    }
}

#[test]
fn tenants_from_before_key_kinds_keep_their_key_and_a_half_done_migration_finishes() {
    use clickhouse_client::tenants;
    use engine_core::KeyKind;
    let server = ClickHouse::start();
    let ch = server.client();

    // A tenant written before key kinds: its one key is in api_key_sha256.
    migrate_up_to(&ch, "old", 3);
    // Events from before the roll-ups: migration 7 fills them in.
    ch.execute(
        "INSERT INTO old.events (tenant_id, event_id, session_id, event_type, event_time, retention_days, path) \
         SELECT toUUID('11111111-2222-3333-4444-555555555555'), generateUUIDv4(), toUUID('11111111-0000-0000-0000-000000000001'), \
         if(number = 0, 'pageview', 'click'), now(), 90, '/a' FROM system.numbers LIMIT 2",
    )
    .unwrap();
    let hash = engine_core::tenant::hash_key_hex("ik_legacy");
    ch.execute(&format!(
        "INSERT INTO old.tenants (id, name, tier, retention_days, api_key_sha256, rate_limit_eps, disabled, updated_at, revision) \
         VALUES (toUUID('11111111-2222-3333-4444-555555555555'), 'legacy', 'paid', 90, '{hash}', 0, 0, now(), 1)"
    ))
    .unwrap();
    assert_eq!(migrate(&ch, "old").unwrap().applied, versions_from(4));
    assert_eq!(
        ch.query(
            "SELECT sum(pageviews), argMinMerge(entry_page) FROM old.sessions FORMAT TabSeparated"
        )
        .unwrap(),
        "1\t/a\n"
    );
    assert_eq!(
        ch.query("SELECT sum(pageviews) FROM old.pageviews_hourly FORMAT TabSeparated")
            .unwrap(),
        "1\n"
    );
    let rows = tenants::list(&ch, "old").unwrap();
    let t = tenants::to_tenant(&rows[0], |_| 0).unwrap();
    assert_eq!(t.verify_key("ik_legacy"), Some(KeyKind::Secret));
    assert!(t.allowed_origins.is_any());

    // New keys and origins round-trip through a new revision.
    let mut row = rows[0].clone();
    let pk = row.add_key(KeyKind::Write);
    row.allowed_origins = vec!["https://*.shop.example".into()];
    tenants::put(&ch, "old", &row).unwrap();
    let back = tenants::list(&ch, "old").unwrap();
    assert_eq!(back, [row]);
    let t = tenants::to_tenant(&back[0], |_| 0).unwrap();
    assert_eq!(t.verify_key(&pk), Some(KeyKind::Write));
    assert_eq!(t.verify_key("ik_legacy"), Some(KeyKind::Secret));

    // A crash after the first ADD COLUMN of migration 4: running it again
    // finishes it (18.16 has no ADD COLUMN IF NOT EXISTS).
    migrate_up_to(&ch, "crashed", 3);
    ch.execute("ALTER TABLE crashed.tenants ADD COLUMN key_label Array(String)")
        .unwrap();
    // And a crash inside migration 7, after its first roll-up was rebuilt:
    // the rerun rebuilds it from scratch.
    ch.execute("CREATE TABLE crashed.sessions (x UInt8) ENGINE = TinyLog")
        .unwrap();
    assert_eq!(migrate(&ch, "crashed").unwrap().applied, versions_from(4));
    assert!(tenants::list(&ch, "crashed").unwrap().is_empty());
}

#[test]
fn concurrent_migrators_build_each_roll_up_once() {
    let server = ClickHouse::start();
    let ch = server.client();
    // A database at migration 6 with events in it: migration 7 backfills.
    migrate_up_to(&ch, "race", 6);
    let (block, _) = sample_block(now_us());
    let mut bytes = Vec::new();
    block.encode(&mut bytes);
    ch.insert_native("race.events", &bytes).unwrap();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| migrate(&server.client(), "race").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied: Vec<_> = reports.iter().filter(|r| !r.applied.is_empty()).collect();
    assert_eq!(
        applied.len(),
        1,
        "one migrator ran migration 7: {reports:?}"
    );
    assert_eq!(applied[0].applied, versions_from(7));
    let pageviews = ch
        .query("SELECT countIf(event_type = 'pageview') FROM race.events FORMAT TabSeparated")
        .unwrap();
    assert_ne!(pageviews.trim(), "0");
    for sql in [
        "SELECT sum(pageviews) FROM race.sessions FORMAT TabSeparated",
        "SELECT sum(pageviews) FROM race.pageviews_hourly FORMAT TabSeparated",
    ] {
        assert_eq!(ch.query(sql).unwrap(), pageviews, "{sql}: counted once");
    }
    let engines = ch
        .query("SELECT engine_full FROM system.tables WHERE database = 'race' AND name IN ('sessions', 'pageviews_hourly') FORMAT TabSeparated")
        .unwrap();
    let fine = format!(
        "index_granularity = {}",
        clickhouse_client::schema::ROLLUP_INDEX_GRANULARITY
    );
    assert_eq!(engines.matches(&fine).count(), 2, "{engines}");
    assert_eq!(lease_tables(&ch, "race"), "0", "the lease is released");
}

/// Many migrators taking and releasing the lease back to back: each
/// holds it alone, and none fails on meeting a lease that is being
/// created or dropped at that moment (a waiter's look can land on a table
/// mid-`DROP`, which ClickHouse answers "Table is dropped").
#[test]
fn the_lease_under_contention_is_exclusive_and_never_fails() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let server = ClickHouse::start();
    let ch = server.client();
    ch.execute("CREATE DATABASE busy").unwrap();
    let (inside, entered) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let client = server.client();
                for _ in 0..25 {
                    lease::with_lease(&client, "busy", &|| false, || {
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        entered.fetch_add(1, Ordering::SeqCst);
                        inside.store(false, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(entered.load(Ordering::SeqCst), 8 * 25);
    assert_eq!(lease_tables(&ch, "busy"), "0", "the lease is released");
}

fn lease_tables(ch: &Client, db: &str) -> String {
    ch.query(&format!(
        "SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{}' FORMAT TabSeparated",
        lease::TABLE
    ))
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn a_dead_migrators_lease_is_taken_over() {
    let server = ClickHouse::start();
    let ch = server.client();
    migrate_up_to(&ch, "dead", 6);
    // What a migrator killed mid-migration leaves: its lease, heartbeats
    // stopped.
    ch.execute(&format!(
        "CREATE TABLE dead.{} (holder String, at DateTime) ENGINE = Memory",
        lease::TABLE
    ))
    .unwrap();
    ch.execute(&format!(
        "INSERT INTO dead.{} VALUES ('gone:1', now())",
        lease::TABLE
    ))
    .unwrap();
    let started = Instant::now();
    let report = migrate(&ch, "dead").unwrap();
    let took = started.elapsed();
    assert_eq!(report.applied, versions_from(7));
    assert!(
        took >= lease::STALE_AFTER - Duration::from_secs(2),
        "a fresh lease was respected: migrated after {took:?}"
    );
    assert!(
        took < lease::STALE_AFTER + Duration::from_secs(20),
        "taken over {took:?} after the holder stopped"
    );
    assert_eq!(lease_tables(&ch, "dead"), "0", "the lease is released");
}

#[test]
fn a_live_migrator_keeps_its_lease_past_the_stale_time() {
    let server = ClickHouse::start();
    let (holder, waiter) = (server.client(), server.client());
    migrate_up_to(&holder, "slow", 6);
    let held_for = lease::STALE_AFTER + Duration::from_secs(5);
    let (released, migrated) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            lease::with_lease(&holder, "slow", &|| false, || {
                // One long statement: no heartbeat from this thread.
                std::thread::sleep(held_for);
                Ok(Instant::now())
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_secs(1));
        // A waiter asked to stop (the engine's SIGTERM) gives up at once.
        let asked = Instant::now() + Duration::from_secs(1);
        let stopped = schema::migrate_unless_stopped(&waiter, "slow", &|| Instant::now() > asked);
        assert!(matches!(stopped, Err(Error::Stopped)), "{stopped:?}");
        assert!(asked.elapsed() < Duration::from_secs(2));
        let report = migrate(&waiter, "slow").unwrap();
        // When the waiter finished, taken here and not after the join
        // (which would always be after the holder's release).
        let migrated = Instant::now();
        assert_eq!(report.applied, versions_from(7));
        (h.join().unwrap(), migrated)
    });
    assert!(
        migrated > released,
        "the waiter migrated {:?} before the holder (heartbeating) released the lease",
        released.duration_since(migrated)
    );
}
