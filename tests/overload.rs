//! Overload: far more than the engine can take (large plain and gzip
//! batches from several senders, clients that send most of a 1 MB body and
//! stall, clients that pipeline requests and never read the answers), for a
//! bounded time, against the real engine and tansu.
//!
//! The engine must refuse quickly (`503 server_busy` before reading a body it
//! has no room for), keep its memory under the bound the README derives from
//! the config ("Overload and memory"), lose no acknowledged event, and serve
//! normally within seconds once the load stops.

mod common;

use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sonic_rs::{JsonValueTrait, Value};

/// A session for single events.
const SESSION: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const SHARDS: u64 = 2;
const MAX_CONNECTIONS_PER_SHARD: u64 = 1000;
const MAX_BUFFERED_BYTES_PER_SHARD: u64 = 8 << 20;
const MAX_BODY_BYTES: u64 = 1 << 20;
const MAX_DECOMPRESSED_BYTES: u64 = 4 << 20;
const BODY_BUFFER_POOL: u64 = 4;
const QUEUE_MAX_KBYTES: u64 = 16 << 10;
/// What one open connection may keep between requests: its read buffer
/// (shrunk back once over 4 × 16 KiB), its write buffer and its task.
const PER_CONNECTION_BYTES: u64 = 68 << 10;

/// The README's bound on the edge's memory above its idle footprint.
fn bound_above_idle() -> u64 {
    SHARDS
        * (MAX_CONNECTIONS_PER_SHARD * PER_CONNECTION_BYTES
            + MAX_BUFFERED_BYTES_PER_SHARD
            + BODY_BUFFER_POOL * MAX_BODY_BYTES
            + MAX_DECOMPRESSED_BYTES)
        + QUEUE_MAX_KBYTES * 1024
}

/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(15);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Senders of valid 200-event batches (every other one gzip), in a loop.
fn senders(
    port: u16,
    threads: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<HashSet<String>>>,
    statuses: &Arc<Mutex<Vec<(u16, Duration)>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let (stop, acked, statuses) = (stop.clone(), acked.clone(), statuses.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let session = uuid::Uuid::new_v4().to_string();
                    let events: Vec<Value> =
                        (0..200).map(|i| event(i, DEV_TENANT, &session)).collect();
                    let ids: Vec<String> = events
                        .iter()
                        .map(|e| e["id"].as_str().unwrap().to_string())
                        .collect();
                    let plain = batch(&events);
                    let zipped = (n + t) % 2 == 0;
                    let mut req = ureq::post(&format!("http://127.0.0.1:{port}/ingest"))
                        .timeout(Duration::from_secs(15))
                        .set("Content-Type", "application/json")
                        .set("Authorization", DEV_AUTH);
                    let body = if zipped {
                        req = req.set("Content-Encoding", "gzip");
                        gzip(&plain)
                    } else {
                        plain
                    };
                    let asked = Instant::now();
                    let status = match req.send_bytes(&body) {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(s, _)) => s,
                        Err(_) => 0,
                    };
                    statuses.lock().unwrap().push((status, asked.elapsed()));
                    if status == 200 {
                        acked.lock().unwrap().extend(ids);
                    }
                }
            })
        })
        .collect()
}

/// Clients that declare 1 MB, send 900 kB of it and stall. Each either is
/// refused at once (its status and how long that took) or holds its room in
/// the budget until the read timeout.
fn stallers(
    port: u16,
    threads: usize,
    each: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<StallReport>> {
    (0..threads).map(|_| staller(port, each, stop)).collect()
}

fn staller(
    port: u16,
    count: usize,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<StallReport> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let head = format!(
            "POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Authorization: {DEV_AUTH}\r\nContent-Length: 1000000\r\n\r\n"
        );
        let body = vec![b' '; 900_000];
        let mut report = StallReport::default();
        let mut held = Vec::new();
        for _ in 0..count {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                report.unconnected += 1;
                continue;
            };
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let sent = Instant::now();
            let _ = s
                .write_all(head.as_bytes())
                .and_then(|_| s.write_all(&body));
            match read_response(&mut BufReader::new(&s)) {
                Ok(r) => {
                    report.refused.push((r.status, sent.elapsed()));
                    assert!(r.status == 503, "a staller got {} {}", r.status, r.body);
                    assert_eq!(
                        r.json()["error"].as_str(),
                        Some("server_busy"),
                        "{}",
                        r.body
                    );
                }
                // No answer yet: admitted, holding its room until the read timeout.
                Err(_) => held.push(s),
            }
        }
        report.held = held.len();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        report
    })
}

#[derive(Default, Debug)]
struct StallReport {
    refused: Vec<(u16, Duration)>,
    held: usize,
    unconnected: usize,
}

/// Clients that pipeline small valid requests and never read an answer.
fn non_readers(port: u16, count: usize, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let events = [event(0, DEV_TENANT, SESSION)];
        let one = ingest_request(DEV_AUTH, &batch(&events), "");
        let mut conns: Vec<TcpStream> = (0..count)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        for c in &conns {
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            conns.retain_mut(|c| {
                let ok = c.write_all(&one).is_ok();
                sent += u64::from(ok);
                ok
            });
            if conns.is_empty() {
                break;
            }
        }
        sent
    })
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[test]
fn overload_is_refused_quickly_in_bounded_memory_and_loses_nothing() {
    let broker = Broker::start();
    let env = [
        ("INGESTION_SHARDS", SHARDS.to_string()),
        (
            "INGESTION_HTTP__MAX_CONNECTIONS_PER_SHARD",
            MAX_CONNECTIONS_PER_SHARD.to_string(),
        ),
        (
            "INGESTION_HTTP__MAX_BUFFERED_BYTES_PER_SHARD",
            MAX_BUFFERED_BYTES_PER_SHARD.to_string(),
        ),
        ("INGESTION_HTTP__MAX_BODY_BYTES", MAX_BODY_BYTES.to_string()),
        (
            "INGESTION_HTTP__MAX_DECOMPRESSED_BYTES",
            MAX_DECOMPRESSED_BYTES.to_string(),
        ),
        (
            "INGESTION_HTTP__BODY_BUFFER_POOL",
            BODY_BUFFER_POOL.to_string(),
        ),
        (
            "INGESTION_REDPANDA__QUEUE_MAX_KBYTES",
            QUEUE_MAX_KBYTES.to_string(),
        ),
        ("INGESTION_HTTP__READ_TIMEOUT_MS", "5000".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let engine = Engine::start_with(&broker, TEST_CONFIG, &env);
    let port = engine.port;
    // Warm: one batch through, so the idle footprint includes the producer.
    let r = post(
        port,
        Some(DEV_AUTH),
        &[],
        &batch(&[event(0, DEV_TENANT, SESSION)]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let idle_kib = engine.rss_kib();
    let bound_kib = idle_kib + bound_above_idle() / 1024;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(AtomicU64::new(idle_kib));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let pid = engine.pid();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let send = senders(port, 6, &stop, &acked, &statuses);
    let stall = stallers(port, 8, 50, &stop);
    let readers = non_readers(port, 50, &stop);
    std::thread::sleep(ATTACK);
    stop.store(true, Ordering::SeqCst);
    for t in send {
        t.join().unwrap();
    }
    let mut stall_all = StallReport::default();
    for t in stall {
        let r = t.join().unwrap();
        stall_all.refused.extend(r.refused);
        stall_all.held += r.held;
        stall_all.unconnected += r.unconnected;
    }
    let stall = stall_all;
    let pipelined = readers.join().unwrap();
    sampler.join().unwrap();
    let attack = started.elapsed();

    // Refused quickly, and in bounded memory.
    let refusal_p99 = percentile(stall.refused.iter().map(|r| r.1).collect(), 0.99);
    let peak_kib = peak.load(Ordering::Relaxed);
    let all = statuses.lock().unwrap().clone();
    let count = |s: u16| all.iter().filter(|r| r.0 == s).count();
    let busy_p99 = percentile(
        all.iter().filter(|r| r.0 == 503).map(|r| r.1).collect(),
        0.99,
    );
    println!(
        "overload: {attack:?}; senders 200 {} / 503 {} / other {} (503 p99 {busy_p99:?}); \
         stallers refused {} (p99 {refusal_p99:?}), held {}, unconnected {}; \
         {pipelined} pipelined requests never read; RSS idle {} MiB, peak {} MiB, bound {} MiB; \
         busy refusals {:?}",
        count(200),
        count(503),
        all.len() - count(200) - count(503),
        stall.refused.len(),
        stall.held,
        stall.unconnected,
        idle_kib / 1024,
        peak_kib / 1024,
        bound_kib / 1024,
        metric(port, "ingest_busy_refusals_total"),
    );
    assert!(
        stall.refused.len() > 300,
        "most stalled 1 MB bodies must be refused: {stall:?}"
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB"
    );
    assert!(
        all.iter().all(|r| [200, 503].contains(&r.0)),
        "senders got other answers: {:?}",
        all.iter()
            .filter(|r| ![200, 503].contains(&r.0))
            .take(5)
            .collect::<Vec<_>>()
    );

    // Serves normally within seconds once the load stops: the stalled and
    // never-reading clients are dropped by the read and write timeouts.
    let stopped = Instant::now();
    wait_for(
        "a normal answer after the load",
        Duration::from_secs(20),
        || {
            post(
                port,
                Some(DEV_AUTH),
                &[],
                &batch(&[event(0, DEV_TENANT, SESSION)]),
            )
            .status
                == 200
        },
    );
    wait_for(
        "the shards' buffered bytes back to 0",
        Duration::from_secs(30),
        || metric(port, "ingest_buffered_bytes") == Some(0.0),
    );
    println!(
        "overload: normal service {:?} after the load stopped",
        stopped.elapsed()
    );

    // No acknowledged event lost: each is in the topic.
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "nothing was acknowledged under load");
    let in_topic: HashSet<String> = engine
        .dump()
        .iter()
        .filter_map(|l| {
            let id = l.get("event")?.get("id")?.as_str()?;
            Some(id.to_string())
        })
        .collect();
    let lost = acked.iter().filter(|id| !in_topic.contains(*id)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged events not in the topic",
        acked.len()
    );
}
