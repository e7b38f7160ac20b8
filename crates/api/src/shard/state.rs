//! One shard's own state: owned by its thread, never shared, so `Cell` and
//! `RefCell` and no locks. Everything a request touches on its way through
//! a shard lives here: the process-wide state it reads ([`AppState`]), its
//! byte budget (`budget.rs`), its pool of body buffers, its latency
//! histograms and the request log of its error answers.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::metrics::{ShardCounters, ShardHistograms};
use crate::request_log::RequestLog;
use crate::shard::budget::Budget;
use crate::state::AppState;

/// One shard's state: owned by its thread, never shared.
#[derive(Debug)]
pub struct Shard {
    pub index: usize,
    pub state: Arc<AppState>,
    pub histograms: RefCell<ShardHistograms>,
    /// Body buffers for chunked and decoded bodies: at most
    /// `http.body_buffer_pool` of them, each at most `http.max_body_bytes`.
    pool: RefCell<Vec<Vec<u8>>>,
    pub connections: Cell<usize>,
    /// Request ids of error answers and their log lines.
    pub requests: RequestLog,
    /// Request bytes held now, in all and per client (`budget.rs`).
    pub budget: Budget,
    /// Debug builds only: a request for this path panics in the shard task,
    /// so tests can check the failure policy (docs/guarantees.md: "Failure policy").
    #[cfg(debug_assertions)]
    pub fault_panic_path: Option<Vec<u8>>,
}

/// Debug builds only: names the path that makes a shard panic. Not an
/// `INGESTION_*` name: those are configuration keys, unknown ones fail startup.
#[cfg(debug_assertions)]
pub const FAULT_PANIC_PATH_ENV: &str = "ENGINE_FAULT_PANIC_PATH";

impl Shard {
    /// A shard with an empty buffer pool.
    pub fn new(index: usize, state: Arc<AppState>) -> Self {
        Self {
            requests: RequestLog::new(index, state.boot_id),
            index,
            state,
            histograms: RefCell::new(ShardHistograms::new(index)),
            pool: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            budget: Budget::default(),
            #[cfg(debug_assertions)]
            fault_panic_path: std::env::var_os(FAULT_PANIC_PATH_ENV)
                .map(std::ffi::OsString::into_encoded_bytes),
        }
    }

    /// Takes a scratch buffer from the pool.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.pool.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a scratch buffer; kept only while the pool has room
    /// (`http.body_buffer_pool`) and the buffer is at most `max_body_bytes`.
    pub fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        let http = &self.state.config.http;
        // A decoded body's buffer may be larger: it goes, so the pool holds
        // at most body_buffer_pool × max_body_bytes.
        if pool.len() < http.body_buffer_pool && buf.capacity() <= http.max_body_bytes {
            buf.clear();
            pool.push(buf);
        }
    }

    /// This shard's counters.
    pub fn counters(&self) -> &ShardCounters {
        self.state.metrics.shard(self.index)
    }

    /// `Retry-After` of this engine's 503s, in seconds.
    pub fn retry_after_secs(&self) -> u32 {
        self.state.config.http.retry_after_secs
    }
}
