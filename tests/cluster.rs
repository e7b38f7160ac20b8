//! Cluster mode against a real ClickHouse cluster: ZooKeeper and 2 shards ×
//! 2 replicas of clickhouse-server 18.16 on loopback (`common::cluster`).
//!
//! - The engine checks `[[clickhouse.shards]]` against the cluster
//!   (`check-config` prints the topology) and refuses a listing that
//!   disagrees with it, naming the difference.
//! - `migrate` creates the schema `ON CLUSTER` from empty, idempotently:
//!   replicated local tables per shard, `Distributed` tables under the names
//!   every reader uses, the tenant registry on every node; and refuses a
//!   single server's database rather than reshape it.

mod common;

use std::process::Output;

use common::cluster::{engine, ok, Cluster, CLUSTER};
use common::*;
use sonic_rs::JsonContainerTrait;

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "it succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The engine of every table `name` on `node`.
fn engine_of(node: &ClickHouse, name: &str) -> String {
    node.query(&format!(
        "SELECT engine FROM system.tables WHERE database = 'overwatch' AND name = '{name}'"
    ))
}

#[test]
fn migrate_creates_the_schema_on_every_node_once_and_readers_keep_their_names() {
    let cluster = Cluster::start(2, 2);
    let dir = scratch_dir("cluster-migrate");
    let config = cluster.config_section();
    // The topology, as check-config shows it.
    let shown = ok(&engine(&dir, &config, &["check-config"]));
    assert!(
        shown.contains(&format!("# cluster {CLUSTER}: 2 shards in system.clusters")),
        "{shown}"
    );
    assert!(!shown.contains("DISAGREES"), "{shown}");
    for (s, r, node) in cluster.each() {
        let line = format!(
            "#     {}: shard_num [{}], {{shard}} {:02}, {{replica}} r{}",
            node.url(),
            s + 1,
            s + 1,
            r + 1
        );
        assert!(shown.contains(&line), "{line} in {shown}");
    }
    let first = ok(&engine(&dir, &config, &["migrate"]));
    assert!(
        first.contains("applied now: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
        "{first}"
    );
    let again = ok(&engine(&dir, &config, &["migrate"]));
    assert!(again.contains("applied now: []"), "{again}");
    for (_, _, node) in cluster.each() {
        assert_eq!(engine_of(node, "events_local"), "ReplicatedMergeTree");
        assert_eq!(
            engine_of(node, "sessions_local"),
            "ReplicatedSummingMergeTree"
        );
        assert_eq!(engine_of(node, "events"), "Distributed");
        assert_eq!(engine_of(node, "sessions"), "Distributed");
        assert_eq!(engine_of(node, "pageviews_hourly"), "Distributed");
        assert_eq!(engine_of(node, "tenants"), "ReplicatedReplacingMergeTree");
        assert_eq!(engine_of(node, "schema_migrations"), "ReplicatedMergeTree");
        // Replicated to every node, asynchronously: each has it soon.
        wait_for(
            "the migrations replicated to every node",
            std::time::Duration::from_secs(30),
            || {
                node.query("SELECT count(DISTINCT version) FROM overwatch.schema_migrations")
                    == "10"
            },
        );
        let window = node.query(
            "SELECT create_table_query FROM system.tables WHERE database = 'overwatch' AND name = 'events_local'",
        );
        assert!(
            window.contains("replicated_deduplication_window = 20000"),
            "{window}"
        );
    }
    // A tenant created through one node is in the registry of every node.
    let created = ok(&engine(
        &dir,
        &config,
        &["tenant", "create", "--name", "acme", "--tier", "paid"],
    ));
    assert!(created.contains("tenant"), "{created}");
    for (_, _, node) in cluster.each() {
        wait_for(
            "the tenant on every node",
            std::time::Duration::from_secs(30),
            || node.query("SELECT count() FROM overwatch.tenants WHERE name = 'acme'") == "1",
        );
    }
    // Rows written into one shard's local table: on both its replicas, in
    // its roll-ups through the views, and read through the Distributed
    // names from a node of the other shard.
    let rows = |shard: usize, n: u32| {
        cluster
            .node(shard, 0)
            .client()
            .execute(&format!(
                "INSERT INTO overwatch.events_local (tenant_id, event_id, session_id, event_type, event_time, \
                 retention_days, path, broker_partition, broker_offset) \
                 SELECT toUUID('00000000-0000-0000-0000-000000000000'), generateUUIDv4(), \
                 toUUID('{:08x}-0000-4000-8000-000000000000'), 'pageview', now(), 90, \
                 concat('/p', toString(number)), {shard}, number FROM system.numbers LIMIT {n}",
                shard + 1
            ))
            .unwrap();
    };
    rows(0, 3);
    rows(1, 5);
    for (s, _, node) in cluster.each() {
        let want = if s == 0 { "3" } else { "5" };
        wait_for(
            "replication within the shard",
            std::time::Duration::from_secs(30),
            || {
                node.query("SELECT count() FROM overwatch.events_local") == want
                    && node.query("SELECT sum(pageviews) FROM overwatch.sessions_local") == want
            },
        );
    }
    let reader = cluster.node(1, 1);
    assert_eq!(reader.query("SELECT count() FROM overwatch.events"), "8");
    assert_eq!(
        reader.query("SELECT sum(pageviews) FROM overwatch.sessions"),
        "8"
    );
    assert_eq!(
        reader.query("SELECT count() FROM overwatch.pageviews_hourly"),
        "8"
    );
    // An INSERT through a Distributed name is refused, not spread at random.
    let spread = reader.client().execute(
        "INSERT INTO overwatch.events (tenant_id, event_time) VALUES (generateUUIDv4(), now())",
    );
    assert!(spread.is_err(), "{spread:?}");
}

#[test]
fn a_listing_that_disagrees_with_the_cluster_is_refused_naming_the_difference() {
    let cluster = Cluster::start(2, 2);
    let dir = scratch_dir("cluster-listing");
    let url = |s: usize, r: usize| cluster.node(s, r).url();
    let section = |shards: &[&[String]]| {
        let mut out = format!(
            "[clickhouse]\nurl = \"{}\"\ncluster = \"{CLUSTER}\"\n",
            url(0, 0)
        );
        for s in shards {
            let list: Vec<String> = s.iter().map(|u| format!("\"{u}\"")).collect();
            out.push_str(&format!(
                "[[clickhouse.shards]]\nreplicas = [{}]\n",
                list.join(", ")
            ));
        }
        out
    };
    let cases = [
        (
            section(&[&[url(1, 0), url(1, 1)], &[url(0, 0), url(0, 1)]]),
            "is shard 2 of `acc` (system.clusters, is_local), listed as shard 1",
        ),
        (
            section(&[&[url(0, 0), url(0, 1), url(1, 0), url(1, 1)]]),
            "clickhouse.shards lists 1 shards; cluster `acc` has 2",
        ),
        (
            section(&[&[url(0, 0)], &[url(1, 0), url(1, 1)]]),
            "clickhouse.shards[0] lists 1 replicas; shard 1 of `acc` has 2",
        ),
        (
            section(&[&[url(0, 0), url(0, 1)], &[url(1, 0), url(1, 1)]])
                .replace(&format!("cluster = \"{CLUSTER}\""), "cluster = \"nosuch\""),
            "cluster `nosuch` is not in system.clusters",
        ),
    ];
    for (config, says) in &cases {
        let shown = engine(&dir, config, &["check-config"]);
        let err = refused(&shown);
        assert!(err.contains(says), "{says}: {err}");
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains("# DISAGREES:")
                || says.contains("nosuch"),
            "{}",
            String::from_utf8_lossy(&shown.stdout)
        );
        let err = refused(&engine(&dir, config, &["migrate"]));
        assert!(err.contains(says), "migrate: {says}: {err}");
        // serve refuses to start on it, whatever its roles.
        let err = refused(&engine(&dir, config, &["serve"]));
        assert!(err.contains(says), "serve: {says}: {err}");
    }
    // Nothing was created on a cluster it refused.
    assert_eq!(
        cluster
            .node(0, 0)
            .query("SELECT count() FROM system.databases WHERE name = 'overwatch'"),
        "0"
    );
}

#[test]
fn a_single_servers_database_on_a_cluster_node_is_refused_not_reshaped() {
    let cluster = Cluster::start(2, 1);
    let dir = scratch_dir("cluster-single");
    // The node was a single server once: its database has every migration.
    clickhouse_client::schema::migrate(&cluster.node(0, 0).client(), "overwatch").unwrap();
    let err = refused(&engine(&dir, &cluster.config_section(), &["migrate"]));
    assert!(
        err.contains("is a single server's (`events` is MergeTree)")
            && err.contains("Moving to a cluster"),
        "{err}"
    );
    assert_eq!(engine_of(cluster.node(0, 0), "events"), "MergeTree");
    assert_eq!(
        cluster
            .node(1, 0)
            .query("SELECT count() FROM system.databases WHERE name = 'overwatch'"),
        "0"
    );
}

#[test]
fn retention_drops_expired_partitions_on_every_replica_of_every_shard() {
    let cluster = Cluster::start(2, 2);
    let dir = scratch_dir("cluster-retention");
    let config = cluster.config_section();
    ok(&engine(&dir, &config, &["migrate"]));
    // Per shard: pageviews of a free tenant (1 day) from 5 days ago, and of
    // an enterprise tenant from the same day, kept.
    for shard in 0..2 {
        for (retention, n) in [(1, 4), (3650, 2)] {
            cluster
                .node(shard, 0)
                .client()
                .execute(&format!(
                    "INSERT INTO overwatch.events_local (tenant_id, event_id, session_id, event_type, event_time, \
                     retention_days, path) SELECT generateUUIDv4(), generateUUIDv4(), generateUUIDv4(), 'pageview', \
                     now() - 5 * 86400, {retention}, '/old' FROM system.numbers LIMIT {n}"
                ))
                .unwrap();
        }
    }
    for (_, _, node) in cluster.each() {
        wait_for("replication", std::time::Duration::from_secs(30), || {
            node.query("SELECT count() FROM overwatch.events_local") == "6"
        });
    }
    let out = ok(&engine(&dir, &config, &["retention"]));
    // events, sessions and pageviews_hourly: one expired partition each.
    assert!(out.contains("dropped 3 partitions"), "{out}");
    for (s, r, node) in cluster.each() {
        wait_for(
            "the drop on every replica",
            std::time::Duration::from_secs(30),
            || {
                node.query("SELECT count() FROM overwatch.events_local") == "2"
                    && node.query("SELECT sum(pageviews) FROM overwatch.sessions_local") == "2"
                    && node.query("SELECT sum(pageviews) FROM overwatch.pageviews_hourly_local")
                        == "2"
            },
        );
        assert_eq!(
            node.query("SELECT DISTINCT retention_days FROM overwatch.events_local"),
            "3650",
            "shard {s} replica {r}"
        );
    }
}

/// Pageviews and clicks of `sessions` sessions of the development tenant
/// over the last day, as `INSERT` values per shard of `shards` (a session's
/// rows on one shard, as the sink puts a broker partition's).
fn traffic(sessions: u32, shards: usize, now: i64) -> Vec<Vec<String>> {
    let paths = ["/", "/blog/a", "/blog/b", "/pricing"];
    let referrers = [
        "",
        "https://www.google.com/search",
        "https://news.example/x",
    ];
    let mut out = vec![Vec::new(); shards];
    for s in 0..sessions {
        let session =
            uuid::Uuid::from_u128(0x5e55_0000_0000_4000_8000_0000_0000_0000 | u128::from(s));
        let start = now - 3600 - i64::from(s) * 1300;
        let user = if s % 3 == 0 {
            format!("user-{}", s / 6)
        } else {
            String::new()
        };
        for p in 0..=(s % 4) {
            let path = paths[((s + p) % 4) as usize];
            for (ty, selector) in [("pageview", ""), ("click", "button.buy")] {
                if ty == "click" && p % 2 == 1 {
                    continue;
                }
                out[s as usize % shards].push(format!(
                    "(toUUID('{DEV_TENANT}'), toUUID('{}'), toUUID('{session}'), '{ty}', toDateTime({}), 90, '{path}', \
                     '{user}', '{}', 'https://shop.example{path}', '{selector}', 'Chrome', 'Linux', 'Desktop')",
                    uuid::Uuid::new_v4(),
                    start + i64::from(p) * 40,
                    referrers[(s % 3) as usize],
                ))
            }
        }
    }
    out
}

fn insert_traffic(client: &clickhouse_client::Client, table: &str, rows: &[String]) {
    client
        .execute(&format!(
            "INSERT INTO overwatch.{table} (tenant_id, event_id, session_id, event_type, event_time, retention_days, \
             path, user_id, referrer, url, selector, browser, os, device) VALUES {}",
            rows.join(", ")
        ))
        .unwrap();
}

#[test]
fn the_query_api_answers_on_a_cluster_as_on_one_server() {
    let cluster = Cluster::start(2, 1);
    let single = ClickHouse::start();
    clickhouse_client::schema::migrate(&single.client(), "overwatch").unwrap();
    let dir = scratch_dir("cluster-query");
    let section = cluster.config_section();
    ok(&engine(&dir, &section, &["migrate"]));
    let now: i64 = single
        .query("SELECT toUnixTimestamp(now())")
        .parse()
        .unwrap();
    let shards = traffic(90, 2, now);
    for (i, rows) in shards.iter().enumerate() {
        insert_traffic(&single.client(), "events", rows);
        insert_traffic(&cluster.node(i, 0).client(), "events_local", rows);
    }
    let broker = Broker::start();
    let one = Engine::start_on(&broker, &single, "ingest");
    let many = Engine::start_with(
        &broker,
        &format!("{section}\n{TEST_CONFIG}"),
        &[("INGESTION_ROLES", "ingest")],
    );
    let days = single.query("SELECT toString(today() - 3), toString(today() + 1)");
    let (from, to) = days.split_once('\t').unwrap();
    let whole = format!(r#""date_range":["{from}","{to}"]"#);
    let ragged = r#""date_range":"7d""#.to_string();
    let mut asked = 0;
    for range in [&whole, &ragged] {
        for (metrics, more) in [
            (
                r#""visitors","visits","pageviews","bounce_rate","visit_duration""#,
                "",
            ),
            (r#""visitors","visits""#, r#","dimensions":["time:day"]"#),
            (
                r#""pageviews","visitors""#,
                r#","dimensions":["event:page"],"filters":[["is","event:type",["pageview"]]]"#,
            ),
            (
                r#""visits","bounce_rate""#,
                r#","dimensions":["visit:entry_page"]"#,
            ),
            (r#""visitors""#, r#","dimensions":["visit:referrer"]"#),
            // Sessions with an event on a page: the events filter inside a
            // sessions query, each shard against its own events.
            (
                r#""visits","visitors""#,
                r#","filters":[["contains","event:page",["/blog"]]]"#,
            ),
            (r#""events""#, r#","dimensions":["event:type"]"#),
            (r#""clicks""#, r#","dimensions":["event:selector"]"#),
        ] {
            let body = format!(r#"{{"metrics":[{metrics}],{range}{more}}}"#);
            let answer = |port: u16| {
                let r = call(
                    "POST",
                    port,
                    "/api/v1/query",
                    &[
                        ("Authorization", DEV_AUTH),
                        ("Content-Type", "application/json"),
                    ],
                    Some(body.as_bytes()),
                );
                assert_eq!(r.status, 200, "{body}: {}", r.body);
                let mut rows: Vec<String> = r.json()["results"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|row| {
                                format!(
                                    "{} {}",
                                    sonic_rs::to_string(&row["dimensions"]).unwrap(),
                                    sonic_rs::to_string(&row["metrics"]).unwrap()
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                rows.sort();
                rows
            };
            let (a, b) = (answer(one.port), answer(many.port));
            assert!(!a.is_empty(), "{body}: no rows");
            assert_eq!(a, b, "{body}");
            asked += 1;
        }
    }
    println!("cluster-query | {asked} query API answers on a 2-shard cluster equal one server's");
}

#[test]
fn every_engine_process_heartbeats_into_the_node_registry_of_every_node() {
    let cluster = Cluster::start(2, 1);
    let dir = scratch_dir("cluster-nodes");
    let section = cluster.config_section();
    ok(&engine(&dir, &section, &["migrate"]));
    let broker = Broker::start();
    // The configuration with `clickhouse.url` on shard `s`'s node.
    let via = |s: usize| {
        section.replacen(
            &format!("url = \"{}\"", cluster.url()),
            &format!("url = \"{}\"", cluster.node(s, 0).url()),
            1,
        )
    };
    // Two edges, each reading the cluster through another node.
    let edges: Vec<Engine> = (0..2)
        .map(|s| {
            let config = via(s);
            // Each edge enforces its share of a tenant's limit.
            Engine::start_with(
                &broker,
                &format!("{config}\n[rate_limits]\nscope = \"cluster\"\n{TEST_CONFIG}"),
                &[("INGESTION_ROLES", "ingest")],
            )
        })
        .collect();
    let listed = |node: usize| ok(&engine(&dir, &via(node), &["nodes"]));
    wait_for(
        "both edges in the registry",
        std::time::Duration::from_secs(30),
        || {
            let out = listed(1);
            edges.iter().all(|e| {
                out.lines()
                    .any(|l| l.contains(&format!("127.0.0.1:{}", e.port)) && l.contains(" live"))
            })
        },
    );
    // The registry is replicated to every node, asynchronously: node 0
    // lists both soon too.
    let mut out = String::new();
    wait_for(
        "both edges in node 0's registry",
        std::time::Duration::from_secs(30),
        || {
            out = listed(0);
            edges
                .iter()
                .all(|e| out.contains(&format!("127.0.0.1:{}", e.port)))
        },
    );
    for e in &edges {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{}", e.port)))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.contains("ingest ") && line.contains(env!("CARGO_PKG_VERSION")),
            "{line}"
        );
    }
    // Two live edges: each takes half of every tenant's limit.
    for e in &edges {
        wait_for(
            "the edge's share of the limits",
            std::time::Duration::from_secs(30),
            || {
                get(e.port, "/health").is_ok_and(|r| {
                    use sonic_rs::JsonValueTrait;
                    r.json()["rate_limit_share"].as_u64() == Some(2)
                })
            },
        );
    }
    println!("nodes | {}", out.lines().count() - 1);
}
