//! The sink's exactly-once protocol (`crates/worker/README.md`, "Exactly
//! once") against the real tansu (SQLite) and ClickHouse 18.16: a view that
//! fails after `events`' part was written, batches that span days and
//! retention classes, several sinks killed and restarted under load. After
//! each: every acknowledged event once in `events`, and the roll-ups equal a
//! `GROUP BY` over `events`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::flow::*;
use common::*;
use sonic_rs::{JsonValueMutTrait, JsonValueTrait};

const DEV: &str = "Bearer 00000000-0000-0000-0000-000000000000:secret";
const SHOP: &str = "Bearer 55555555-5555-5555-5555-555555555555:secret";
const POISON_PATH: &str = "/boom/poison";

/// RFC 3339 of `secs_ago` seconds before now.
fn ago(secs_ago: i64) -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `n` pageviews of `tenant`, alternating between now and two days ago,
/// over a few sessions and paths; the ids go into `acked` once answered.
fn pageviews(tenant: &str, n: usize, path_of: impl Fn(usize) -> String) -> Vec<sonic_rs::Value> {
    (0..n)
        .map(|i| {
            let session = format!("11111111-1111-1111-1111-{:012}", i % 7);
            let mut e = event(0, tenant, &session);
            let o = e.as_object_mut().unwrap();
            o.insert("path", sonic_rs::Value::from(path_of(i).as_str()));
            let ts = ago(if i % 2 == 0 { 5 } else { 2 * 86_400 + 60 });
            o.insert("timestamp", sonic_rs::Value::from(ts.as_str()));
            e
        })
        .collect()
}

fn send(port: u16, auth: &str, events: &[sonic_rs::Value], acked: &mut HashSet<String>) {
    for chunk in events.chunks(50) {
        let r = post(port, Some(auth), &[], &batch(chunk));
        assert_eq!(r.status, 200, "{}", r.body);
        for e in chunk {
            acked.insert(e.get("id").unwrap().as_str().unwrap().to_string());
        }
    }
}

#[test]
fn a_view_failing_on_one_row_leaves_no_rollup_short_across_days_and_tiers() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let node = Node::start(&broker, &ch);
    wait_migrated(&ch);
    // A test-only view that fails on one row, pushed before the roll-ups'
    // views (by name): `events`' part lands, then the insert fails.
    ch.client()
        .execute(&format!(
            "CREATE MATERIALIZED VIEW overwatch.aa_poison ENGINE = Memory AS \
             SELECT throwIf(path = '{POISON_PATH}') AS boom FROM overwatch.events"
        ))
        .unwrap();
    let mut acked = HashSet::new();
    // Two tenants of different retention classes, two days each: one batch
    // holds four ClickHouse partitions.
    let dev = pageviews("00000000-0000-0000-0000-000000000000", 1000, |i| {
        if i == 501 {
            POISON_PATH.into()
        } else {
            format!("/p/{}", i % 13)
        }
    });
    let shop = pageviews("55555555-5555-5555-5555-555555555555", 1000, |i| {
        format!("/s/{}", i % 11)
    });
    for (d, s) in dev.chunks(100).zip(shop.chunks(100)) {
        send(node.port, DEV, d, &mut acked);
        send(node.port, SHOP, s, &mut acked);
    }
    wait_for("the poison row in events", Duration::from_secs(60), || {
        ch.query(&format!(
            "SELECT count() FROM overwatch.events WHERE path = '{POISON_PATH}'"
        )) == "1"
    });
    // The sink repaired the roll-ups of that insert from the same rows,
    // while the view still fails.
    wait_for("a roll-up repaired", Duration::from_secs(60), || {
        node.metric("sink_rollup_repairs_total").unwrap_or(0.0) >= 1.0
    });
    ch.client()
        .execute("DROP TABLE overwatch.aa_poison")
        .unwrap();
    wait_landed(
        &ch,
        &acked,
        Duration::from_secs(120),
        "after the failing view",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_exactly_once(&ch, &acked, &acked);
    assert_rollups_agree(&ch, "after the failing view");
    let partitions = ch.query(
        "SELECT count(DISTINCT (retention_days, toDate(event_time))) FROM overwatch.events \
         WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff')",
    );
    assert_eq!(partitions, "4", "two retention classes × two days");
    assert_eq!(node.metric("sink_receipts_duplicated_total"), Some(0.0));
}

#[test]
fn several_sinks_killed_and_restarted_under_load_store_every_event_once() {
    several_sinks_killed_and_restarted(false);
}

#[test]
fn several_sinks_killed_and_restarted_while_inserts_time_out_store_every_event_once() {
    several_sinks_killed_and_restarted(true);
}

/// Two edges and three sinks in one consumer group under load; one sink
/// after another is killed (`kill -9`) and restarted. With `slow`, the
/// sinks reach ClickHouse through a proxy that, around each kill, holds
/// its answers past the sinks' 1 s insert timeout: inserts that may still
/// run when their partition moves.
fn several_sinks_killed_and_restarted(slow: bool) {
    let ch = ClickHouse::start();
    let proxy = common::slow::SlowProxy::start(ch.http_port);
    let broker = Broker::start();
    let sink_env = || {
        let mut env = vec![("INGESTION_ROLES", "sink".to_string())];
        if slow {
            env.push(("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "1000".to_string()));
        }
        env
    };
    let edge_env = || vec![("INGESTION_ROLES", "ingest".to_string())];
    let sink_ch = if slow { proxy.url() } else { ch.url() };
    let edges: Vec<Node> = (0..2)
        .map(|_| Node::start_with(&broker, &ch.url(), TEST_CONFIG, edge_env()))
        .collect();
    let mut sinks: Vec<Node> = (0..3)
        .map(|_| {
            let mut n = Node::new(&broker, &sink_ch, TEST_CONFIG, sink_env());
            n.spawn_sink();
            n
        })
        .collect();
    let loads: Vec<Load> = edges
        .iter()
        .map(|e| Load::start(e.port, usize::MAX, Duration::from_secs(600)))
        .collect();
    let rounds = std::env::var("INGESTION_SINK_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    // Insert failures of every sink but the one killed this round (whose
    // counters go with it).
    let failures = |sinks: &[Node], victim: usize| -> f64 {
        sinks
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != victim)
            .map(|(_, s)| s.metric("sink_insert_failures_total").unwrap_or(0.0))
            .sum()
    };
    let mut timeouts = 0.0;
    for round in 0..rounds {
        let victim = round % sinks.len();
        std::thread::sleep(Duration::from_secs(4));
        let failed = failures(&sinks, victim);
        if slow {
            // Slow until a surviving sink's insert has timed out (a fixed
            // wait could pass with none of their queries in it), then the
            // kill lands among inserts that may still run.
            proxy.delay_ms.store(1500, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
            wait_until(Duration::from_secs(20), || {
                failures(&sinks, victim) > failed
            });
        }
        sinks[victim].kill9();
        std::thread::sleep(Duration::from_secs(3));
        if slow {
            timeouts += failures(&sinks, victim) - failed;
            proxy.delay_ms.store(0, Ordering::SeqCst);
        }
        sinks[victim].spawn_sink();
    }
    if slow {
        assert!(
            timeouts > 0.0,
            "no insert timed out while ClickHouse was slow"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut acked = HashSet::new();
    let mut sent = HashSet::new();
    for mut l in loads {
        l.finish();
        acked.extend(l.acked());
        sent.extend(l.sent());
    }
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
    wait_landed(
        &ch,
        &acked,
        Duration::from_secs(180),
        "several sinks, kill -9",
    );
    std::thread::sleep(Duration::from_secs(2));
    let t = tally(&ch, &acked, &sent);
    let fences: f64 = sinks
        .iter()
        .map(|s| s.metric("sink_partition_fences_total").unwrap_or(0.0))
        .sum();
    println!(
        "several-sinks{} | acked {} | lost {} | duplicates {} | foreign {} | partition take-overs {fences} | insert failures while slow {timeouts}",
        if slow { " slow inserts" } else { "" },
        t.acked, t.lost, t.duplicates, t.foreign
    );
    assert_exactly_once(&ch, &acked, &sent);
    assert_rollups_agree(&ch, "several sinks, kill -9");
}

/// Waits until the edge on `port` acknowledges an event again (after the
/// broker lost its data), on a fresh connection each time; the event's id
/// goes into `acked`.
fn wait_accepting(port: u16, acked: &mut HashSet<String>) {
    wait_for(
        "the edge taking events again",
        Duration::from_secs(60),
        || {
            let e = [event(
                0,
                "00000000-0000-0000-0000-000000000000",
                "33333333-3333-3333-3333-333333333333",
            )];
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            use std::io::Write;
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            if s.write_all(&ingest_request(DEV, &batch(&e), "")).is_err() {
                return false;
            }
            let ok = read_response(&mut std::io::BufReader::new(s)).is_ok_and(|r| r.status == 200);
            if ok {
                acked.insert(e[0].get("id").unwrap().as_str().unwrap().to_string());
            }
            ok
        },
    );
}

/// `records` ingest requests of two events each, one session per request
/// (so they spread over the partitions), sessions named by `prefix`.
fn send_records(port: u16, prefix: &str, records: usize, acked: &mut HashSet<String>) {
    for i in 0..records {
        let session = format!("{prefix}-{i:012}");
        let events: Vec<_> = (0..2)
            .map(|k| event(k, "00000000-0000-0000-0000-000000000000", &session))
            .collect();
        send(port, DEV, &events, acked);
    }
}

/// Partitions of the events topic with receipts in ClickHouse.
fn partitions_with_receipts(ch: &ClickHouse) -> usize {
    ch.query(
        "SELECT count(DISTINCT broker_partition) FROM overwatch.events \
         WHERE tenant_id = toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff')",
    )
    .parse()
    .unwrap()
}

fn sink_state(node: &Node) -> Option<String> {
    node.sink_health()
        .and_then(|h| h.get("state").and_then(|s| s.as_str().map(str::to_string)))
}

/// Deletes the events topic and creates it again with as many partitions,
/// as an operator "cleaning up" a topic would.
///
/// On a loaded machine a create right after the delete can meet the old
/// topic still listed (`TopicAlreadyExists`) or time out; both are retried
/// (the delete too), and a failure names every answer seen.
fn recreate_events_topic(broker: &Broker) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let md = admin
        .inner()
        .fetch_metadata(Some("events"), timeout)
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    assert!(partitions > 1, "{partitions} partitions");
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let delete = || -> Result<(), String> {
        let rs = futures_executor::block_on(admin.delete_topics(&["events"], &opts))
            .map_err(|e| format!("delete: {e}"))?;
        for r in rs {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(format!("delete: {code:?}")),
            }
        }
        Ok(())
    };
    let topic = NewTopic::new("events", partitions, TopicReplication::Fixed(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<String> = Vec::new();
    let mut deleted = false;
    loop {
        if !deleted {
            match delete() {
                Ok(()) => deleted = true,
                Err(e) => seen.push(e),
            }
        }
        if deleted {
            match futures_executor::block_on(admin.create_topics([&topic], &opts)) {
                Ok(rs) if rs.iter().all(|r| r.is_ok()) => break,
                Ok(rs) => {
                    for r in rs {
                        if let Err((_, code)) = r {
                            if code == RDKafkaErrorCode::TopicAlreadyExists {
                                deleted = false;
                            }
                            seen.push(format!("create: {code:?}"));
                        }
                    }
                }
                Err(e) => seen.push(format!("create: {e}")),
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the events topic was not created again within 120 s; answers: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    if !seen.is_empty() {
        println!("topic-recreated | retried: {seen:?}");
    }
}

/// `ingestion-engine ARGS` with `node`'s config against `broker` and `ch`;
/// its standard output (it must succeed).
fn engine_cli(node: &Node, broker: &Broker, ch: &ClickHouse, args: &[&str]) -> String {
    let out = engine_command(&node.dir.join("config.toml"), &broker.addr(), node.port)
        .env("INGESTION_CLICKHOUSE_URL", ch.url())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ingestion-engine sink accept-reset` for `node`'s config; its JSON lines.
fn accept_reset(node: &Node, broker: &Broker, ch: &ClickHouse) -> Vec<sonic_rs::Value> {
    engine_cli(node, broker, ch, &["sink", "accept-reset"])
        .lines()
        .map(|l| sonic_rs::from_str(l).unwrap())
        .collect()
}

fn accepted(lines: &[sonic_rs::Value]) -> usize {
    lines
        .iter()
        .filter(|l| l.get("accepted").and_then(|a| a.as_bool()) == Some(true))
        .count()
}

#[test]
fn a_recreated_topic_grown_past_the_old_end_is_held_then_stored_once_accepted() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let mut node = Node::start(&broker, &ch);
    let mut before = HashSet::new();
    send_records(node.port, "55555555-2222-2222-2222", 30, &mut before);
    wait_landed(&ch, &before, Duration::from_secs(90), "before the reset");
    let held_partitions = partitions_with_receipts(&ch);
    node.kill9();
    // The topic starts again while no sink runs, and grows well past the
    // offsets ClickHouse holds on every partition: comparing offsets with
    // the broker's end cannot tell; only the records themselves can.
    recreate_events_topic(&broker);
    let edge = Node::start_with(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("INGESTION_ROLES", "ingest".to_string())],
    );
    let mut after = HashSet::new();
    send_records(edge.port, "66666666-2222-2222-2222", 200, &mut after);
    let mut sink = Node::new(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("INGESTION_ROLES", "sink".to_string())],
    );
    sink.spawn_sink();
    wait_for(
        "the sink holding every partition it stored from",
        Duration::from_secs(90),
        || {
            sink.metric("sink_topic_reset_partitions").unwrap_or(0.0) == held_partitions as f64
                && sink_state(&sink).as_deref() == Some("topic_reset")
        },
    );
    // Give a skipping sink the time to commit past what it skipped.
    std::thread::sleep(Duration::from_secs(3));
    let rows = stored(&ch);
    let landed = after.iter().filter(|id| rows.contains_key(*id)).count();
    println!(
        "topic-recreated | {} events after the reset, {landed} in ClickHouse while held, {held_partitions} partitions held",
        after.len()
    );
    let all: HashSet<String> = before.union(&after).cloned().collect();
    assert_exactly_once(&ch, &before, &all);
    assert_eq!(
        sink.metric("sink_records_already_stored_total"),
        Some(0.0),
        "a record of the new topic was taken for one already stored"
    );
    // The operator accepts the new log: the sink stores it from its start.
    let lines = accept_reset(&sink, &broker, &ch);
    assert_eq!(accepted(&lines), held_partitions, "{lines:?}");
    wait_landed(
        &ch,
        &all,
        Duration::from_secs(90),
        "after the reset was accepted",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_exactly_once(&ch, &all, &all);
    assert_rollups_agree(&ch, "after the reset was accepted");
    wait_for(
        "the sink out of topic_reset",
        Duration::from_secs(30),
        || {
            sink.metric("sink_topic_reset_partitions") == Some(0.0)
                && sink_state(&sink).as_deref() == Some("ok")
        },
    );
    // Accepting again changes nothing: the log is now the one stored from.
    let again = accept_reset(&sink, &broker, &ch);
    assert_eq!(accepted(&again), 0, "{again:?}");
    assert_eq!(sink.metric("sink_records_already_stored_total"), Some(0.0));
}

#[test]
fn a_broker_that_lost_its_data_holds_the_partitions_instead_of_skipping_records() {
    let ch = ClickHouse::start();
    let mut broker = Broker::start();
    let mut node = Node::start(&broker, &ch);
    // Many records (one per request, keyed by session) on every partition.
    let mut before = HashSet::new();
    send_records(node.port, "22222222-2222-2222-2222", 120, &mut before);
    wait_landed(
        &ch,
        &before,
        Duration::from_secs(90),
        "before the broker lost its data",
    );
    broker.wipe_and_restart();
    // Restarted with it, as an operator replacing a broker would (an edge
    // left running through a broker's data loss is another story); the
    // topic is created again and its offsets start again at 0.
    node.kill9();
    node.spawn();
    let mut after = HashSet::new();
    wait_accepting(node.port, &mut after);
    for i in 0..30 {
        let session = format!("44444444-4444-4444-4444-{i:012}");
        let events = [event(0, "00000000-0000-0000-0000-000000000000", &session)];
        send(node.port, DEV, &events, &mut after);
    }
    wait_for(
        "the sink saying the topic was reset",
        Duration::from_secs(90),
        || {
            node.metric("sink_topic_reset_partitions").unwrap_or(0.0) > 0.0
                && sink_state(&node).as_deref() == Some("topic_reset")
        },
    );
    // The new records were not skipped as "already stored": they wait.
    let rows = stored(&ch);
    let skipped_or_stored = after.iter().filter(|id| rows.contains_key(*id)).count();
    println!(
        "topic-reset | {} events after the reset, {} in ClickHouse (from partitions whose stored offsets were below the new end), health topic_reset",
        after.len(),
        skipped_or_stored
    );
    assert_exactly_once(&ch, &before, &before.union(&after).cloned().collect());
}

/// librdkafka's default `message.max.bytes`: a dead letter larger than
/// this is refused by the sink's producer.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

#[test]
fn a_refused_dead_letter_holds_its_record_and_commits_nothing_past_it() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let edge = Node::start_with(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("INGESTION_ROLES", "ingest".to_string())],
    );
    let sink_env = || vec![("INGESTION_ROLES", "sink".to_string())];
    let mut sink = Node::new(&broker, &ch.url(), TEST_CONFIG, sink_env());
    sink.spawn_sink();
    let mut acked = HashSet::new();
    send_records(edge.port, "77777777-2222-2222-2222", 10, &mut acked);
    wait_landed(&ch, &acked, Duration::from_secs(60), "before the fault");
    // Undecodable records too large for the dead-letter producer's default
    // limit: the broker client refuses each dead letter.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    let mut poison = vec![1u8];
    poison.resize(DEFAULT_MESSAGE_MAX_BYTES + 500_000, b'x');
    for key in 0u8..6 {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to("events")
                    .key(&[key; 32])
                    .payload(&poison),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let mut later = HashSet::new();
    send_records(edge.port, "88888888-2222-2222-2222", 60, &mut later);
    acked.extend(later.iter().cloned());
    wait_for(
        "the dead letters refused and the sink saying so",
        Duration::from_secs(60),
        || {
            sink.metric("sink_dead_letter_failures_total")
                .unwrap_or(0.0)
                >= 1.0
                && sink_state(&sink).as_deref() == Some("dead_letters_failing")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.metric("sink_dead_letters_total"), Some(0.0));
    let rows = stored(&ch);
    let waiting = acked.iter().filter(|id| !rows.contains_key(*id)).count();
    assert!(
        waiting > 0,
        "every record behind a refused dead letter was stored"
    );
    // Only the dead letters' partitions wait: records sent after them on
    // the other partitions landed meanwhile.
    let landed_meanwhile = later.iter().filter(|id| rows.contains_key(*id)).count();
    assert!(
        landed_meanwhile > 0,
        "a refused dead letter held every partition"
    );
    // kill -9, and a sink allowed larger messages: the held records were
    // not committed past, so they come again and go to the dead letters.
    sink.kill9();
    let bigger =
        format!("{TEST_CONFIG}\n[redpanda.librdkafka]\n\"message.max.bytes\" = \"10000000\"\n");
    let mut sink = Node::new(&broker, &ch.url(), &bigger, sink_env());
    sink.spawn_sink();
    wait_landed(
        &ch,
        &acked,
        Duration::from_secs(120),
        "after the sink was allowed larger dead letters",
    );
    wait_for("the dead letters written", Duration::from_secs(60), || {
        sink.metric("sink_dead_letters_total") == Some(6.0)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_exactly_once(&ch, &acked, &acked);
    assert_rollups_agree(&ch, "after the dead letters were written");
    let letters = engine_cli(&sink, &broker, &ch, &["dlq", "list"]);
    assert_eq!(letters.lines().count(), 6, "{letters}");
    println!(
        "dead-letter-refused | {} acked, all once; {waiting} waited behind 6 refused dead letters, then 6 dead letters after a restart",
        acked.len(),
    );
    wait_for("the sink healthy again", Duration::from_secs(30), || {
        sink_state(&sink).as_deref() == Some("ok")
    });
}

/// The sum of the events topic's high watermarks: records ever written.
fn events_written(broker: &Broker) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let md = c.fetch_metadata(Some("events"), timeout).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| c.fetch_watermarks("events", p.id(), timeout).unwrap().1)
        .sum()
}

#[test]
fn a_dead_letter_written_twice_is_replayed_once() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Message, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let node = Node::start(&broker, &ch);
    let mut acked = HashSet::new();
    send_records(node.port, "aaaaaaaa-2222-2222-2222", 4, &mut acked);
    wait_landed(&ch, &acked, Duration::from_secs(60), "before the replay");
    // Two real records of the events topic, as dead letters: the first one
    // twice, as a sink that crashed between writing a dead letter and
    // committing its record writes it.
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["events"]).unwrap();
    let mut records = Vec::new();
    wait_for("two records read", Duration::from_secs(30), || {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) {
            records.push(m.detach());
        }
        records.len() >= 2
    });
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .unwrap();
    for m in [&records[0], &records[0], &records[1]] {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some("a bug since fixed"),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&m.partition().to_string()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&m.offset().to_string()),
            });
        let mut r = BaseRecord::<[u8], [u8]>::to("events-dlq")
            .payload(m.payload().unwrap())
            .headers(headers);
        if let Some(k) = m.key() {
            r = r.key(k);
        }
        producer.send(r).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let replay = || engine_cli(&node, &broker, &ch, &["dlq", "replay"]);
    let before = events_written(&broker);
    let first = replay();
    assert!(
        first.starts_with("replayed 2 dead letters (1 copies"),
        "{first}"
    );
    assert_eq!(events_written(&broker), before + 2, "{first}");
    let second = replay();
    assert!(second.starts_with("replayed 0 dead letters (0"), "{second}");
    assert_eq!(events_written(&broker), before + 2);
    // The replayed records' events were stored already: the sink's dedup
    // window drops them.
    std::thread::sleep(Duration::from_secs(3));
    assert_exactly_once(&ch, &acked, &acked);
}

#[test]
fn a_batch_cut_between_its_inserts_resumes_exactly_even_after_a_class_change() {
    let ch = ClickHouse::start();
    let proxy = common::slow::SlowProxy::start(ch.http_port);
    let broker = Broker::start();
    let edge = Node::start_with(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("INGESTION_ROLES", "ingest".to_string())],
    );
    let sink_env = || {
        vec![
            ("INGESTION_ROLES", "sink".to_string()),
            ("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "30000".to_string()),
        ]
    };
    let mut sink = Node::new(&broker, &proxy.url(), TEST_CONFIG, sink_env());
    sink.spawn_sink();
    wait_migrated(&ch);
    let tenant = "00000000-0000-0000-0000-000000000000";
    let session = "12121212-1212-1212-1212-121212121212";
    // The partition taken over first, so that what follows is one batch.
    let mut acked = HashSet::new();
    send(edge.port, DEV, &[event(0, tenant, session)], &mut acked);
    wait_landed(&ch, &acked, Duration::from_secs(60), "the first event");
    // One record whose events fall on two days: one batch, two inserts.
    let events: Vec<_> = (0..20)
        .map(|i| {
            let mut e = event(i, tenant, session);
            let ts = ago(if i % 2 == 0 { 5 } else { 2 * 86_400 + 60 });
            e.as_object_mut()
                .unwrap()
                .insert("timestamp", sonic_rs::Value::from(ts.as_str()));
            e
        })
        .collect();
    // ClickHouse answers 4 s late: the first insert lands at once, and the
    // sink waits for its answer before sending the second.
    proxy.delay_ms.store(4000, Ordering::SeqCst);
    send(edge.port, DEV, &events, &mut acked);
    let receipts = |index: u32| -> u64 {
        ch.query(&format!(
            "SELECT count() FROM overwatch.events WHERE tenant_id = toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff') \
             AND visitParamExtractUInt(properties, 'inserts') = 2 AND visitParamExtractUInt(properties, 'index') = {index}"
        ))
        .parse()
        .unwrap()
    };
    let start = std::time::Instant::now();
    while receipts(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the batch's first insert never landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.kill9();
    assert_eq!(receipts(1), 0, "the second insert was sent before the kill");
    proxy.delay_ms.store(0, Ordering::SeqCst);
    // The tenant's retention class changes before the next owner resumes:
    // the events of the first insert would now fall in another ClickHouse
    // partition, yet they are stored.
    let changed = TEST_CONFIG.replacen("retention_days = 3650", "retention_days = 365", 1);
    assert_ne!(changed, TEST_CONFIG);
    let mut sink = Node::new(&broker, &proxy.url(), &changed, sink_env());
    sink.spawn_sink();
    wait_landed(&ch, &acked, Duration::from_secs(90), "after the resume");
    std::thread::sleep(Duration::from_secs(2));
    assert_exactly_once(&ch, &acked, &acked);
    assert_rollups_agree(&ch, "after the resume");
    // Today's events (the first insert) kept the old class; the other
    // day's were written by the new owner, under the new one.
    let classes = ch.query(&format!(
        "SELECT toDate(event_time) = today() AS now, retention_days, count() FROM overwatch.events \
         WHERE session_id = toUUID('{session}') GROUP BY now, retention_days ORDER BY now, retention_days"
    ));
    assert_eq!(classes, "0\t365\t10\n1\t3650\t11", "{classes}");
    println!("cut-batch | 21 acked, all once; the resumed batch wrote the 10 events of its missing insert under the new class");
}
