//! Request ids on errors, and the log lines that carry them.
//!
//! Every answer with status 400 or more names its request (`X-Request-Id`
//! and `request_id` in the JSON body): `<boot>-<shard>-<sequence>`, unique
//! within a process run. A `5xx` error answer (the engine's fault or the
//! broker's) is logged at `warn` with that id; a `4xx` (the client's) and a
//! probe's "not ready" (a state, asked every few seconds) at `debug`. Warn
//! lines are bounded per shard ([`WARN_LINES_PER_SEC`]), so an outage that
//! answers thousands of `503` a second does not flood the journal: the lines
//! left out are counted in the next one.

use std::cell::Cell;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::http::Response;

/// Most `warn` lines about answers one shard writes per second.
pub const WARN_LINES_PER_SEC: u32 = 10;

/// A shard's request counter and its log budget.
#[derive(Debug)]
pub struct RequestLog {
    shard: usize,
    boot: u32,
    seq: Cell<u64>,
    window: Cell<Instant>,
    logged: Cell<u32>,
    suppressed: Cell<u64>,
}

impl RequestLog {
    /// The log of `shard`; `boot` tells this process run from others.
    pub fn new(shard: usize, boot: u32) -> Self {
        Self {
            shard,
            boot,
            seq: Cell::new(0),
            window: Cell::new(Instant::now()),
            logged: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    fn next_id(&self) -> String {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        format!("{:08x}-{}-{seq}", self.boot, self.shard)
    }

    /// `resp` named with a new request id, logged when it is an error.
    pub fn tag(&self, peer: IpAddr, resp: &Response) -> Response {
        let id = self.next_id();
        let answer = engine_text::clip_lossy(&resp.body, 256);
        if resp.status >= 500 && resp.is_error() {
            let now = Instant::now();
            if now.duration_since(self.window.get()) >= Duration::from_secs(1) {
                self.window.set(now);
                self.logged.set(0);
            }
            if self.logged.get() < WARN_LINES_PER_SEC {
                self.logged.set(self.logged.get() + 1);
                let suppressed = self.suppressed.replace(0);
                warn!(request_id = %id, status = resp.status, %peer, %answer, suppressed, "request failed");
            } else {
                self.suppressed.set(self.suppressed.get() + 1);
            }
        } else {
            debug!(request_id = %id, status = resp.status, %peer, %answer, "request refused");
        }
        resp.clone().with_request_id(id)
    }
}
