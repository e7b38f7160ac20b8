//! Chaos: while events flow (a client that retries like the SDKs), the
//! broker hangs (SIGSTOP longer than the request deadline), dies (`kill -9`)
//! and comes back, ClickHouse's disk and the engine's log fill up, the
//! engine's clock jumps a day either way, and ClickHouse answers so slowly
//! that inserts time out with an unknown outcome. After each, every
//! acknowledged event must be in ClickHouse exactly once.
//!
//! Each test prints one `chaos-matrix` line (fault, acknowledged, lost,
//! doubled); `scripts/chaos` runs them longer (`CHAOS_SECS`, `CHAOS_ROUNDS`)
//! and collects the lines into docs/reliability.md's matrix.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::flow::*;
use common::slow::SlowProxy;
use common::*;

/// How long each fault lasts, in seconds (`CHAOS_SECS`, default 6).
fn fault_secs() -> u64 {
    env_u64("CHAOS_SECS", 6)
}

/// How many times each fault is repeated (`CHAOS_ROUNDS`, default 1).
fn rounds() -> u64 {
    env_u64("CHAOS_ROUNDS", 1)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until at least `n` more events than now are acknowledged.
fn wait_acked_more(load: &Load, node: &Node, n: usize, what: &str) {
    let before = load.acked().len();
    let acked = wait_until(Duration::from_secs(60), || load.acked().len() >= before + n);
    assert!(
        acked,
        "timed out waiting for {what}: {n} more acknowledged (statuses {:?})\n{}",
        load.seen.statuses.lock().unwrap(),
        node.story()
    );
}

/// Waits until events flow end to end: `n` more acknowledged and `n` more
/// rows in ClickHouse than now (the sink has joined and inserts).
fn wait_flowing(load: &Load, ch: &ClickHouse, node: &Node, n: usize, what: &str) {
    let rows = stored(ch).len();
    wait_acked_more(load, node, n, what);
    let landed = wait_until(Duration::from_secs(60), || stored(ch).len() >= rows + n);
    assert!(
        landed,
        "timed out waiting for {what}: {n} more rows in ClickHouse (from {rows}, now {})\n{}",
        stored(ch).len(),
        node.story()
    );
}

/// Stops the load, waits for every acknowledged event to land, prints the
/// matrix line and asserts exactly once.
fn settle(fault: &str, ch: &ClickHouse, mut load: Load, note: &str) {
    load.finish();
    let (acked, sent) = (load.acked(), load.sent());
    assert!(!acked.is_empty(), "{fault}: nothing was acknowledged");
    wait_landed(ch, &acked, LANDING_BOUND, fault);
    // Late copies (a retry whose first send was delivered after all) land
    // after the acknowledged ones: give them time to show up if they would.
    std::thread::sleep(Duration::from_secs(2));
    let t = tally(ch, &acked, &sent);
    let statuses = load.seen.statuses.lock().unwrap().clone();
    let mut statuses: Vec<_> = statuses.into_iter().collect();
    statuses.sort();
    println!(
        "chaos-matrix | {fault} | {} | {} | {} | {} | statuses {statuses:?}, unanswered {}, slowest {} ms{note}",
        t.acked,
        t.lost,
        t.duplicates,
        t.foreign,
        load.seen.unanswered.load(Ordering::Relaxed),
        load.seen.slowest_ms.load(Ordering::Relaxed),
    );
    assert_exactly_once(ch, &acked, &sent);
    assert_rollups_agree(ch, fault);
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process of this test; no memory is shared.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// How tansu 0.6.0 fails a producer whose records timed out while it was
/// away: librdkafka's idempotent producer then moves to a new epoch
/// (KIP-360), tansu finds no state for it and panics ("more or less than one
/// row" in its SQLite storage, or `todo!()` in `init_producer`), and the
/// panic takes its storage task down: the broker answers nothing again until
/// it restarts, and then the same producer panics it again. Redpanda
/// implements KIP-360.
const TANSU_PANIC: &str = "panicked at";

/// The pid of `node`'s running engine (`ingestion-engine … serve` on its
/// config), found in /proc: the same pid before and after a fault is the same
/// process, not a restarted one.
fn engine_pid(node: &Node) -> u32 {
    let config = node.dir.join("config.toml");
    let config = config.as_os_str().as_encoded_bytes();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&&b"serve"[..]) && args.contains(&config)
        })
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "engines serving {}: {pids:?}",
        node.dir.display()
    );
    pids[0]
}

/// After a broker fault: waits for the same engine process (`engine`, its
/// pid from before the fault) to resume acknowledging, and its events to
/// land, on its own. Where tansu died ([`TANSU_PANIC`]) only tansu is
/// restarted (again each time it panics), never the engine, and the returned
/// note says so; an engine that does not recover by itself fails the test.
fn resume_after_broker_fault(
    broker: &mut Broker,
    node: &mut Node,
    engine: u32,
    load: &Load,
    ch: &ClickHouse,
) -> Option<&'static str> {
    let (acked, rows) = (load.acked().len(), stored(ch).len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut broker_restarts = 0;
    let mut last_restart = Instant::now();
    // The panic that made the last broker restart, for the failure message.
    let mut last_panic = String::new();
    loop {
        if load.acked().len() >= acked + 200 {
            break;
        }
        assert!(
            node.alive(),
            "the engine (pid {engine}) died after the broker fault\n{}",
            node.story()
        );
        assert!(
            Instant::now() < deadline,
            "the engine (pid {engine}, never restarted) did not resume acknowledging within 60 s \
             of the broker coming back ({broker_restarts} broker restarts after a tansu panic; \
             statuses {:?})\nthe broker's last panic:\n{last_panic}\nbroker log now:\n{}\n{}",
            load.seen.statuses.lock().unwrap(),
            broker.log(),
            node.story()
        );
        // tansu's storage task is gone after a panic: it answers nothing
        // until it restarts. Only the broker is restarted, at most every 5 s
        // (the engine's retries need time to reach it); the engine stays.
        let log = broker.log();
        if log.contains(TANSU_PANIC) && last_restart.elapsed() >= Duration::from_secs(5) {
            last_panic = log
                .lines()
                .skip_while(|l| !l.contains(TANSU_PANIC))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n");
            broker.restart();
            broker_restarts += 1;
            last_restart = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let landed = wait_until(Duration::from_secs(60), || stored(ch).len() >= rows + 200);
    assert!(
        landed,
        "the engine (pid {engine}) acknowledges again but its sink stores nothing new \
         (rows {rows}, now {})\n{}",
        stored(ch).len(),
        node.story()
    );
    assert!(node.alive());
    assert_eq!(
        engine_pid(node),
        engine,
        "the engine was replaced; the test must see the same process recover"
    );
    // How: after tansu's panics the engine's producer had a state tansu
    // refused for good; the engine replaced it (a new producer id).
    eprintln!(
        "broker fault: {broker_restarts} tansu restarts, {} producer resets in the engine",
        node.metric("broker_producer_resets_total").unwrap_or(0.0)
    );
    (broker_restarts > 0).then_some(
        "tansu 0.6.0 panicked on the producer's state, so the broker was restarted; the engine recovered on its own (a new producer)",
    )
}

/// The test's one note per distinct thing that happened.
fn notes(notes: &[&str]) -> String {
    let mut n: Vec<&str> = notes.to_vec();
    n.sort_unstable();
    n.dedup();
    n.iter().map(|n| format!(", {n}")).collect()
}

#[test]
fn a_hung_broker_longer_than_the_request_deadline() {
    let ch = ClickHouse::start();
    let mut broker = Broker::start();
    let deadline_ms = 2000;
    let mut node = Node::start_with(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![(
            "INGESTION_HTTP__REQUEST_TIMEOUT_MS",
            deadline_ms.to_string(),
        )],
    );
    let engine = engine_pid(&node);
    let load = Load::start(node.port, usize::MAX, Duration::from_secs(600));
    let mut notes_seen = Vec::new();
    for _ in 0..rounds() {
        wait_flowing(&load, &ch, &node, 200, "events flowing before the hang");
        let answered_503 = load.answered(503);
        let slowest = load.seen.slowest_ms.load(Ordering::Relaxed);
        signal(broker.pid(), libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(deadline_ms + fault_secs() * 1000));
        // The edge answered within its deadline instead of hanging with the
        // broker: 503s came, no request went unanswered, none took long.
        assert!(
            load.answered(503) > answered_503,
            "no 503 while the broker was hung"
        );
        assert_eq!(load.seen.unanswered.load(Ordering::Relaxed), 0);
        let during = load.seen.slowest_ms.load(Ordering::Relaxed).max(slowest);
        assert!(
            during < deadline_ms + 1500,
            "an answer took {during} ms, past the {deadline_ms} ms deadline"
        );
        signal(broker.pid(), libc::SIGCONT);
        notes_seen.extend(resume_after_broker_fault(
            &mut broker,
            &mut node,
            engine,
            &load,
            &ch,
        ));
    }
    settle(
        "broker hung (SIGSTOP) past the request deadline",
        &ch,
        load,
        &notes(&notes_seen),
    );
}

#[test]
fn a_broker_killed_and_restarted() {
    let ch = ClickHouse::start();
    let mut broker = Broker::start();
    let mut node = Node::start(&broker, &ch);
    let engine = engine_pid(&node);
    let load = Load::start(node.port, usize::MAX, Duration::from_secs(600));
    let mut notes_seen = Vec::new();
    for _ in 0..rounds() {
        wait_flowing(&load, &ch, &node, 200, "events flowing before the kill");
        // SIGKILL, and up at once: an outage shorter than the request deadline.
        broker.restart();
        notes_seen.extend(resume_after_broker_fault(
            &mut broker,
            &mut node,
            engine,
            &load,
            &ch,
        ));
        // And down for longer than the deadline, the client sending on.
        wait_flowing(
            &load,
            &ch,
            &node,
            200,
            "events flowing before the second kill",
        );
        broker.stop();
        std::thread::sleep(Duration::from_secs(fault_secs()));
        broker.restart();
        notes_seen.extend(resume_after_broker_fault(
            &mut broker,
            &mut node,
            engine,
            &load,
            &ch,
        ));
    }
    settle(
        "broker kill -9, restarted at once and after the deadline",
        &ch,
        load,
        &notes(&notes_seen),
    );
}

/// A tmpfs of `size_mib` at `dir`, unmounted on drop; `Err` (mount's
/// message) where this machine does not allow mounting (no CAP_SYS_ADMIN).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Fills the filesystem with a ballast file until writes fail.
    fn fill(&self) -> PathBuf {
        let ballast = self.0.join("ballast");
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        // Whatever the last failed write_all left in a partial block.
        while f.write_all(&chunk[..512]).is_ok() {}
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn clickhouse_disk_and_engine_log_full() {
    let dir = scratch_dir("disk-full");
    let disk = match Tmpfs::mount(&dir.join("mnt"), 256) {
        Ok(t) => t,
        Err(e) => {
            // Containers without CAP_SYS_ADMIN cannot mount. The skip is
            // shown and listed by scripts/test, and is a failure where
            // INGESTION_REQUIRE_FAULTS=1 (scripts/test as root).
            println!("chaos-matrix | disk full | not run: cannot mount a tmpfs here ({e})");
            skip(
                "chaos::clickhouse_disk_and_engine_log_full",
                &format!("mounting a tmpfs was refused: {e}"),
            );
            return;
        }
    };
    // ClickHouse's data, and the engine's log, on the small filesystem.
    let ch = ClickHouse::start_in(&disk.0.join("clickhouse"));
    let broker = Broker::start();
    let mut node = Node::new(
        &broker,
        &ch.url(),
        TEST_CONFIG,
        vec![("RUST_LOG", "info".into())],
    );
    node.spawn_logging_to(&disk.0.join("engine.log"));
    let load = Load::start(node.port, usize::MAX, Duration::from_secs(600));
    let mut failures = 0.0;
    for _ in 0..rounds() {
        wait_flowing(
            &load,
            &ch,
            &node,
            200,
            "events flowing before the disk fills",
        );
        let ballast = disk.fill();
        let failed = node.metric("sink_insert_failures_total").unwrap_or(0.0);
        wait_for(
            "inserts failing on the full disk",
            Duration::from_secs(30),
            || node.metric("sink_insert_failures_total").unwrap_or(0.0) > failed,
        );
        // The edge keeps acknowledging: the broker holds the events.
        wait_acked_more(
            &load,
            &node,
            200,
            "events acknowledged while the disk is full",
        );
        std::thread::sleep(Duration::from_secs(fault_secs()));
        assert!(node.alive(), "the engine died with its log disk full");
        failures += node.metric("sink_insert_failures_total").unwrap_or(0.0) - failed;
        std::fs::remove_file(ballast).unwrap();
        wait_acked_more(
            &load,
            &node,
            200,
            "events acknowledged after space came back",
        );
    }
    settle(
        "ClickHouse disk and engine log full",
        &ch,
        load,
        &format!(", {failures} failed inserts"),
    );
}

/// The tenant whose events the clock test sends: free tier (1 day of
/// retention), so a clock two days ahead would expire today's partition.
const FREE_TENANT: &str = "66666666-6666-6666-6666-666666666666";
const FREE_AUTH: &str = "Bearer 66666666-6666-6666-6666-666666666666:secret";

fn libfaketime() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("libfaketime is missing (scripts/test installs the faketime package)")
}

#[test]
fn the_engine_clock_jumps_a_day_either_way() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let dir = scratch_dir("clock");
    let offset = dir.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let config = format!(
        "{TEST_CONFIG}\n[[tenants]]\nid = \"{FREE_TENANT}\"\nname = \"free\"\ntier = \"free\"\n\
         rate_limit_eps = 100000\n\
         api_key_sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n"
    );
    // libfaketime moves the wall clock only (monotonic time, which the
    // engine's timeouts use, does not jump), re-reading the offset each second.
    let node = Node::start_with(
        &broker,
        &ch.url(),
        &config,
        vec![
            ("LD_PRELOAD", libfaketime().display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("INGESTION_SINK_RETENTION_INTERVAL_SECS", "1".into()),
        ],
    );
    let load = Load::start_as(
        node.port,
        FREE_TENANT,
        FREE_AUTH,
        usize::MAX,
        Duration::from_secs(600),
    );
    let mut notes = Vec::new();
    for _ in 0..rounds() {
        for jump in ["+2d", "-1d"] {
            wait_flowing(&load, &ch, &node, 200, "events flowing before the jump");
            let runs = node.metric("sink_retention_runs_total").unwrap_or(0.0);
            let refused = node.metric("sink_retention_failures_total").unwrap_or(0.0);
            let rejected = load.answered(400);
            std::fs::write(&offset, format!("{jump}\n")).unwrap();
            std::thread::sleep(Duration::from_secs(fault_secs()));
            // The retention job ran in the meantime and refused the
            // jumped clock (ClickHouse's disagrees).
            assert!(node.metric("sink_retention_runs_total").unwrap_or(0.0) > runs);
            assert!(node.metric("sink_retention_failures_total").unwrap_or(0.0) > refused);
            notes.push(format!(
                "{jump}: {} batches refused",
                load.answered(400) - rejected
            ));
            std::fs::write(&offset, "+0\n").unwrap();
            wait_flowing(
                &load,
                &ch,
                &node,
                200,
                "events flowing after the clock came back",
            );
        }
    }
    assert_eq!(
        node.metric("sink_retention_partitions_dropped_total"),
        Some(0.0),
        "retention dropped a partition on a jumped clock"
    );
    settle(
        "engine clock +2 days, then -1 day",
        &ch,
        load,
        &format!(", {}", notes.join(", ")),
    );
}

#[test]
fn clickhouse_answers_slower_than_the_insert_timeout() {
    let ch = ClickHouse::start();
    let proxy = SlowProxy::start(ch.http_port);
    let broker = Broker::start();
    let node = Node::start_with(
        &broker,
        &proxy.url(),
        TEST_CONFIG,
        vec![("INGESTION_SINK_CLICKHOUSE_TIMEOUT_MS", "1000".into())],
    );
    let load = Load::start(node.port, usize::MAX, Duration::from_secs(600));
    let mut timeouts = 0.0;
    for _ in 0..rounds() {
        wait_flowing(
            &load,
            &ch,
            &node,
            200,
            "events flowing before ClickHouse slows",
        );
        let failed = node.metric("sink_insert_failures_total").unwrap_or(0.0);
        proxy.delay_ms.store(1500, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(fault_secs()));
        proxy.delay_ms.store(0, Ordering::SeqCst);
        let now = node.metric("sink_insert_failures_total").unwrap_or(0.0);
        assert!(
            now > failed,
            "no insert timed out while ClickHouse was slow"
        );
        timeouts += now - failed;
        wait_acked_more(
            &load,
            &node,
            200,
            "events acknowledged after ClickHouse sped up",
        );
    }
    settle(
        "ClickHouse slower than the insert timeout",
        &ch,
        load,
        &format!(", {timeouts} inserts timed out"),
    );
}
