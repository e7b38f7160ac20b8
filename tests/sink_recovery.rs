//! The sink after a crash, against the real tansu (SQLite storage) and the
//! real ClickHouse 18.16: `kill -9` of the whole engine under load and a
//! restart with the same config; a group member that holds partitions and
//! never commits. Nothing acknowledged may be lost or doubled, and a stopped
//! sink must show in `/metrics` and `/health`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flow::*;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sonic_rs::JsonValueTrait;

#[test]
fn kill9_of_the_engine_under_load_twice_loses_nothing_and_doubles_nothing() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    // The production insert timeout (30 s), not the tests' 5 s: recovery
    // must not wait on it.
    let mut node = Node::start_with(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "30000".into())],
    );
    let mut load = Load::start(node.port, 20_000, Duration::from_secs(240));
    for round in 1..=2 {
        // A settled group under load, with rows landing, then SIGKILL.
        let before = stored(&ch).len();
        wait_for(
            "rows landing before the kill",
            Duration::from_secs(60),
            || {
                node.metric("sink_assigned_partitions") == Some(6.0)
                    && stored(&ch).len() >= before + 1000
            },
        );
        node.kill9();
        node.spawn();
        let restarted = Instant::now();
        // While the dead member still holds the group, the new sink owns
        // nothing, and says how far behind the group is instead of 0.
        let mut honest = false;
        while restarted.elapsed() < Duration::from_secs(20) && !honest {
            honest = node.metric("sink_assigned_partitions") == Some(0.0)
                && node.metric("sink_group_lag").is_some_and(|l| l > 0.0);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            honest,
            "round {round}: no sample with 0 partitions and a known, positive group lag"
        );
        let acked = load.acked();
        wait_landed(
            &ch,
            &acked,
            LANDING_BOUND.saturating_sub(restarted.elapsed()),
            &format!("round {round}"),
        );
        eprintln!(
            "round {round}: {} acknowledged events in ClickHouse {:?} after the restart (rejoins: {:?})",
            acked.len(),
            restarted.elapsed(),
            node.metric("sink_rejoins_total"),
        );
        assert!(node.metric("sink_assigned_partitions").unwrap() > 0.0);
        assert_exactly_once(&ch, &acked, &load.sent());
    }
    load.finish();
    let acked = load.acked();
    let sent = load.sent();
    wait_landed(&ch, &acked, LANDING_BOUND, "after the load");
    assert_exactly_once(&ch, &acked, &sent);
    assert_rollups_agree(&ch, "kill -9 of the engine");
    // Caught up: the group's lag is 0 and nothing is stalled.
    wait_for("group lag back to 0", Duration::from_secs(30), || {
        node.metric("sink_group_lag") == Some(0.0)
            && node.metric("sink_stalled_partitions") == Some(0.0)
    });
    let health = node.sink_health().unwrap();
    assert_eq!(health["state"].as_str(), Some("ok"), "{health:?}");
    assert_eq!(health["group_lag"].as_i64(), Some(0), "{health:?}");
    assert_eq!(node.metric("sink_assigned_partitions"), Some(6.0));
}

#[test]
fn partitions_held_by_a_member_that_never_commits_show_as_stalled_until_it_leaves() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let node = Node::start(&broker, &ch);
    wait_for("the sink owns the topic", Duration::from_secs(60), || {
        node.metric("sink_assigned_partitions") == Some(6.0)
    });
    // A member of the sink's group that polls (so it stays in the group) but
    // never commits: its partitions make no progress.
    let idle: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "ingestion-engine-sink")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    idle.subscribe(&["events"]).unwrap();
    let idle_stop = Arc::new(AtomicBool::new(false));
    let idle_thread = {
        let stop = idle_stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = idle.poll(Duration::from_millis(100));
            }
            // Dropping it leaves the group.
            drop(idle);
        })
    };
    wait_for(
        "the idle member takes partitions",
        Duration::from_secs(60),
        || {
            node.metric("sink_assigned_partitions")
                .is_some_and(|n| n > 0.0 && n < 6.0)
        },
    );
    let mut load = Load::start(node.port, 2_000, Duration::from_secs(120));
    // Its partitions stall: visible in /metrics and /health.
    wait_for(
        "stalled partitions reported",
        Duration::from_secs(60),
        || {
            node.metric("sink_stalled_partitions")
                .is_some_and(|n| n > 0.0)
        },
    );
    let health = node.sink_health().unwrap();
    assert_eq!(health["state"].as_str(), Some("sink_stalled"), "{health:?}");
    assert!(health["group_lag"].as_i64().unwrap() > 0, "{health:?}");
    assert!(node.metric("sink_group_lag").unwrap() > 0.0);
    // The sink's own partitions are fine, so it tries a rebalance; the idle
    // member still answers and takes partitions again.
    wait_for(
        "the sink rejoins its group",
        Duration::from_secs(60),
        || node.metric("sink_rejoins_total").is_some_and(|n| n >= 1.0),
    );
    // Once that rebalance is over (tansu 0.6 loses its group leader for good
    // when the leader leaves while the group is still forming), the idle
    // member leaves: the sink takes everything and catches up.
    wait_for("the sink left the group", Duration::from_secs(30), || {
        node.metric("sink_assigned_partitions") == Some(0.0)
    });
    wait_for(
        "the sink is back in the group",
        Duration::from_secs(60),
        || {
            node.metric("sink_assigned_partitions")
                .is_some_and(|n| n > 0.0)
        },
    );
    idle_stop.store(true, Ordering::SeqCst);
    idle_thread.join().unwrap();
    load.finish();
    let acked = load.acked();
    let sent = load.sent();
    wait_landed(&ch, &acked, LANDING_BOUND, "after the idle member left");
    assert_exactly_once(&ch, &acked, &sent);
    wait_for("stall cleared", Duration::from_secs(30), || {
        node.metric("sink_stalled_partitions") == Some(0.0)
            && node.metric("sink_group_lag") == Some(0.0)
    });
    assert_eq!(node.metric("sink_assigned_partitions"), Some(6.0));
    assert_eq!(node.sink_health().unwrap()["state"].as_str(), Some("ok"));
}
