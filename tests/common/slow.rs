//! A TCP proxy to ClickHouse that slows its answers: a server too busy to
//! answer within the sink's insert timeout, for real.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP proxy to ClickHouse that holds each of ClickHouse's answers for
/// `delay_ms` (0: passes them at once), like a server too busy to answer.
///
/// Each answer is held once, at its first bytes (the first read from
/// ClickHouse after the client sent more of a request); the rest of it
/// follows at once. Holding every read instead made an answer's delay a
/// multiple of `delay_ms` that grew with how the answer happened to be cut
/// into reads, which is more under load.
pub struct SlowProxy {
    port: u16,
    pub delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    pub fn start(upstream: u16) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (delay_ms, stop) = (delay_ms.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    // Reads of the client's requests so far.
                    let sent = Arc::new(AtomicUsize::new(0));
                    let asked = sent.clone();
                    std::thread::spawn(move || pipe(client, server, Some(&asked), None));
                    let delay = delay_ms.clone();
                    std::thread::spawn(move || pipe(s2, c2, None, Some((&sent, delay))));
                }
            });
        }
        SlowProxy {
            port,
            delay_ms,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`. The client's side counts its reads in `count`;
/// ClickHouse's side holds the first read after each new one of the
/// client's (`delay`: that count and the delay).
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Option<&AtomicUsize>,
    delay: Option<(&AtomicUsize, Arc<AtomicU64>)>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut answered = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(count) = count {
            count.fetch_add(1, Ordering::SeqCst);
        }
        if let Some((asked, d)) = &delay {
            let now = asked.load(Ordering::SeqCst);
            if now != answered {
                answered = now;
                let held = Instant::now();
                while held.elapsed() < Duration::from_millis(d.load(Ordering::Relaxed)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
