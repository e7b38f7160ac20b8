//! The sink after a crash, against the real tansu (SQLite storage) and the
//! real ClickHouse 18.16: `kill -9` of the whole engine under load and a
//! restart with the same config; a group member that holds partitions and
//! never commits. Nothing acknowledged may be lost or doubled, and a stopped
//! sink must show in `/metrics` and `/health`.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sonic_rs::{JsonValueTrait, Value};

/// Every acknowledged event must be in ClickHouse this long after a restart.
const LANDING_BOUND: Duration = Duration::from_secs(60);

/// The engine binary with both roles, restartable on the same port and
/// config (a restarted engine is the same node to an operator).
struct Node {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    broker: String,
    env: Vec<(&'static str, String)>,
    dir: PathBuf,
    starts: usize,
}

impl Node {
    fn start(broker: &Broker, ch: &ClickHouse) -> Node {
        let base = std::env::var_os("INGESTION_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "sink-recovery-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, TEST_CONFIG).unwrap();
        let mut node = Node {
            child: None,
            port: free_port(),
            config,
            broker: broker.addr(),
            env: vec![
                ("INGESTION_ROLES", "ingest,sink".into()),
                ("INGESTION_CLICKHOUSE_URL", ch.url()),
                ("INGESTION_SINK_BATCH_MAX_AGE_MS", "200".into()),
                ("INGESTION_SINK_RETRY_BACKOFF_MAX_MS", "500".into()),
                ("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "5000".into()),
            ],
            dir,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("engine-{}.log", self.starts));
        let env = self.env.iter().map(|(k, v)| (*k, v.as_str()));
        self.child = Some(spawn_serve(
            &self.config,
            &self.broker,
            self.port,
            env,
            &log,
        ));
        let port = self.port;
        wait_for("engine ready", Duration::from_secs(60), || {
            get(port, "/health/ready").is_ok_and(|r| r.status == 200)
        });
    }

    /// SIGKILL: no drain, no flush, no LeaveGroup.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        metric(self.port, name)
    }

    fn sink_health(&self) -> Option<Value> {
        let r = get(self.port, "/health").ok()?;
        Some(r.json().get("sink")?.clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client sending batches of 20 events in a loop, bounded in count and
/// time; it keeps going through refused connections and 503s.
struct Load {
    stop: Arc<AtomicBool>,
    /// Ids of events answered with 200.
    acked: Arc<Mutex<HashSet<String>>>,
    /// Ids of every event sent, answered or not.
    sent: Arc<Mutex<HashSet<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, max_batches: usize, max_time: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let sent = Arc::new(Mutex::new(HashSet::new()));
        let thread = {
            let (stop, acked, sent) = (stop.clone(), acked.clone(), sent.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + max_time;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < max_batches && Instant::now() < until {
                    n += 1;
                    let session = uuid::Uuid::new_v4().to_string();
                    let events: Vec<Value> =
                        (0..20).map(|i| event(i, DEV_TENANT, &session)).collect();
                    let ids: Vec<String> = events
                        .iter()
                        .map(|e| e.get("id").unwrap().as_str().unwrap().to_string())
                        .collect();
                    sent.lock().unwrap().extend(ids.iter().cloned());
                    let r = ureq::post(&format!("http://127.0.0.1:{port}/ingest"))
                        .timeout(Duration::from_secs(10))
                        .set("Content-Type", "application/json")
                        .set("Authorization", DEV_AUTH)
                        .send_bytes(&batch(&events));
                    match r {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        // Killed engine, restart in progress, 503: the
                        // client gives up on this batch.
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load {
            stop,
            acked,
            sent,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> HashSet<String> {
        self.acked.lock().unwrap().clone()
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How many rows each event id has in ClickHouse.
fn stored(ch: &ClickHouse) -> HashMap<String, u64> {
    let out = ch
        .client()
        .query("SELECT toString(event_id), count() FROM overwatch.events GROUP BY event_id FORMAT TabSeparated")
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, n)| (id.to_string(), n.parse().unwrap()))
        .collect()
}

/// Waits until every id of `acked` is in ClickHouse, for at most `bound`.
fn wait_landed(ch: &ClickHouse, acked: &HashSet<String>, bound: Duration, what: &str) {
    let started = Instant::now();
    let mut missing = acked.len();
    while started.elapsed() < bound {
        let rows = stored(ch);
        missing = acked.iter().filter(|id| !rows.contains_key(*id)).count();
        if missing == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "{what}: {missing} of {} acknowledged events not in ClickHouse after {bound:?}",
        acked.len()
    );
}

/// Exactly once: each acknowledged event once, nothing twice, nothing that
/// was never sent.
fn assert_exactly_once(ch: &ClickHouse, acked: &HashSet<String>, sent: &HashSet<String>) {
    let rows = stored(ch);
    let doubled: Vec<_> = rows.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "events stored more than once: {doubled:?}"
    );
    let lost = acked.iter().filter(|id| !rows.contains_key(*id)).count();
    assert_eq!(lost, 0, "acknowledged events missing");
    // Sent but unanswered (the engine died first) may be stored: the
    // broker had them. Anything else is not ours.
    let foreign: Vec<_> = rows
        .keys()
        .filter(|id| !sent.contains(*id))
        .take(5)
        .collect();
    assert!(foreign.is_empty(), "events nobody sent: {foreign:?}");
}

#[test]
fn kill9_of_the_engine_under_load_twice_loses_nothing_and_doubles_nothing() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let mut node = Node::start(&broker, &ch);
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
        assert_exactly_once(&ch, &acked, &load.sent.lock().unwrap());
    }
    load.finish();
    let acked = load.acked();
    let sent = load.sent.lock().unwrap().clone();
    wait_landed(&ch, &acked, LANDING_BOUND, "after the load");
    assert_exactly_once(&ch, &acked, &sent);
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
    let sent = load.sent.lock().unwrap().clone();
    wait_landed(&ch, &acked, LANDING_BOUND, "after the idle member left");
    assert_exactly_once(&ch, &acked, &sent);
    wait_for("stall cleared", Duration::from_secs(30), || {
        node.metric("sink_stalled_partitions") == Some(0.0)
            && node.metric("sink_group_lag") == Some(0.0)
    });
    assert_eq!(node.metric("sink_assigned_partitions"), Some(6.0));
    assert_eq!(node.sink_health().unwrap()["state"].as_str(), Some("ok"));
}
