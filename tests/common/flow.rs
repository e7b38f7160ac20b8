//! Events flowing while something breaks: a restartable engine node with both
//! roles, a client that keeps sending through refusals and records what was
//! acknowledged, and the exactly-once check against ClickHouse.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sonic_rs::{JsonValueTrait, Value};

use super::*;

/// Every acknowledged event must be in ClickHouse this long after a restart.
pub const LANDING_BOUND: Duration = Duration::from_secs(60);

/// The engine binary with both roles, restartable on the same port and
/// config (a restarted engine is the same node to an operator).
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
    broker: String,
    env: Vec<(&'static str, String)>,
    pub dir: PathBuf,
    starts: usize,
    /// Where the running engine writes its stderr.
    log: PathBuf,
}

impl Node {
    /// Both roles against `ch`, on the test config.
    pub fn start(broker: &Broker, ch: &ClickHouse) -> Node {
        Node::start_with(broker, &ch.url(), TEST_CONFIG, Vec::new())
    }

    /// Both roles against the ClickHouse at `ch_url`, on `config`, with
    /// `env` on top of the test defaults (200 ms batches, 500 ms backoff, a
    /// 5 s ClickHouse timeout).
    pub fn start_with(
        broker: &Broker,
        ch_url: &str,
        config: &str,
        env: Vec<(&'static str, String)>,
    ) -> Node {
        let mut node = Node::new(broker, ch_url, config, env);
        node.spawn();
        node
    }

    /// A node as [`Node::start_with`] makes it, not started yet.
    pub fn new(
        broker: &Broker,
        ch_url: &str,
        config: &str,
        env: Vec<(&'static str, String)>,
    ) -> Node {
        let dir = scratch_dir("node");
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut all = vec![
            ("INGESTION_ROLES", "ingest,sink".into()),
            ("INGESTION_CLICKHOUSE_URL", ch_url.to_string()),
            ("INGESTION_SINK_BATCH_MAX_AGE_MS", "200".into()),
            ("INGESTION_SINK_RETRY_BACKOFF_MAX_MS", "500".into()),
            ("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "5000".into()),
        ];
        all.extend(env);
        Node {
            child: None,
            port: free_port(),
            config: config_path,
            broker: broker.addr(),
            env: all,
            log: dir.join("engine-0.log"),
            dir,
            starts: 0,
        }
    }

    /// Starts the engine again (after [`Node::kill9`]) and waits until ready.
    pub fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("engine-{}.log", self.starts));
        self.spawn_logging_to(&log);
    }

    /// Starts a sink-only engine again and waits until it answers `/health`
    /// (its readiness follows the sink's state, which may be "stalled"
    /// while its group settles).
    pub fn spawn_sink(&mut self) {
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
        self.log = log;
        let port = self.port;
        wait_for("sink answering /health", Duration::from_secs(60), || {
            get(port, "/health").is_ok()
        });
    }

    /// Starts the engine with its stderr in `log`, and waits until ready.
    pub fn spawn_logging_to(&mut self, log: &std::path::Path) {
        let env = self.env.iter().map(|(k, v)| (*k, v.as_str()));
        self.child = Some(spawn_serve(&self.config, &self.broker, self.port, env, log));
        self.log = log.to_path_buf();
        let port = self.port;
        wait_for("engine ready", Duration::from_secs(60), || {
            get(port, "/health/ready").is_ok_and(|r| r.status == 200)
        });
    }

    /// SIGKILL: no drain, no flush, no LeaveGroup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the engine process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.port, name)
    }

    pub fn sink_health(&self) -> Option<Value> {
        let r = get(self.port, "/health").ok()?;
        Some(r.json().get("sink")?.clone())
    }

    /// What a failing test prints: the sink's health and the log's last lines.
    pub fn story(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "sink health: {:?}\nlast lines of {}:\n{tail}",
            self.sink_health().map(|v| v.to_string()),
            self.log.display()
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a [`Load`] saw, shared with its thread.
#[derive(Default)]
pub struct Seen {
    /// Ids of events answered with 200.
    pub acked: Mutex<HashSet<String>>,
    /// Ids of every event sent, answered or not.
    pub sent: Mutex<HashSet<String>>,
    /// Answers by status.
    pub statuses: Mutex<HashMap<u16, u64>>,
    /// Requests without an answer within the client's 10 s (refused
    /// connections count here too).
    pub unanswered: AtomicU64,
    /// The slowest answer, in milliseconds.
    pub slowest_ms: AtomicU64,
    /// While set, the client sends nothing new.
    pub paused: AtomicBool,
}

/// Times a batch is sent again after a 5xx, a 429 or no answer.
pub const RETRIES: usize = 3;

/// Sends `body` once; its status, or `None` without an answer in 10 s.
fn send_once(port: u16, auth: &str, body: &[u8], seen: &Seen) -> Option<u16> {
    let asked = Instant::now();
    let r = ureq::post(&format!("http://127.0.0.1:{port}/ingest"))
        .timeout(Duration::from_secs(10))
        .set("Content-Type", "application/json")
        .set("Authorization", auth)
        .send_bytes(body);
    let status = match &r {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(s, _)) => Some(*s),
        Err(_) => None,
    };
    match status {
        Some(s) => {
            let ms = asked.elapsed().as_millis() as u64;
            seen.slowest_ms.fetch_max(ms, Ordering::Relaxed);
            *seen.statuses.lock().unwrap().entry(s).or_default() += 1;
        }
        None => {
            seen.unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }
    status
}

/// A client sending batches of 20 events in a loop, bounded in count and
/// time; it keeps going through refused connections and 503s, sending each
/// batch up to [`RETRIES`] more times.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Events of the development tenant.
    pub fn start(port: u16, max_batches: usize, max_time: Duration) -> Load {
        Load::start_as(port, DEV_TENANT, DEV_AUTH, max_batches, max_time)
    }

    /// Events of `tenant`, sent with `auth`.
    pub fn start_as(
        port: u16,
        tenant: &'static str,
        auth: &'static str,
        max_batches: usize,
        max_time: Duration,
    ) -> Load {
        Load::start_over(vec![port], tenant, auth, max_batches, max_time)
    }

    /// [`Load::start_as`] over several edges, as behind a load balancer:
    /// batch `n` goes to `ports[n % len]`, and each retry to the next edge.
    pub fn start_over(
        ports: Vec<u16>,
        tenant: &'static str,
        auth: &'static str,
        max_batches: usize,
        max_time: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + max_time;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < max_batches && Instant::now() < until {
                    if seen.paused.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    n += 1;
                    let session = uuid::Uuid::new_v4().to_string();
                    let events: Vec<Value> = (0..20).map(|i| event(i, tenant, &session)).collect();
                    let ids: Vec<String> = events
                        .iter()
                        .map(|e| e.get("id").unwrap().as_str().unwrap().to_string())
                        .collect();
                    seen.sent.lock().unwrap().extend(ids.iter().cloned());
                    let body = batch(&events);
                    // Like the SDKs: a batch without a 200 is sent again, the
                    // same events with the same ids (dedup makes it safe).
                    for attempt in 0..=RETRIES {
                        let port = ports[(n + attempt) % ports.len()];
                        let status = send_once(port, auth, &body, &seen);
                        if status == Some(200) {
                            seen.acked.lock().unwrap().extend(ids);
                            break;
                        }
                        // Killed engine, restart in progress, 503, 429; a
                        // 4xx verdict on the events is final.
                        let retry = status.is_none_or(|s| s >= 500 || s == 429);
                        if !retry || stop.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn acked(&self) -> HashSet<String> {
        self.seen.acked.lock().unwrap().clone()
    }

    pub fn sent(&self) -> HashSet<String> {
        self.seen.sent.lock().unwrap().clone()
    }

    /// How many answers had `status` so far.
    pub fn answered(&self, status: u16) -> u64 {
        self.seen
            .statuses
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Stops sending new batches (a retry in progress finishes first).
    pub fn pause(&self) {
        self.seen.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.seen.paused.store(false, Ordering::SeqCst);
    }

    pub fn finish(&mut self) {
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
pub fn stored(ch: &ClickHouse) -> HashMap<String, u64> {
    let out = ch
        .client()
        .query("SELECT toString(event_id), count() FROM overwatch.events WHERE tenant_id != toUUID('ffffffff-ffff-ffff-ffff-ffffffffffff') GROUP BY event_id FORMAT TabSeparated")
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, n)| (id.to_string(), n.parse().unwrap()))
        .collect()
}

/// Waits until the sink's start-up migration has built the whole schema in
/// `ch` (an edge is ready before: it does not need ClickHouse to accept).
pub fn wait_migrated(ch: &ClickHouse) {
    let all = clickhouse_client::schema::MIGRATIONS.len().to_string();
    wait_for("the schema migrated", Duration::from_secs(60), || {
        ch.client()
            .query("SELECT count() FROM overwatch.schema_migrations FORMAT TabSeparated")
            .is_ok_and(|n| n.trim() == all)
    });
}

/// Waits until every id of `acked` is in ClickHouse, for at most `bound`.
pub fn wait_landed(ch: &ClickHouse, acked: &HashSet<String>, bound: Duration, what: &str) {
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

/// What ClickHouse holds against what the client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub acked: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub foreign: usize,
}

/// Counts acknowledged events missing, events stored more than once, and
/// stored events nobody sent.
pub fn tally(ch: &ClickHouse, acked: &HashSet<String>, sent: &HashSet<String>) -> Tally {
    let rows = stored(ch);
    Tally {
        acked: acked.len(),
        lost: acked.iter().filter(|id| !rows.contains_key(*id)).count(),
        duplicates: rows.values().map(|&n| n.saturating_sub(1) as usize).sum(),
        // Sent but unanswered (the engine died first) may be stored: the
        // broker had them. Anything else is not ours.
        foreign: rows.keys().filter(|id| !sent.contains(*id)).count(),
    }
}

/// Exactly once: each acknowledged event once, nothing twice, nothing that
/// was never sent.
pub fn assert_exactly_once(ch: &ClickHouse, acked: &HashSet<String>, sent: &HashSet<String>) {
    let t = tally(ch, acked, sent);
    assert_eq!(
        (t.lost, t.duplicates, t.foreign),
        (0, 0, 0),
        "{t:?}: acknowledged events lost, rows stored twice, rows nobody sent"
    );
}

/// The roll-ups equal their views' `GROUP BY` over `events`, row for row:
/// pageviews per (tenant, day, session) and per (tenant, hour, path).
/// Receipt rows take part on both sides, like any pageview.
pub fn assert_rollups_agree(ch: &ClickHouse, what: &str) {
    let pairs = [
        (
            "SELECT tenant_id, day, session_id, retention_days, sum(pageviews) AS n FROM overwatch.sessions \
             GROUP BY tenant_id, day, session_id, retention_days HAVING n > 0 ORDER BY tenant_id, day, session_id, retention_days",
            "SELECT tenant_id, toDate(event_time) AS day, session_id, retention_days, count() FROM overwatch.events \
             WHERE event_type = 'pageview' GROUP BY tenant_id, day, session_id, retention_days ORDER BY tenant_id, day, session_id, retention_days",
        ),
        (
            "SELECT tenant_id, hour, path, retention_days, sum(pageviews) AS n FROM overwatch.pageviews_hourly \
             GROUP BY tenant_id, hour, path, retention_days HAVING n > 0 ORDER BY tenant_id, hour, path, retention_days",
            "SELECT tenant_id, toStartOfHour(event_time) AS hour, path, retention_days, count() FROM overwatch.events \
             WHERE event_type = 'pageview' GROUP BY tenant_id, hour, path, retention_days ORDER BY tenant_id, hour, path, retention_days",
        ),
    ];
    for (rollup, direct) in pairs {
        let (a, b) = (ch.query(rollup), ch.query(direct));
        if a != b {
            let (ra, rb): (HashSet<&str>, HashSet<&str>) =
                (a.lines().collect(), b.lines().collect());
            let only_rollup: Vec<_> = ra.difference(&rb).take(5).collect();
            let only_events: Vec<_> = rb.difference(&ra).take(5).collect();
            panic!(
                "{what}: roll-up and GROUP BY over events differ ({} vs {} rows); only in the roll-up: {only_rollup:?}; only in events: {only_events:?}\n{rollup}",
                ra.len(),
                rb.len()
            );
        }
    }
}
