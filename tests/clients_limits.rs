//! Per-client limits (`[clients]`) against a running engine: a client is
//! its IPv6 `/64` (configurable), every `X-Forwarded-For` line counts, and
//! connections over a client's limit cost the edge a bounded few.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sonic_rs::JsonValueTrait;

/// `GET /metrics` on `raw` with `extra` header lines; the status.
fn ask(raw: &mut Raw, extra: &str) -> u16 {
    raw.send(format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
    raw.response().status
}

/// The most requests a token bucket of `rate`/s (a second's burst) lets
/// through in `elapsed`, plus one for a refill landing between two reads
/// of the clock.
fn bucket_allows(rate: u32, elapsed: Duration) -> usize {
    let rate = f64::from(rate);
    (rate + rate * elapsed.as_secs_f64()).floor() as usize + 1
}

#[test]
fn clients_rotating_through_their_ipv6_64_are_one_client() {
    let broker = Broker::start();
    let rate = 5;
    for (prefix, one_client) in [("64", true), ("128", false)] {
        let engine = Engine::start_with(
            &broker,
            TEST_CONFIG,
            &[
                ("INGESTION_CLIENTS__MAX_REQUESTS_PER_SEC", &rate.to_string()),
                ("INGESTION_CLIENTS__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
                ("INGESTION_CLIENTS__IPV6_PREFIX_LEN", prefix),
            ],
        );
        let mut raw = Raw::connect(engine.port);
        // A fresh address of the same /64 for every request.
        let began = Instant::now();
        let statuses: Vec<u16> = (1..=30)
            .map(|i| {
                ask(
                    &mut raw,
                    &format!("X-Forwarded-For: 2001:db8:7:7:{i:x}::{i:x}\r\n"),
                )
            })
            .collect();
        let elapsed = began.elapsed();
        let passed = statuses.iter().filter(|s| **s == 200).count();
        if one_client {
            assert!(
                passed >= rate as usize && passed <= bucket_allows(rate, elapsed),
                "/{prefix}: {passed} of 30 passed in {elapsed:?}: {statuses:?}"
            );
            assert!(statuses.contains(&429), "{statuses:?}");
            // The next /64 is another client, with a budget of its own.
            let other = ask(&mut raw, "X-Forwarded-For: 2001:db8:7:8::1\r\n");
            assert_eq!(other, 200, "/{prefix}: another /64");
        } else {
            assert_eq!(
                passed, 30,
                "/{prefix}: every address is a client: {statuses:?}"
            );
        }
        engine.terminate();
    }
}

#[test]
fn every_x_forwarded_for_line_is_read_as_one_list() {
    let broker = Broker::start();
    let rate = 5;
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_CLIENTS__MAX_REQUESTS_PER_SEC", &rate.to_string()),
            (
                "INGESTION_CLIENTS__TRUSTED_PROXIES",
                "[\"127.0.0.1\", \"10.0.0.2\"]",
            ),
        ],
    );
    let mut raw = Raw::connect(engine.port);
    // Two proxies, each adding a line of its own: the client is on the
    // first line, so every request here is another client.
    let two_lines =
        |client: &str| format!("X-Forwarded-For: {client}\r\nX-Forwarded-For: 10.0.0.2\r\n");
    let distinct: Vec<u16> = (1..=20)
        .map(|i| ask(&mut raw, &two_lines(&format!("198.51.100.{i}"))))
        .collect();
    assert!(distinct.iter().all(|s| *s == 200), "{distinct:?}");
    // One client through the same proxies is limited as itself.
    let began = Instant::now();
    let same: Vec<u16> = (0..20)
        .map(|_| ask(&mut raw, &two_lines("203.0.113.9")))
        .collect();
    let passed = same.iter().filter(|s| **s == 200).count();
    assert!(
        passed >= rate as usize && passed <= bucket_allows(rate, began.elapsed()),
        "{same:?}"
    );
    // More lines than the head keeps: not a chain, the proxy is the client
    // (its own budget, spent by none of the above).
    let many: String = (0..9)
        .map(|i| format!("X-Forwarded-For: 192.0.2.{i}\r\n"))
        .collect();
    let proxy: Vec<u16> = (0..20).map(|_| ask(&mut raw, &many)).collect();
    assert!(proxy.contains(&429), "{proxy:?}");
    engine.terminate();
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn connections_over_a_client_limit_cost_a_bounded_few() {
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_SHARDS", "1"),
            ("INGESTION_CLIENTS__MAX_CONNECTIONS", "1"),
        ],
    );
    let port = engine.port;
    // The one connection this address may hold (the start-up probes' may
    // still be closing: a refused one is retried).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = loop {
        assert!(Instant::now() < deadline, "could not hold a connection");
        let mut raw = Raw::connect(port);
        raw.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
        match raw.response().status {
            200 => break raw,
            429 => std::thread::sleep(Duration::from_millis(100)),
            s => panic!("{s}"),
        }
    };
    std::thread::sleep(Duration::from_millis(2500));
    let before = open_fds(engine.pid());
    // A flood of connections over the limit, each kept open and silent:
    // every refusal the engine answers lingers on its descriptor.
    let flood = 400;
    let conns: Vec<TcpStream> = (0..flood)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut peak = 0;
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        peak = peak.max(open_fds(engine.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    // At most the bound on refusals in flight (64 per shard), plus slack
    // for the engine's own descriptors coming and going.
    assert!(
        peak <= before + 64 + 16,
        "{flood} refused connections held {} descriptors at the peak ({before} before)",
        peak.saturating_sub(before)
    );
    drop(conns);
    // The refusals end; the held connection is still served, and a client
    // over its limit that sent its request still reads the 429.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ask(&mut held, ""), 200);
    let mut over = Raw::connect(port);
    over.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = over.response();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"].as_str(), Some("client_connection_limit"));
    engine.terminate();
}
