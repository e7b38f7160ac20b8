//! What one tenant can take from the query API, against the real server and
//! ClickHouse 18.16 (issue 19, section 3 and section 4's query work):
//! cached answers count against the rate, a tenant holds at most its share
//! of the queue, expensive filters are refused before they reach
//! ClickHouse, a secret key in the URL is refused, and a query the service
//! gave up on does not keep running on ClickHouse.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{
    call, metric, read_response, Broker, ClickHouse, Engine, Resp, DEV_AUTH, DEV_TENANT,
    DEV_WRITE_KEY, SHOP_TENANT,
};
use query::runner::Runner;
use sonic_rs::JsonValueTrait;

const SHOP_AUTH: &str = "Bearer 55555555-5555-5555-5555-555555555555:secret";

fn query_request(auth: &str, target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ask(port: u16, auth: &str, target: &str, body: &str) -> Resp {
    call(
        "POST",
        port,
        target,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
}

fn error_code(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or("").to_string()
}

/// Waits past the start of the next whole second of the engine's rate
/// window (a second passes; the window is fixed per second).
fn next_second() {
    std::thread::sleep(Duration::from_millis(1_100));
}

#[test]
fn one_tenant_cannot_take_the_query_api_from_the_others() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let port = engine.port;
    let body = r#"{"metrics":["events"],"date_range":"day"}"#;
    assert_eq!(ask(port, DEV_AUTH, "/api/v1/query", body).status, 200);

    // 1. Cached answers count against the 50 queries/s: 120 identical
    // queries pipelined on one connection (answered within a second or two
    // of each other, all but the first from the cache).
    next_second();
    let hits_before = metric(port, "query_cache_hits_total").unwrap();
    let n = 120;
    let mut wire = Vec::new();
    for _ in 0..n {
        wire.extend_from_slice(&query_request(DEV_AUTH, "/api/v1/query", body));
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    s.write_all(&wire).unwrap();
    let mut r = BufReader::new(s);
    let answers: Vec<Resp> = (0..n).map(|_| read_response(&mut r).unwrap()).collect();
    let took = started.elapsed();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Resp> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + limited.len(), n, "only 200 and 429");
    // The window is one second, fixed: the answers span at most
    // `took` + 1 windows, each of at most 50.
    let windows = took.as_secs() as usize + 2;
    assert!(
        ok <= 50 * windows && !limited.is_empty(),
        "{ok} answered, {} limited in {took:?}: the cache answered past the rate",
        limited.len()
    );
    for a in &limited {
        assert_eq!(error_code(a), "rate_limited", "{}", a.body);
        assert_eq!(a.header("Retry-After"), Some("1"));
    }
    let hits = metric(port, "query_cache_hits_total").unwrap() - hits_before;
    assert!(
        hits >= 1.0 && hits <= ok as f64,
        "{hits} cache hits, {ok} answered"
    );

    // 2. A tenant's share of the queue: 40 distinct queries of one tenant at
    // once (2 workers: most wait) and one of another tenant among them.
    // Over 8 queued or running, the greedy tenant gets 429; the other
    // tenant is served.
    next_second();
    let burst = 40;
    let barrier = Arc::new(Barrier::new(burst + 1));
    let threads: Vec<_> = (0..=burst)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let (auth, limit) = if i == burst {
                    (SHOP_AUTH, 1)
                } else {
                    (DEV_AUTH, 100 + i)
                };
                let body = format!(
                    r#"{{"metrics":["events","visitors"],"date_range":"7d","dimensions":["event:page"],"limit":{limit}}}"#
                );
                let req = query_request(auth, "/api/v1/query", &body);
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                barrier.wait();
                s.write_all(&req).unwrap();
                read_response(&mut BufReader::new(s)).unwrap()
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let (greedy, other) = answers.split_at(burst);
    assert_eq!(other[0].status, 200, "the other tenant: {}", other[0].body);
    let shares: Vec<&Resp> = greedy.iter().filter(|a| a.status == 429).collect();
    assert!(
        greedy.iter().all(|a| [200, 429].contains(&a.status)),
        "{:?}",
        greedy.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(
        !shares.is_empty(),
        "40 queries at once, 2 workers: the tenant went over its share"
    );
    for a in &shares {
        assert_eq!(error_code(a), "too_many_queries", "{}", a.body);
        assert_eq!(a.header("Retry-After"), Some("1"));
    }
    // At most the share was admitted before the first answer freed a place:
    // the tenant never held more than 8, so at least 40 - 8 - (answers that
    // came back during the burst) were refused; at least one was.
    assert!(greedy.iter().filter(|a| a.status == 200).count() >= 8);

    // 3. Expensive filters are refused with a message naming the filter.
    next_second();
    let hundred: Vec<String> = (0..100).map(|i| format!("\"^/p{i}\"")).collect();
    let filters: Vec<String> = (0..20)
        .map(|_| format!(r#"["matches","event:page",[{}]]"#, hundred.join(",")))
        .collect();
    let heavy = format!(
        r#"{{"metrics":["events"],"date_range":["2025-01-01","2026-12-31"],"filters":[{}]}}"#,
        filters.join(",")
    );
    assert!(heavy.len() < 64 * 1024);
    let r = ask(port, DEV_AUTH, "/api/v1/query", &heavy);
    assert_eq!(r.status, 400, "{}", r.body);
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with(r#"filter 1 ["matches", "event:page"]"#),
        "{m}"
    );
    let repeated = format!(
        r#"{{"metrics":["events"],"date_range":"day","filters":[["is","event:type",["pageview"]],["matches","visit:referrer",["{}"]]]}}"#,
        ".{1000}".repeat(30)
    );
    let r = ask(port, DEV_AUTH, "/api/v1/query", &repeated);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_query"));
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with(r#"filter 2 ["matches", "visit:referrer"]"#) && m.contains("1000 times"),
        "{m}"
    );

    // 4. A secret key in the URL is refused, even beside a valid header.
    let r = ask(
        port,
        DEV_AUTH,
        &format!("/api/v1/query?key={DEV_TENANT}:secret"),
        body,
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (401, "secret_key_in_url"),
        "{}",
        r.body
    );
    let r = ask(
        port,
        SHOP_AUTH,
        &format!("/api/v1/query?key={SHOP_TENANT}:secret"),
        body,
    );
    assert_eq!(error_code(&r), "secret_key_in_url");
    // A write key there is no secret and no way in: the header decides.
    let r = ask(
        port,
        DEV_AUTH,
        &format!("/api/v1/query?key={DEV_TENANT}:{DEV_WRITE_KEY}"),
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        "POST",
        port,
        &format!("/api/v1/query?key={DEV_TENANT}:{DEV_WRITE_KEY}"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // Percent-encoded, it is the same key.
    let r = ask(
        port,
        DEV_AUTH,
        &format!("/api/v1/query?key={DEV_TENANT}%3Asecret"),
        body,
    );
    assert_eq!(error_code(&r), "secret_key_in_url");
}

/// A query of 20 blocks of `sleep(3)`: a minute on ClickHouse unless
/// stopped (18.16 checks time bounds and kills between blocks).
const SLOW: &str = "SELECT sleep(3) FROM system.numbers LIMIT 20 FORMAT JSONCompact";
const ONE_ROW_BLOCKS: [(&str, &str); 1] = [("max_block_size", "1")];

fn running(ch: &ClickHouse, query_id: &str) -> bool {
    ch.query(&format!(
        "SELECT count() FROM system.processes WHERE query_id = '{query_id}'"
    )) == "1"
}

#[test]
fn a_query_past_its_wait_is_killed_on_clickhouse() {
    let ch = ClickHouse::start();

    // The defect: a client that stops waiting leaves the query running.
    let plain = ch.client().with_timeout(Duration::from_secs(1));
    let id = query::runner::new_query_id();
    let mut settings = vec![("query_id", id.as_str()), ("max_execution_time", "600")];
    settings.extend(ONE_ROW_BLOCKS);
    assert!(plain.query_with_settings(SLOW, &settings).is_err());
    std::thread::sleep(Duration::from_secs(2));
    let left_running = running(&ch, &id);
    ch.query(&format!("KILL QUERY WHERE query_id = '{id}' SYNC"));

    // The runner: the same wait, then `KILL QUERY … ASYNC`.
    let runner = Runner::start(ch.client().with_timeout(Duration::from_secs(1))).unwrap();
    let id = query::runner::new_query_id();
    let started = Instant::now();
    let r = runner.run(&id, SLOW, 600, &ONE_ROW_BLOCKS);
    assert!(
        matches!(r, Err(clickhouse_client::Error::Connection { .. })),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let gone = common::wait_until(Duration::from_secs(15), || !running(&ch, &id));
    assert!(gone, "the killed query still runs on ClickHouse");
    assert!(
        left_running,
        "control: without the kill, ClickHouse kept running the query"
    );

    // ClickHouse's own bound: `max_execution_time` stops it by itself
    // (code 159) while the runner still waits.
    let runner = Runner::start(ch.client().with_timeout(Duration::from_secs(30))).unwrap();
    let id = query::runner::new_query_id();
    let started = Instant::now();
    let r = runner.run(&id, SLOW, 1, &ONE_ROW_BLOCKS);
    assert!(
        matches!(
            r,
            Err(clickhouse_client::Error::Server {
                code: Some(159),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!running(&ch, &id));
}
