//! The admin listener (and a sink-only node's status port: the same
//! server, `src/status.rs`) against a running engine: a client that
//! trickles its request holds neither the listener nor its own connection
//! for long, and one address cannot take every place.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The status line's code of what `s` sent before it closed.
fn status_of(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let got = read_until_closed(s, within).ok()?;
    let line = got.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn the_admin_listener_serves_scrapes_while_a_client_trickles_its_request() {
    let broker = Broker::start();
    let admin_port = free_port();
    let admin = admin_port.to_string();
    let engine = Engine::start_with(&broker, TEST_CONFIG, &[("INGESTION_ADMIN_PORT", &admin)]);
    wait_for("the admin listener", Duration::from_secs(10), || {
        get(admin_port, "/health/live").is_ok_and(|r| r.status == 200)
    });
    // One byte every 1.9 s: inside any per-read timeout of 2 s.
    let trickler = std::thread::spawn(move || {
        let began = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
        for &b in b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n" {
            if s.write_all(&[b]).is_err() {
                break;
            }
            s.set_read_timeout(Some(Duration::from_millis(1900)))
                .unwrap();
            match s.peek(&mut [0u8; 1]) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // Answered or closed.
                _ => break,
            }
        }
        (status_of(&mut s, Duration::from_secs(10)), began.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/metrics", "/health", "/health/ready"] {
        let began = Instant::now();
        let r = get(admin_port, path).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{path} took {:?} beside a trickling client",
            began.elapsed()
        );
    }
    // The whole request had its deadline: 408, seconds (not hours) later.
    let (status, took) = trickler.join().unwrap();
    assert_eq!(status, Some(408));
    assert!(took < Duration::from_secs(6), "{took:?}");
    engine.terminate();
}

#[test]
fn one_address_cannot_take_every_place_of_the_admin_listener() {
    let broker = Broker::start();
    let admin_port = free_port();
    let admin = admin_port.to_string();
    let engine = Engine::start_with(&broker, TEST_CONFIG, &[("INGESTION_ADMIN_PORT", &admin)]);
    wait_for("the admin listener", Duration::from_secs(10), || {
        get(admin_port, "/health/live").is_ok_and(|r| r.status == 200)
    });
    // Silent connections holding the places one address may have (4). A
    // connection of the readiness wait above may still hold its place for
    // a moment after its answer (its thread ends after the client read it),
    // so a silent one refused meanwhile (it is answered 503 at once) is
    // replaced; the test then holds exactly the 4 places (a clean-clone run
    // on a loaded machine lost this race and saw a 200 below).
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..40 {
        if silent.len() == 4 {
            break;
        }
        let mut s = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut s, &mut byte) {
            // Nothing within 150 ms: it holds a place (for the 2 s deadline).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                silent.push(s)
            }
            // Answered (503) or closed: refused; try again.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert_eq!(
        silent.len(),
        4,
        "could not hold the 4 places of one address"
    );
    // And more than its places.
    silent.extend((0..4).map(|_| TcpStream::connect(("127.0.0.1", admin_port)).unwrap()));
    std::thread::sleep(Duration::from_millis(100));
    // Over its places: 503 at once, not a wait.
    let began = Instant::now();
    let r = get(admin_port, "/metrics").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(began.elapsed() < Duration::from_secs(1));
    // The silent ones end at the request deadline; then it serves again.
    for mut s in silent {
        assert!(read_until_closed(&mut s, Duration::from_secs(6)).is_ok());
    }
    wait_for("a place again", Duration::from_secs(5), || {
        get(admin_port, "/metrics").is_ok_and(|r| r.status == 200)
    });
    engine.terminate();
}
