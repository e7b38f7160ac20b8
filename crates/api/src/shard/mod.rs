//! Shard threads: one monoio runtime per core, pinned, each with its own
//! `SO_REUSEPORT` listener so the kernel spreads connections across them.
//!
//! The shard's own state (its budget, buffer pool, histograms, request log)
//! is [`Shard`] (`state.rs`), owned by its thread; its byte budget is
//! `budget.rs`.

pub mod budget;
mod state;

pub use state::Shard;
#[cfg(debug_assertions)]
pub use state::FAULT_PANIC_PATH_ENV;

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use engine_core::config::{Config, IoDriver};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::{debug, info, warn};

use crate::clients::Connect;
use crate::conn;
use crate::state::AppState;

/// How often a shard publishes its histograms for exposition.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// Entries of each io_uring submission queue.
const URING_ENTRIES: u32 = 1024;
/// Connections over their address's limit (`[clients]`) a shard answers
/// `429` at once, at most; beyond, one is closed at accept without an answer.
/// Each is one of the shard's connections (`http.max_connections_per_shard`)
/// while it is answered, and holds a descriptor and a read buffer for at most
/// `REFUSAL_TIME`, so a flood of them costs a bounded few.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Longest a refused connection is held: its 429 written and a lingering
/// close (so a client that sent its request reads the answer, not a reset).
pub const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Errors starting the shards.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid listen address {0}")]
    Address(String),
    #[error("shard {shard}: {source}")]
    Io { shard: usize, source: io::Error },
}

/// Running shards.
#[derive(Debug)]
pub struct ShardsHandle {
    pub threads: Vec<JoinHandle<()>>,
    /// The plain HTTP address (the HTTPS one when plain HTTP is off).
    pub addr: SocketAddr,
    /// The HTTPS address, when TLS is on.
    pub tls_addr: Option<SocketAddr>,
}

/// What a shard listens on: plain HTTP, HTTPS, or both.
#[derive(Debug, Clone, Copy)]
struct Listen {
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

/// Number of shards the config asks for: `shards`, or one per core of
/// `placement.shard_cores`, or one per available core.
pub fn shard_count(config: &Config) -> usize {
    if config.shards > 0 {
        config.shards
    } else if !config.placement.shard_cores.is_empty() {
        config.placement.shard_cores.len()
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The core each shard is pinned to: `placement.shard_cores`, else the cores
/// this thread may run on, in order; `None` where the kernel tells nothing.
pub fn shard_cores(config: &Config, shards: usize) -> Vec<Option<usize>> {
    let cores: Vec<usize> = if config.placement.shard_cores.is_empty() {
        core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        config.placement.shard_cores.clone()
    };
    (0..shards)
        .map(|i| (!cores.is_empty()).then(|| cores[i % cores.len()]))
        .collect()
}

/// Starts the shards and returns once every one listens.
pub fn start(state: Arc<AppState>) -> Result<ShardsHandle, StartError> {
    let cfg = &state.config;
    let at = |port: u16| -> Result<SocketAddr, StartError> {
        format!("{}:{}", cfg.host, port)
            .parse()
            .map_err(|_| StartError::Address(format!("{}:{}", cfg.host, port)))
    };
    let https = state.tls.is_some();
    let listen = Listen {
        plain: (!https || cfg.tls.plain_http)
            .then(|| at(cfg.port))
            .transpose()?,
        tls: https.then(|| at(cfg.tls.port)).transpose()?,
    };
    let shards = state.metrics.shard_count();
    let cores = shard_cores(cfg, shards);
    let placement: Vec<String> = cores
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Some(c) => format!("shard-{i}:core {c}"),
            None => format!("shard-{i}:unpinned"),
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Result<&'static str, StartError>>();
    let mut threads = Vec::with_capacity(shards);
    for (index, &core) in cores.iter().enumerate() {
        let state = state.clone();
        let tx = tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        warn!(
                            shard = index,
                            core = id,
                            "could not pin the shard to its core"
                        );
                    }
                }
                run_shard(index, listen, state, tx);
            })
            .map_err(|source| StartError::Io {
                shard: index,
                source,
            })?;
        threads.push(handle);
    }
    drop(tx);
    for _ in 0..shards {
        match rx.recv() {
            Ok(Ok(driver)) => {
                let _ = state.io_driver.set(driver);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Io {
                    shard: 0,
                    source: io::Error::other("a shard exited during start"),
                })
            }
        }
    }
    let driver = state.io_driver.get().copied().unwrap_or("?");
    if let Some(addr) = listen.plain {
        info!(%addr, shards, driver, "listening (HTTP)");
    }
    if let Some(addr) = listen.tls {
        info!(%addr, shards, driver, "listening (HTTPS)");
    }
    info!(placement = placement.join(", "), "shard placement");
    Ok(ShardsHandle {
        threads,
        addr: listen
            .plain
            .or(listen.tls)
            .unwrap_or_else(|| unreachable!("a listener is always configured")),
        tls_addr: listen.tls,
    })
}

type Ready = mpsc::Sender<Result<&'static str, StartError>>;

fn run_shard(index: usize, listen: Listen, state: Arc<AppState>, ready: Ready) {
    let fail = |ready: &Ready, source: io::Error| {
        let _ = ready.send(Err(StartError::Io {
            shard: index,
            source,
        }));
    };
    match state.config.io_driver {
        IoDriver::Auto => {
            let driver = if monoio::utils::detect_uring() {
                "io_uring"
            } else {
                "epoll"
            };
            match RuntimeBuilder::<FusionDriver>::new()
                .with_entries(URING_ENTRIES)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => rt.block_on(shard_main(index, listen, state, ready, driver)),
                Err(e) => fail(&ready, e),
            }
        }
        IoDriver::Uring => {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(URING_ENTRIES)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => rt.block_on(shard_main(index, listen, state, ready, "io_uring")),
                Err(e) => fail(&ready, e),
            }
        }
        IoDriver::Legacy => match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
            Ok(mut rt) => rt.block_on(shard_main(index, listen, state, ready, "epoll")),
            Err(e) => fail(&ready, e),
        },
    }
}

async fn shard_main(
    index: usize,
    listen: Listen,
    state: Arc<AppState>,
    ready: Ready,
    driver: &'static str,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let mut listeners = Vec::new();
    for (addr, tls) in [(listen.plain, false), (listen.tls, true)] {
        let Some(addr) = addr else { continue };
        match TcpListener::bind_with_config(addr, &opts) {
            Ok(l) => {
                register_listener(&state, &l);
                listeners.push((l, tls));
            }
            Err(source) => {
                let _ = ready.send(Err(StartError::Io {
                    shard: index,
                    source,
                }));
                return;
            }
        }
    }
    let _ = ready.send(Ok(driver));
    let shard = Rc::new(Shard::new(index, state));
    {
        let shard = shard.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(PUBLISH_INTERVAL).await;
                shard
                    .histograms
                    .borrow_mut()
                    .publish(&shard.state.metrics.histograms);
                shard
                    .state
                    .metrics
                    .shard(shard.index)
                    .heartbeats
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Shared by the shard's listeners, like its connection count.
    let refusing = Rc::new(Cell::new(0));
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(listener, tls)| {
            monoio::spawn(accept_loop(listener, tls, shard.clone(), refusing.clone()))
        })
        .collect();
    for l in loops {
        l.await;
    }
    // Stopping: new connections go elsewhere; the ones open are still
    // answered until the process exits.
    info!(shard = index, "stopped accepting connections");
    std::future::pending::<()>().await;
}

/// Accepts connections until the engine stops, each served in its own task.
/// `refusing` counts the shard's connections being refused (see
/// [`MAX_REFUSALS_IN_FLIGHT`]).
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    shard: Rc<Shard>,
    refusing: Rc<Cell<usize>>,
) {
    let index = shard.index;
    let max_conns = shard.state.config.http.max_connections_per_shard;
    let counters = shard.state.metrics.shard(index);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                counters.connections_total.fetch_add(1, Ordering::Relaxed);
                if shard.connections.get() >= max_conns {
                    counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                let peer = peer.ip();
                let guard = match shard.state.clients.connect(peer) {
                    Connect::Admitted(guard) => guard,
                    Connect::Untracked => {
                        counters.clients_untracked.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Connect::OverLimit => {
                        counters.clients_refused.fetch_add(1, Ordering::Relaxed);
                        // A plaintext 429 means nothing inside TLS, and past
                        // the bound on refusals an answer costs too much:
                        // just close.
                        if !tls && refusing.get() < MAX_REFUSALS_IN_FLIGHT {
                            refuse(stream, peer, &shard, &refusing);
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                shard.connections.set(shard.connections.get() + 1);
                let shard = shard.clone();
                monoio::spawn(async move {
                    if tls {
                        serve_tls(stream, peer, shard.clone()).await;
                    } else {
                        conn::serve(stream, peer, false, shard.clone()).await;
                    }
                    drop(guard);
                    shard.connections.set(shard.connections.get() - 1);
                });
            }
            Err(_) if shard.state.shutting_down.load(Ordering::Relaxed) => break,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                warn!(shard = index, %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    close_listener(&shard.state, listener);
}

/// Answers a connection over its address's limit in a task of its own,
/// counted in the shard's connections and in `refusing` until it ends, and
/// ended after [`REFUSAL_TIME`] at the latest.
fn refuse(stream: TcpStream, peer: IpAddr, shard: &Rc<Shard>, refusing: &Rc<Cell<usize>>) {
    refusing.set(refusing.get().saturating_add(1));
    shard
        .connections
        .set(shard.connections.get().saturating_add(1));
    let (shard, refusing) = (shard.clone(), refusing.clone());
    monoio::spawn(async move {
        let _ = monoio::time::timeout(REFUSAL_TIME, conn::refuse_client(stream, peer)).await;
        refusing.set(refusing.get().saturating_sub(1));
        shard
            .connections
            .set(shard.connections.get().saturating_sub(1));
    });
}

/// The TLS handshake, bounded by `http.read_timeout_ms` (a client that
/// sends garbage or stalls mid-handshake holds only its own connection, and
/// not for long), then HTTP as on a plain connection.
async fn serve_tls(stream: TcpStream, peer: IpAddr, shard: Rc<Shard>) {
    let Some(tls) = shard.state.tls.as_ref() else {
        return;
    };
    let counters = shard.state.metrics.shard(shard.index);
    let limit = shard.state.config.http.read_timeout_ms;
    match monoio::time::timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            counters.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            conn::serve(stream, peer, true, shard.clone()).await;
        }
        Ok(Err(e)) => {
            counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, %e, "TLS handshake failed");
        }
        Err(_) => {
            counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Lets [`AppState::stop_accepting`] wake this listener's accept.
fn register_listener(state: &AppState, listener: &TcpListener) {
    if let Ok(mut fds) = state.listeners.lock() {
        fds.push(listener.as_raw_fd());
    }
}

/// Closes the listener, first taking it off the list under the lock, so a
/// stop never shuts down a descriptor number reused since.
fn close_listener(state: &AppState, listener: TcpListener) {
    let mut fds = state.listeners.lock();
    if let Ok(fds) = fds.as_mut() {
        fds.retain(|&fd| fd != listener.as_raw_fd());
    }
    drop(listener);
}
