//! HTTPS on the edge: curl and a rustls client (trusting the test CA) over
//! TLS 1.3 and 1.2 with ALPN `http/1.1`, plain HTTP beside it, clients that
//! send garbage or stall mid-handshake (they hold no shard: others are
//! served meanwhile, and each is closed), and a certificate renewed on
//! `SIGHUP` while a keep-alive connection stays up.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{HttpsConn, TestCa};
use common::*;

struct Https {
    engine: Engine,
    tls_port: u16,
    ca: TestCa,
    dir: std::path::PathBuf,
    _broker: Broker,
}

fn https_engine(extra: &[(&str, &str)]) -> Https {
    let broker = Broker::start();
    let dir = scratch_dir("tls");
    let ca = TestCa::new();
    let issued = ca.issue(&dir, "server");
    let tls_port = free_port().to_string();
    let (cert, key) = (
        issued.cert_path.display().to_string(),
        issued.key_path.display().to_string(),
    );
    let mut env = vec![
        ("INGESTION_TLS__CERT_PATH", cert.as_str()),
        ("INGESTION_TLS__KEY_PATH", key.as_str()),
        ("INGESTION_TLS__PORT", tls_port.as_str()),
        ("INGESTION_HTTP__READ_TIMEOUT_MS", "2000"),
    ];
    env.extend_from_slice(extra);
    let engine = Engine::start_with(&broker, TEST_CONFIG, &env);
    Https {
        engine,
        tls_port: tls_port.parse().unwrap(),
        ca,
        dir,
        _broker: broker,
    }
}

fn one_batch() -> Vec<u8> {
    let body = batch(&[event(0, DEV_TENANT, &uuid::Uuid::new_v4().to_string())]);
    ingest_request(DEV_AUTH, &body, "")
}

fn curl(args: &[&str]) -> (String, String, bool) {
    let out = Command::new("curl").args(args).output().expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.success(),
    )
}

#[test]
fn curl_and_rustls_over_tls_1_3_and_1_2_with_plain_http_beside() {
    let h = https_engine(&[]);
    let ca_pem = h.ca.write_pem(&h.dir).display().to_string();
    let base = format!("https://localhost:{}", h.tls_port);
    let resolve = format!("localhost:{}:127.0.0.1", h.tls_port);

    // curl, trusting only the test CA, both protocol versions.
    for (flags, version) in [
        (&["--tlsv1.3"][..], "TLSv1.3"),
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
    ] {
        let mut args = vec!["-sS", "-v", "--cacert", &ca_pem, "--resolve", &resolve];
        args.extend_from_slice(flags);
        let live = format!("{base}/health/live");
        args.push(&live);
        let (out, err, ok) = curl(&args);
        assert!(ok, "curl {version}: {err}");
        assert!(err.contains(version), "curl did not use {version}: {err}");
        assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
        assert!(out.contains("ok") || out.contains("live"), "{out}");
    }
    let body = String::from_utf8(batch(&[event(
        0,
        DEV_TENANT,
        &uuid::Uuid::new_v4().to_string(),
    )]))
    .unwrap();
    let (out, err, ok) = curl(&[
        "-sS",
        "--cacert",
        &ca_pem,
        "--resolve",
        &resolve,
        "-H",
        &format!("Authorization: {DEV_AUTH}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &format!("{base}/ingest"),
    ]);
    assert!(ok && out.contains("\"events_accepted\":1"), "{out} {err}");
    // An untrusted chain is refused by the client, as a browser would.
    let (_, err, ok) = curl(&["-sS", "--resolve", &resolve, &format!("{base}/health/live")]);
    assert!(!ok, "curl trusted a certificate it has no CA for: {err}");

    // A rustls client: the negotiated protocol, several requests on one connection.
    let mut conn = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(conn.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    for _ in 0..3 {
        let (status, body) = conn.exchange(&one_batch()).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // Plain HTTP beside it, on the same shards.
    assert_eq!(get(h.engine.port, "/health/live").unwrap().status, 200);
    assert!(metric(h.engine.port, "ingest_tls_handshakes_total").unwrap() >= 4.0);
}

#[test]
fn garbage_and_stalled_handshakes_hold_no_shard() {
    let h = https_engine(&[("INGESTION_SHARDS", "1")]);
    // 200 clients that connect and never finish a handshake, 50 that send
    // an HTTP request to the TLS port: one shard holds them all.
    let stalled: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", h.tls_port)).unwrap())
        .collect();
    let mut garbage: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", h.tls_port)).unwrap();
            s.write_all(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile a real client is served at once.
    let started = Instant::now();
    let mut conn = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    let (status, _) = conn.exchange(&one_batch()).unwrap();
    assert_eq!(status, 200);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a handshake and a batch took {took:?} beside 250 bad clients"
    );
    // Garbage is closed at once: an alert or nothing, then EOF (or a
    // reset); a connection still open after 5 s fails.
    for (i, s) in garbage.iter_mut().enumerate() {
        let rest = read_until_closed(s, Duration::from_secs(5))
            .unwrap_or_else(|state| panic!("garbage client {i} not closed within 5 s: {state:?}"));
        assert!(
            !rest.starts_with(b"HTTP/"),
            "a plaintext answer on the TLS port"
        );
    }
    // The stalled ones are closed after http.read_timeout_ms (2 s).
    std::thread::sleep(Duration::from_millis(2500));
    for (i, mut s) in stalled.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let state = peer_state(&mut s);
        assert!(
            state.is_closed(),
            "stalled handshake {i} still open 5.5 s after it connected: {state:?}"
        );
    }
    wait_for("failures counted", Duration::from_secs(5), || {
        metric(h.engine.port, "ingest_tls_handshake_failures_total").is_some_and(|v| v >= 250.0)
    });
}

#[test]
fn a_renewed_certificate_applies_on_sighup_without_dropping_connections() {
    let h = https_engine(&[]);
    let first = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    let before = first.server_fingerprint();
    let mut kept = first;
    assert_eq!(kept.exchange(&one_batch()).unwrap().0, 200);

    // The renewal rewrites the same files, as certbot and friends do.
    let renewed = h.ca.issue(&h.dir, "renewed");
    std::fs::copy(&renewed.cert_path, h.dir.join("server.pem")).unwrap();
    std::fs::copy(&renewed.key_path, h.dir.join("server.key")).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe { libc::kill(h.engine.pid() as i32, libc::SIGHUP) };
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        HttpsConn::connect(h.tls_port, h.ca.client())
            .is_ok_and(|c| c.server_fingerprint() == renewed.fingerprint)
    });
    assert_ne!(before, renewed.fingerprint);
    // The connection made before the reload still works.
    assert_eq!(kept.exchange(&one_batch()).unwrap().0, 200);

    // A broken renewal leaves the running certificate in place.
    std::fs::write(h.dir.join("server.pem"), "not a certificate").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(h.engine.pid() as i32, libc::SIGHUP) };
    wait_for("the reload error", Duration::from_secs(10), || {
        h.engine.log().contains("TLS certificate not reloaded")
    });
    let c = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    assert_eq!(c.server_fingerprint(), renewed.fingerprint);
}

/// The harness's closing checks, which the handshake, idle, slow-client and
/// abuse tests rely on, tell a connection the server left open from one it
/// closed: a read timeout is "open", not "closed".
#[test]
fn closing_checks_tell_an_open_connection_from_a_closed_one() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Held open: not closed, however long the client waits.
    let mut raw = Raw::connect(port);
    let (mut server, _) = listener.accept().unwrap();
    assert_eq!(
        raw.state_within(Duration::from_millis(300)),
        PeerState::Open
    );
    assert!(!raw.closed_within(Duration::from_millis(300)));
    // More bytes: not closed either.
    server.write_all(b"x").unwrap();
    assert_eq!(
        raw.state_within(Duration::from_secs(5)),
        PeerState::Sent(b'x')
    );
    // Closed: at once, well before the timeout.
    drop(server);
    let started = Instant::now();
    assert!(raw.closed());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Reset (closed with unread bytes): closed.
    let mut raw = Raw::connect(port);
    let (server, _) = listener.accept().unwrap();
    raw.send(b"unread");
    std::thread::sleep(Duration::from_millis(100));
    drop(server);
    assert!(raw.closed_within(Duration::from_secs(5)));
    // The same for a plain stream read to its end.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(b"bye").unwrap();
    assert_eq!(
        read_until_closed(&mut s, Duration::from_millis(300)),
        Err(PeerState::Sent(b'b'))
    );
    drop(server);
    assert_eq!(
        read_until_closed(&mut s, Duration::from_secs(5)),
        Ok(Vec::new())
    );
}

/// Reads what the server sends until it closes (or `within` passes).
fn read_answer(conn: &mut HttpsConn, within: Duration) -> Vec<u8> {
    use std::io::Read;
    conn.stream.sock.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = conn.stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    out
}

#[test]
fn a_request_timing_out_over_tls_is_a_408_not_an_abort() {
    // Found by review: a read that timed out was cancelled inside the TLS
    // stream, which lost its read buffer, and the lingering close after the
    // 408 read it again: a panic, so the process aborted. And a 408 on an
    // `/ingest` body with an `Origin` sliced the head out of the read buffer
    // the cancelled read had taken: out of range, the same abort. Neither
    // needs more than the public write key.
    let mut h = https_engine(&[]);
    let pid = h.engine.pid();
    // A head that never ends.
    let mut slow = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    slow.stream.write_all(b"G").unwrap();
    slow.stream.flush().unwrap();
    // A body that never ends, from a page.
    let mut body = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    let head = format!(
        "POST /ingest?key={DEV_TENANT}:{DEV_WRITE_KEY} HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/json\r\nOrigin: https://shop.example\r\n\
         Content-Length: 100\r\n\r\n{{\"events\""
    );
    body.stream.write_all(head.as_bytes()).unwrap();
    body.stream.flush().unwrap();
    // The same over plain HTTP.
    let mut plain = TcpStream::connect(("127.0.0.1", h.engine.port)).unwrap();
    plain.write_all(head.as_bytes()).unwrap();
    let answered = |bytes: &[u8]| String::from_utf8_lossy(bytes).starts_with("HTTP/1.1 408");
    // The read timeout is 2 s.
    let a = read_answer(&mut slow, Duration::from_secs(6));
    assert!(answered(&a), "{:?}", String::from_utf8_lossy(&a));
    let b = read_answer(&mut body, Duration::from_secs(6));
    let b = String::from_utf8_lossy(&b).to_string();
    assert!(answered(b.as_bytes()), "{b:?}");
    assert!(
        b.contains("Access-Control-Allow-Origin: https://shop.example"),
        "a page reads why: {b}"
    );
    let c = read_until_closed(&mut plain, Duration::from_secs(6)).unwrap_or_default();
    assert!(answered(&c), "{:?}", String::from_utf8_lossy(&c));
    // Still the same process, serving.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        h.engine.wait_exit(Duration::from_millis(100)).is_none(),
        "the engine exited: {}",
        h.engine.log()
    );
    assert_eq!(h.engine.pid(), pid);
    let mut conn = HttpsConn::connect(h.tls_port, h.ca.client()).unwrap();
    let (status, _) = conn.exchange(&one_batch()).unwrap();
    assert_eq!(status, 200);
}
