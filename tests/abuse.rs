//! Connection abuse against the real engine (2 shards) and tansu: idle
//! connections by the ten thousand, slowloris heads, bodies trickled at one
//! byte a second, clients that never read, and the smuggling corpus, each
//! for a few seconds while a well-behaved client sends batches beside them.
//!
//! Each attack must get its answer (408, 400) or a close, hold no shard, and
//! leave the well-behaved client served: every one of its requests answered
//! 200. Its p99 per attack is printed as an `abuse-matrix` line (docs/reliability.md's
//! table; a benchmark figure, only bounded loosely here).

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::attacks::framing_attacks;
use common::*;

/// How long each attack runs while the well-behaved client measures.
const WINDOW: Duration = Duration::from_secs(5);
/// A held shard shows as seconds; the well-behaved p99 must stay below.
const HELD_SHARD: Duration = Duration::from_secs(2);
const SESSION: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// Raises this process's open-file limit to its hard limit (the engine
/// inherits it); returns the limit.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

/// The well-behaved client for `window`: one event per request, on a
/// keep-alive connection and on a new one in turn. Its latencies; panics on
/// any answer but 200.
fn well_behaved(port: u16, window: Duration, what: &str) -> Vec<Duration> {
    let keep = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build();
    let body = batch(&[event(0, DEV_TENANT, SESSION)]);
    let until = Instant::now() + window;
    let mut took = Vec::new();
    let mut i = 0u32;
    while Instant::now() < until {
        i += 1;
        let agent = if i % 2 == 0 {
            keep.clone()
        } else {
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(15))
                .build()
        };
        let asked = Instant::now();
        let r = agent
            .post(&format!("http://127.0.0.1:{port}/ingest"))
            .set("Content-Type", "application/json")
            .set("Authorization", DEV_AUTH)
            .send_bytes(&body);
        let status = match r {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{what}: the well-behaved client got no answer: {e}"),
        };
        took.push(asked.elapsed());
        assert_eq!(status, 200, "{what}: the well-behaved client got {status}");
        std::thread::sleep(Duration::from_millis(5));
    }
    took
}

fn p(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize]
}

/// Runs `attack` on its own thread while the well-behaved client measures,
/// then stops it; prints the matrix line and bounds the p99.
fn under(port: u16, what: &str, attack: impl FnOnce(Arc<AtomicBool>) -> String + Send + 'static) {
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || attack(stop))
    };
    // Let the attack build up before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let took = well_behaved(port, WINDOW, what);
    stop.store(true, Ordering::SeqCst);
    let outcome = t.join().unwrap();
    let (p50, p99) = (p(&took, 0.5), p(&took, 0.99));
    println!(
        "abuse-matrix | {what} | {outcome} | {} requests, p50 {:.1} ms, p99 {:.1} ms",
        took.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    assert!(p99 < HELD_SHARD, "{what}: well-behaved p99 {p99:?}");
}

/// Idle connections opened before the engine must have accepted them all.
const IDLE_STEP: usize = 2_000;

/// Idle connections opened and held, at least (fewer: the attack is not the
/// one docs/reliability.md's table reports).
const MIN_IDLE: usize = 5_000;

/// The engine's open connections (`ingest_connections_open`), this
/// request's own among them.
fn open_connections(port: u16) -> f64 {
    metric(port, "ingest_connections_open").expect("ingest_connections_open")
}

/// Whether the server still holds `c` open: nothing to read and no end of
/// stream.
fn still_open(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let open =
        matches!(c.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    c.set_nonblocking(false).unwrap();
    open
}

/// Opens connections until `n` or the stop; each gets `first` written.
fn open(port: u16, n: usize, first: &[u8], stop: &AtomicBool) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n && !stop.load(Ordering::SeqCst) {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                if !first.is_empty() {
                    let _ = s.write_all(first);
                }
                v.push(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    v
}

/// Writes one byte a second to each connection until the stop, and reads
/// the answer of each the engine gave up on; how many of them had `status`,
/// and how many connections there were.
fn trickle(conns: Vec<TcpStream>, stop: &AtomicBool, status: u16) -> (usize, usize) {
    let total = conns.len();
    let mut open: Vec<TcpStream> = conns;
    let mut answered = 0;
    let mut done = |c: &TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if read_response(&mut BufReader::new(c)).is_ok_and(|r| r.status == status) {
            answered += 1;
        }
    };
    let mut last = Instant::now() - Duration::from_secs(1);
    // Until the stop, and then until every connection was answered (bounded).
    let until_all = Duration::from_secs(10);
    let mut stopped: Option<Instant> = None;
    while !open.is_empty() {
        if stop.load(Ordering::SeqCst) {
            let s = *stopped.get_or_insert_with(Instant::now);
            if s.elapsed() > until_all {
                break;
            }
        }
        let write = last.elapsed() >= Duration::from_secs(1) && stopped.is_none();
        if write {
            last = Instant::now();
        }
        open.retain_mut(|c| {
            // An answer (or a close) waiting: the engine gave up on it.
            c.set_nonblocking(true).unwrap();
            let waiting = c.peek(&mut [0u8; 1]).is_ok();
            c.set_nonblocking(false).unwrap();
            if waiting {
                done(c);
                return false;
            }
            if write {
                let _ = c.write_all(b"a");
            }
            true
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    (answered, total)
}

#[test]
fn abusive_connections_hold_no_shard_and_the_well_behaved_client_is_served() {
    let limit = raise_nofile();
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_HTTP__READ_TIMEOUT_MS", "2000"),
            // Longer than opening 20k connections takes on a loaded 2-core
            // machine (a CI run saw the first ones idle out before the last
            // was open, so the count never reached them all).
            ("INGESTION_HTTP__IDLE_TIMEOUT_MS", "300000"),
        ],
    );
    let port = engine.port;
    under(port, "none (baseline)", |_| String::new());

    // Idle connections: as many as the descriptor limit allows, up to 20k
    // (this process and the engine each hold one end), and never fewer than
    // MIN_IDLE: below that the attack proves nothing. All of them are open,
    // and counted open by the engine, before the well-behaved client starts;
    // all of them are still open when it is done.
    let idle = (limit.saturating_sub(1000) as usize).min(20_000);
    assert!(
        idle >= MIN_IDLE,
        "the descriptor limit ({limit}) allows {idle} idle connections, not {MIN_IDLE}: \
         raise the hard limit (ulimit -Hn)"
    );
    let open_before = open_connections(port);
    let opening = Arc::new(AtomicBool::new(false));
    let deadline = {
        let opening = opening.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(120));
            opening.store(true, Ordering::SeqCst);
        })
    };
    // In steps well below the listen backlog (4096 a shard), each accepted
    // before the next: a connection the kernel completed while the accept
    // queue was full (an engine starved of CPU on a loaded machine) can be
    // dropped on the server's side while this end still counts it open.
    let mut conns = Vec::with_capacity(idle);
    while conns.len() < idle && !opening.load(Ordering::SeqCst) {
        let step = (idle - conns.len()).min(IDLE_STEP);
        conns.extend(open(port, step, b"", &opening));
        let want = open_before + conns.len() as f64;
        wait_for(
            "the engine to count every idle connection open",
            Duration::from_secs(60),
            || open_connections(port) >= want,
        );
    }
    assert_eq!(conns.len(), idle, "idle connections opened in 2 minutes");
    drop(deadline);
    under(port, &format!("{idle} idle connections"), move |stop| {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still open (nothing to read, no end of stream), on both ends.
        let still = conns.iter().filter(|c| still_open(c)).count();
        let counted = open_connections(port);
        assert_eq!(still, idle, "idle connections closed during the window");
        assert!(
            counted >= open_before + idle as f64,
            "the engine counts {counted} open, not the {idle} idle ones"
        );
        format!("{still} of {idle} held open throughout")
    });

    under(port, "1000 slowloris heads", move |stop| {
        let conns = open(
            port,
            1000,
            b"POST /ingest HTTP/1.1\r\nHost: t\r\nX-A: ",
            &stop,
        );
        let (answered, total) = trickle(conns, &stop, 408);
        assert!(
            answered * 10 >= total * 9,
            "slowloris: {answered} of {total} got 408"
        );
        format!("{answered} of {total} answered 408")
    });

    under(port, "1000 bodies trickled at 1 byte/s", move |stop| {
        let head = format!(
            "POST /ingest HTTP/1.1\r\nHost: t\r\nAuthorization: {DEV_AUTH}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        );
        let conns = open(port, 1000, head.as_bytes(), &stop);
        let (answered, total) = trickle(conns, &stop, 408);
        assert!(
            answered * 10 >= total * 9,
            "trickle: {answered} of {total} got 408"
        );
        format!("{answered} of {total} answered 408")
    });

    under(port, "50 clients that never read", move |stop| {
        let one = ingest_request(DEV_AUTH, &batch(&[event(0, DEV_TENANT, SESSION)]), "");
        let mut conns = open(port, 50, b"", &stop);
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) && !conns.is_empty() {
            conns.retain_mut(|c| {
                let ok = c.write_all(&one).is_ok();
                sent += u64::from(ok);
                ok
            });
        }
        format!("{sent} requests pipelined, none read")
    });

    // The never-read clients left requests queued in the engine; until the
    // write timeout closes them it may shed new ones with 503 before their
    // framing is read. Each attack meets an idle engine.
    wait_for(
        "the pipelined requests drained",
        Duration::from_secs(60),
        || {
            metric(port, "ingest_connections_open").is_some_and(|n| n <= 1.0)
                && post(
                    port,
                    Some(DEV_AUTH),
                    &[],
                    &batch(&[event(1, DEV_TENANT, SESSION)]),
                )
                .status
                    == 200
        },
    );

    under(port, "smuggling and framing corpus", move |stop| {
        let attacks = framing_attacks();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            for (what, raw, status) in &attacks {
                let mut c = Raw::connect(port);
                c.send(raw);
                let r = c.response();
                assert_eq!(r.status, *status, "{what}: {}", r.body);
                assert!(c.closed(), "{what}: left open");
                n += 1;
            }
        }
        format!(
            "{n} requests ({} kinds), each answered and closed",
            attacks.len()
        )
    });

    // Every attack connection is gone once the timeouts pass (the never
    // read ones by the write timeout): nothing holds a shard.
    wait_for("attack connections closed", Duration::from_secs(40), || {
        metric(port, "ingest_connections_open").is_some_and(|n| n <= 1.0)
    });
    assert_eq!(metric(port, "ingest_buffered_bytes"), Some(0.0));
}
