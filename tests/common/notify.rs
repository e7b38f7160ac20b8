//! The service manager's side of `sd_notify`: a datagram socket the engine
//! is pointed at with `NOTIFY_SOCKET`, as systemd does for `Type=notify`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Receives the engine's notifications.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    /// Every message received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    /// A socket at `dir/notify.sock`, writable by any user (the service
    /// user of the package test).
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a message holding the line `line` (e.g. `READY=1`);
    /// returns that message.
    pub fn expect(&mut self, line: &str, timeout: Duration) -> String {
        self.expect_or(line, timeout, String::new)
    }

    /// [`NotifySocket::expect`], and on failure `context()` (the engine's
    /// log) in the message.
    pub fn expect_or(
        &mut self,
        line: &str,
        timeout: Duration,
        context: impl FnOnce() -> String,
    ) -> String {
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
        }
        panic!(
            "no {line} from the engine within {timeout:?}; got {:?}\n{}",
            self.seen,
            context()
        );
    }

    /// How many messages so far held `line`.
    pub fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}
