//! Exactly once on a real ClickHouse cluster (2 shards × 2 replicas of
//! clickhouse-server 18.16 over one ZooKeeper, `common::cluster`), with
//! tansu, 2 edge processes and 3 sink processes, while a steady stream from
//! two tenants flows through clients that retry on the other edge: a sink
//! and an edge are killed (`kill -9`) and started again, one replica is
//! stopped and started again, a whole shard is down for 20 s, and ZooKeeper
//! restarts. At the end every acknowledged event is stored once, each
//! broker partition's rows sit on its shard only (`partition mod shards`),
//! both replicas of each shard hold the same rows, and the roll-ups equal a
//! `GROUP BY` over `events` (crates/worker/README.md, "On a cluster").

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::{engine, ok, Cluster};
use common::flow::*;
use common::*;

const SHOP_TENANT: &str = "55555555-5555-5555-5555-555555555555";
const SHOP_AUTH: &str = "Bearer 55555555-5555-5555-5555-555555555555:secret";

/// What a replica holds of `table`, merge-independent: rows (or summed
/// pageviews) and distinct keys.
fn replica_rows(node: &ClickHouse, table: &str) -> String {
    let what = match table {
        "events_local" => "count(), uniqExact(toString(event_id)), sum(broker_offset)",
        "sessions_local" => "sum(pageviews), uniqExact(toString(session_id), day)",
        _ => "sum(pageviews), uniqExact(path, hour)",
    };
    node.query(&format!("SELECT {what} FROM overwatch.{table}"))
}

/// `SYSTEM SYNC REPLICA` of the shard tables on `node`, retried while the
/// node comes back.
fn sync(node: &ClickHouse) {
    for t in ["events_local", "sessions_local", "pageviews_hourly_local"] {
        wait_for("the replica synced", Duration::from_secs(120), || {
            node.client()
                .execute(&format!("SYSTEM SYNC REPLICA overwatch.{t}"))
                .is_ok()
        });
    }
}

/// Waits until `node` answers queries on its replicated tables again.
fn wait_writable(node: &ClickHouse) {
    wait_for("the node answering", Duration::from_secs(120), || {
        node.client()
            .query("SELECT is_readonly FROM system.replicas WHERE table = 'events_local' FORMAT TabSeparated")
            .is_ok_and(|r| r.trim() == "0")
    });
}

/// The active parts of the shard tables on `node` that ZooKeeper does not
/// record: what an insert whose commit lost ZooKeeper (code 319, unknown
/// status; the ZooKeeper restart below) leaves on the replica that wrote
/// it, readable there although the insert may not have happened, until
/// the server's part check drops it five minutes later or a restart does
/// at once (crates/worker/README.md, "On a cluster").
fn unrecorded_parts(node: &ClickHouse) -> Vec<String> {
    let mut out = Vec::new();
    for t in ["events_local", "sessions_local", "pageviews_hourly_local"] {
        let path = node.query(&format!(
            "SELECT replica_path FROM system.replicas WHERE database = 'overwatch' AND table = '{t}'"
        ));
        let parts = node.query(&format!(
            "SELECT name FROM system.parts WHERE database = 'overwatch' AND table = '{t}' AND active \
             AND name NOT IN (SELECT name FROM system.zookeeper WHERE path = '{path}/parts')"
        ));
        out.extend(parts.lines().map(|n| format!("{t} {n}")));
    }
    out
}

/// The sum of a counter over the running sinks.
fn sum_metric(sinks: &[Node], name: &str) -> f64 {
    sinks.iter().filter_map(|s| s.metric(name)).sum()
}

#[test]
fn a_cluster_with_failing_sinks_edges_replicas_shards_and_zookeeper_stores_every_event_once() {
    let mut cluster = Cluster::start(2, 2);
    let section = cluster.config_section();
    let config = format!("{section}\n{TEST_CONFIG}");
    let dir = scratch_dir("cluster-eo");
    ok(&engine(&dir, &config, &["migrate"]));
    let broker = Broker::start();
    let url = cluster.url();
    let env = |roles: &str| {
        vec![
            ("INGESTION_ROLES", roles.to_string()),
            ("INGESTION_CLICKHOUSE_TENANTS_REFRESH_MS", "500".to_string()),
        ]
    };
    let mut edges: Vec<Node> = (0..2)
        .map(|_| Node::start_with(&broker, &url, &config, env("ingest")))
        .collect();
    let mut sinks: Vec<Node> = (0..3)
        .map(|_| {
            let mut n = Node::new(&broker, &url, &config, env("sink"));
            n.spawn_sink();
            n
        })
        .collect();
    let ports: Vec<u16> = edges.iter().map(|e| e.port).collect();
    let mut loads = vec![
        Load::start_over(
            ports.clone(),
            DEV_TENANT,
            DEV_AUTH,
            usize::MAX,
            Duration::from_secs(600),
        ),
        Load::start_over(
            ports.iter().rev().copied().collect(),
            SHOP_TENANT,
            SHOP_AUTH,
            usize::MAX,
            Duration::from_secs(600),
        ),
    ];
    let started = Instant::now();
    let step = |what: &str| {
        println!(
            "cluster-eo | {:>5.1} s | {what}",
            started.elapsed().as_secs_f64()
        )
    };
    std::thread::sleep(Duration::from_secs(5));

    step("kill -9 a sink");
    sinks[0].kill9();
    std::thread::sleep(Duration::from_secs(3));
    sinks[0].spawn_sink();
    std::thread::sleep(Duration::from_secs(3));

    step("kill -9 an edge");
    edges[0].kill9();
    std::thread::sleep(Duration::from_secs(3));
    edges[0].spawn();
    std::thread::sleep(Duration::from_secs(3));

    step("stop a replica of shard 1");
    cluster.node_mut(0, 1).stop();
    std::thread::sleep(Duration::from_secs(8));
    cluster.node_mut(0, 1).start_again();
    wait_writable(cluster.node(0, 1));
    std::thread::sleep(Duration::from_secs(3));

    step("stop shard 2 (both replicas) for 20 s");
    cluster.node_mut(1, 0).stop();
    cluster.node_mut(1, 1).stop();
    let shard1_rows = || {
        cluster
            .node(0, 0)
            .query("SELECT count() FROM overwatch.events_local")
            .parse::<u64>()
            .unwrap()
    };
    std::thread::sleep(Duration::from_secs(5));
    let before = shard1_rows();
    std::thread::sleep(Duration::from_secs(15));
    // The other shard kept flowing meanwhile.
    let after = shard1_rows();
    assert!(
        after > before,
        "shard 1 stood still while shard 2 was down ({before} rows, then {after})"
    );
    let health = sinks
        .iter()
        .filter_map(Node::sink_health)
        .collect::<Vec<_>>();
    // The on-call page of a sink that writes shard 2 shows it too, and the
    // fleet.
    let writer = health
        .iter()
        .position(|h| h.to_string().contains("\"state\":\"down\""))
        .expect("no sink showed shard 2 down");
    let (page, pretty) = common::page::drive(sinks[writer].port, &[("POLLS", "2")], Some("oncall"));
    cluster.node_mut(1, 0).start_again();
    cluster.node_mut(1, 1).start_again();
    wait_writable(cluster.node(1, 0));
    wait_writable(cluster.node(1, 1));
    std::thread::sleep(Duration::from_secs(3));

    step("restart ZooKeeper");
    cluster.zookeeper.restart();
    std::thread::sleep(Duration::from_secs(8));

    step("stream ends");
    let mut acked = HashSet::new();
    let mut sent = HashSet::new();
    for l in &mut loads {
        l.finish();
        acked.extend(l.acked());
        sent.extend(l.sent());
    }
    assert!(acked.len() > 500, "only {} acknowledged", acked.len());
    wait_landed(
        cluster.node(0, 0),
        &acked,
        Duration::from_secs(240),
        "cluster faults",
    );
    for (_, _, node) in cluster.each() {
        sync(node);
    }
    // What ZooKeeper does not record is not stored: a replica holding such
    // parts is restarted, which drops them (as its part check would within
    // five minutes), and every check below reads what the cluster keeps.
    let mut restarted = 0;
    for s in 0..2 {
        for r in 0..2 {
            let left = unrecorded_parts(cluster.node(s, r));
            if left.is_empty() {
                continue;
            }
            step(&format!(
                "replica {}/{} holds parts ZooKeeper does not record: {left:?}; restarting it",
                s + 1,
                r + 1
            ));
            cluster.node_mut(s, r).stop();
            cluster.node_mut(s, r).start_again();
            wait_writable(cluster.node(s, r));
            assert!(
                unrecorded_parts(cluster.node(s, r)).is_empty(),
                "a restart kept parts ZooKeeper does not record"
            );
            restarted += 1;
        }
    }
    let reader = cluster.node(0, 0);
    if restarted > 0 {
        wait_landed(reader, &acked, Duration::from_secs(240), "cluster faults");
        for (_, _, node) in cluster.each() {
            sync(node);
        }
    }
    let t = tally(reader, &acked, &sent);
    step(&format!(
        "acked {} | lost {} | duplicates {} | foreign {} | replica failovers {} | partition take-overs {}",
        t.acked,
        t.lost,
        t.duplicates,
        t.foreign,
        sum_metric(&sinks, "sink_replica_failovers_total"),
        sum_metric(&sinks, "sink_partition_fences_total"),
    ));
    assert_exactly_once(reader, &acked, &sent);
    assert_rollups_agree(reader, "cluster faults");

    // Each partition's rows on its shard only, and both replicas alike.
    for (s, shard) in cluster.nodes.iter().enumerate() {
        for node in shard {
            let partitions =
                node.query("SELECT groupUniqArray(broker_partition) FROM overwatch.events_local");
            let listed: Vec<i64> = partitions
                .trim()
                .trim_matches(['[', ']'])
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().unwrap())
                .collect();
            assert!(!listed.is_empty(), "shard {} holds no rows", s + 1);
            assert!(
                listed.iter().all(|p| p % 2 == s as i64),
                "shard {} holds partitions {listed:?}",
                s + 1
            );
        }
        for table in ["events_local", "sessions_local", "pageviews_hourly_local"] {
            assert_eq!(
                replica_rows(&shard[0], table),
                replica_rows(&shard[1], table),
                "shard {}: the replicas' {table} differ",
                s + 1
            );
        }
    }
    // While shard 2 was down, some sink said so per shard.
    let shown: Vec<String> = health
        .iter()
        .filter_map(|h| {
            use sonic_rs::JsonValueTrait;
            h.get("shards").map(|s| s.to_string())
        })
        .collect();
    assert!(
        shown.iter().any(|s| s.contains("\"down\"")),
        "no sink showed shard 2 down: {shown:?}"
    );
    {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        // Down, or degraded where this sink has asked only one of its
        // replicas since it stopped (a sink knows what it asked).
        assert!(
            matches!(page["shards"]["2"].as_str(), Some("down" | "degraded")),
            "{pretty}"
        );
        assert_eq!(page["shards"]["1"].as_str(), Some("ok"), "{pretty}");
        let live = page["fleet"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"].as_str() == Some("live"))
            .count();
        // 2 edges and 3 sinks (a killed one's old row may show as well).
        assert!(live >= 5, "{pretty}");
    }
}
