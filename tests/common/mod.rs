//! Test harness: a real tansu broker and the real engine binary, each on its
//! own free loopback port, stopped when dropped.
#![allow(dead_code)]

pub mod attacks;
pub mod cluster;
pub mod flow;
pub mod notify;
pub mod page;
pub mod slow;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEV_TENANT: &str = "00000000-0000-0000-0000-000000000000";
pub const DEV_AUTH: &str = "Bearer 00000000-0000-0000-0000-000000000000:secret";
pub const DISABLED_TENANT: &str = "33333333-3333-3333-3333-333333333333";
pub const LIMITED_TENANT: &str = "44444444-4444-4444-4444-444444444444";

pub const SHOP_TENANT: &str = "55555555-5555-5555-5555-555555555555";
/// The dev tenant's write key (config/default.toml).
pub const DEV_WRITE_KEY: &str = "pk_development";
/// The shop tenant's write key; its secret key is `secret`.
pub const SHOP_WRITE_KEY: &str = "pk_shop";

/// Tenants of the test config: the dev tenant (secret key `secret` in the
/// legacy field, write key `pk_development`, any origin), a disabled one, a
/// free-tier one limited to 50 events/s, and a shop whose pages live on
/// `https://shop.example` and its subdomains.
pub const TEST_CONFIG: &str = r#"
[[tenants]]
id = "00000000-0000-0000-0000-000000000000"
name = "development"
tier = "enterprise"
retention_days = 3650
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
write_key_sha256 = "5ae9195d0e56112ce85c1fb32f7cd9cf1779774f6f6fe45d7999175f546e5744"

[[tenants]]
id = "55555555-5555-5555-5555-555555555555"
name = "shop"
tier = "paid"
secret_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
write_key_sha256 = "8fa8b76e8ac353050802d5e567a3c306d3278c33cf370767e274ded76b976cc4"
allowed_origins = ["https://shop.example", "https://*.shop.example"]

[[tenants]]
id = "33333333-3333-3333-3333-333333333333"
name = "disabled"
tier = "paid"
disabled = true
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"

[[tenants]]
id = "44444444-4444-4444-4444-444444444444"
name = "limited"
tier = "free"
rate_limit_eps = 50
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
"#;

/// Waits for `cond` up to `timeout`, polling; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    if !wait_until(timeout, cond) {
        panic!("timed out waiting for {what}");
    }
}

/// Polls `cond` up to `timeout`; whether it came true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The ports [`free_port`] hands out: `INGESTION_TEST_PORTS` (`LOW-HIGH`),
/// or 20000 up to the kernel's ephemeral range (`ip_local_port_range`,
/// 32768 by default) and at most 32000. Below the ephemeral range no
/// outgoing connection and no `bind(0)` of another program is given one of
/// them, so a port claimed here stays free until its server binds it.
fn port_range() -> (u16, u16) {
    if let Some((lo, hi)) = std::env::var("INGESTION_TEST_PORTS")
        .ok()
        .and_then(|v| {
            let (lo, hi) = v.split_once('-')?;
            Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
        })
        .filter(|(lo, hi): &(u16, u16)| lo < hi)
    {
        return (lo, hi);
    }
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let hi = ephemeral_low.min(32000);
    let lo = if hi > 21000 {
        20000
    } else {
        10000.min(hi - 1000)
    };
    (lo, hi)
}

/// Where test processes record which ports they hold: one file per port,
/// `flock`ed by the process that claimed it for as long as it lives.
fn port_lock_dir() -> PathBuf {
    let dir = std::env::var_os("INGESTION_TEST_PORT_LOCKS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ingestion-test-ports"));
    if std::fs::create_dir_all(&dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        // Shared by every user's test runs on this machine.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    dir
}

/// The port locks this process holds (released when it exits).
static HELD_PORTS: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
/// The next candidate, an offset into [`port_range`].
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// Takes the lock of `port` for the rest of this process, unless another
/// process holds it.
fn claim_port(dir: &Path, port: u16) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
        .ok()?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

/// A loopback port for a server of this test, that no other test (in this
/// process or another) is handed: claimed with a lock held until this
/// process exits, outside the ephemeral range, and free to bind right now.
/// A test that restarts its server on the same port keeps it.
pub fn free_port() -> u16 {
    let (lo, hi) = port_range();
    let span = u32::from(hi - lo);
    // Each process starts its walk elsewhere in the range, so concurrent
    // runs rarely try the same ports.
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let dir = port_lock_dir();
    for _ in 0..span {
        let port = lo + (NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        let Some(lock) = claim_port(&dir, port) else {
            continue;
        };
        // Not ours, but taken: something that does not take part in the
        // locking (a `scripts/up`, a server left over by a killed run).
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD_PORTS.lock().unwrap().push(lock);
        return port;
    }
    panic!(
        "no free port in {lo}-{hi}: every one is locked under {} or bound",
        dir.display()
    );
}

/// A new folder under `$INGESTION_TEST_TMP` (or the system's temp folder),
/// unique to this process and call.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var_os("INGESTION_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits up to `timeout` for `ready` while `child` runs; panics with the
/// tail of `log` at once when `child` exits, and on the timeout.
pub fn wait_started(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited before it was ready ({status}); last lines of {}:\n{}",
                log.display(),
                tail(log, 40)
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} was not ready within {timeout:?}; last lines of {}:\n{}",
                log.display(),
                tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fault test that cannot run here (e.g. no `mount`): says so on the
/// terminal even under cargo's capture, and records it as
/// `$INGESTION_TEST_TMP/skipped/<test>` (the reason), which `scripts/test`
/// lists at the end. Panics instead where `INGESTION_REQUIRE_FAULTS=1`
/// (`scripts/test` sets it when it runs as root, where faults can be made).
pub fn skip(test: &str, reason: &str) {
    if std::env::var("INGESTION_REQUIRE_FAULTS").is_ok_and(|v| v == "1") {
        panic!(
            "{test} cannot run here ({reason}), and INGESTION_REQUIRE_FAULTS=1 says it must \
             (set INGESTION_REQUIRE_FAULTS=0 to let it be skipped)"
        );
    }
    // Straight to the terminal: the harness captures eprintln!, not this.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    if let Some(base) = std::env::var_os("INGESTION_TEST_TMP") {
        let dir = PathBuf::from(base).join("skipped");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(test), format!("{reason}\n"));
    }
}

fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        "tansu".into()
    }
}

/// A tansu broker with SQLite storage (survives its own restart).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    pub fn start() -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: scratch_dir("broker"),
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker wrote to stderr since it last started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// The broker's process id (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker runs").id()
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("broker.log")).unwrap();
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            // ENGINE_LOG=info (or debug) when a failing test needs the engines' story.
            .env(
                "RUST_LOG",
                std::env::var("ENGINE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu must be installed (scripts/test installs it)");
        let port = self.port;
        let child = self.child.insert(child);
        wait_started(
            &format!("tansu on port {port}"),
            child,
            &self.dir.join("broker.log"),
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let port = self.port;
        wait_for("broker port to close", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_err()
        });
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts the broker with its data gone (a lost disk, a reinstall):
    /// topics, offsets and groups start again.
    pub fn wipe_and_restart(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("tansu.db") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The engine binary, serving on a free port against `broker`.
pub struct Engine {
    child: Child,
    pub port: u16,
    config: PathBuf,
    broker: String,
    dir: PathBuf,
}

/// `ingestion-engine serve` with `env` on top of [`engine_command`], its
/// stderr in `log`.
pub fn spawn_serve<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    config: &Path,
    broker: &str,
    port: u16,
    env: impl IntoIterator<Item = (K, V)>,
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    engine_command(config, broker, port)
        .envs(env)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn engine_command(config: &Path, broker: &str, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingestion-engine"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // ENGINE_LOG=info (or debug) when a failing test needs the engines' story.
        .env(
            "RUST_LOG",
            std::env::var("ENGINE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("INGESTION_HOST", "127.0.0.1")
        .env("INGESTION_PORT", port.to_string())
        .env("INGESTION_SHARDS", "2")
        .env("INGESTION_REDPANDA_BROKERS", broker)
        .env("INGESTION_REDPANDA_HEALTH_INTERVAL_MS", "200")
        .env("INGESTION_ROLES", "ingest")
        .arg("--config")
        .arg(config);
    cmd
}

/// Runs `scripts/lib.sh`'s `function ARGS` (which starts a service, prints
/// its pid and returns once it serves) and returns the pid; on a failure,
/// kills what it started and panics with its output.
pub fn start_service(function: &str, args: &str) -> u32 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = format!(
        "source '{}/scripts/lib.sh' && {function} {args}",
        root.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let pid: Option<u32> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    if !out.status.success() {
        // It may still run (not ready in time): not past this test.
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        panic!(
            "{function} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pid.unwrap_or_else(|| panic!("{function} prints the pid it started"))
}

/// A private clickhouse-server on free ports (started by scripts/lib.sh),
/// killed on drop; restartable on the same ports and data.
pub struct ClickHouse {
    pid: Option<u32>,
    pub http_port: u16,
    pub tcp_port: u16,
    interserver_port: u16,
    dir: PathBuf,
    /// A cluster node's own settings (`config.d`), see [`cluster`].
    extra: Option<PathBuf>,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        ClickHouse::start_in(&scratch_dir("clickhouse"))
    }

    /// A server whose data, logs and config live in `dir`.
    pub fn start_in(dir: &Path) -> ClickHouse {
        let mut c = ClickHouse {
            pid: None,
            http_port: free_port(),
            tcp_port: free_port(),
            interserver_port: free_port(),
            dir: dir.to_path_buf(),
            extra: None,
        };
        c.spawn();
        c
    }

    /// A server on the ports given, its `config.d` holding `extra` (a
    /// cluster node's settings); not started yet.
    pub fn node(dir: &Path, http_port: u16, tcp_port: u16, extra: PathBuf) -> ClickHouse {
        ClickHouse {
            pid: None,
            http_port,
            tcp_port,
            interserver_port: free_port(),
            dir: dir.to_path_buf(),
            extra: Some(extra),
        }
    }

    /// Starts a server made by [`ClickHouse::node`] (or stopped).
    pub fn start_again(&mut self) {
        assert!(self.pid.is_none(), "clickhouse is running");
        self.spawn();
    }

    /// Whether it runs (not stopped).
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }

    fn spawn(&mut self) {
        let args = format!(
            "{} {} '{}' {} '{}'",
            self.http_port,
            self.tcp_port,
            self.dir.display(),
            self.interserver_port,
            self.extra
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
        self.pid = Some(start_service("start_clickhouse", &args));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn client(&self) -> clickhouse_client::Client {
        clickhouse_client::Client::new(&self.url(), Duration::from_secs(30))
    }

    /// A query's TabSeparated answer, trimmed.
    pub fn query(&self, sql: &str) -> String {
        self.client()
            .query(&format!("{sql} FORMAT TabSeparated"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let port = self.http_port;
            wait_for("clickhouse to stop", Duration::from_secs(30), || {
                TcpStream::connect(("127.0.0.1", port)).is_err()
            });
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl Engine {
    /// Kills the engine with SIGKILL (no drain, no flush).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn start(broker: &Broker) -> Engine {
        Self::start_with(broker, TEST_CONFIG, &[])
    }

    /// An engine with `roles` (`ingest`, `sink` or `ingest,sink`) against
    /// `ch`, on the test config, reloading tenants every 200 ms and inserting
    /// batches at most 200 ms old.
    pub fn start_on(broker: &Broker, ch: &ClickHouse, roles: &str) -> Engine {
        let url = ch.url();
        Engine::start_with(
            broker,
            TEST_CONFIG,
            &[
                ("INGESTION_ROLES", roles),
                ("INGESTION_CLICKHOUSE_URL", &url),
                ("INGESTION_CLICKHOUSE_TENANTS_REFRESH_MS", "200"),
                ("INGESTION_SINK_BATCH_MAX_AGE_MS", "200"),
                ("INGESTION_SINK_RETRY_BACKOFF_MAX_MS", "500"),
            ],
        )
    }

    pub fn start_with(broker: &Broker, config: &str, env: &[(&str, &str)]) -> Engine {
        let dir = scratch_dir("engine");
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = dir.join("engine.log");
        let child = spawn_serve(
            &config_path,
            &broker.addr(),
            port,
            env.iter().copied(),
            &log,
        );
        let mut engine = Engine {
            child,
            port,
            config: config_path,
            broker: broker.addr(),
            dir,
        };
        let sink_only = env
            .iter()
            .any(|(k, v)| *k == "INGESTION_ROLES" && v.trim() == "sink");
        if sink_only {
            // A sink-only node serves /health and /metrics once it runs.
            wait_started(
                &format!("the sink-only engine's status port {port}"),
                &mut engine.child,
                &log,
                Duration::from_secs(60),
                || get(port, "/health/live").is_ok_and(|r| r.status == 200),
            );
        } else {
            engine.wait_ready();
        }
        engine
    }

    /// Waits until `/health/ready` answers 200; panics at once (with the
    /// log's tail) if the engine exits meanwhile.
    pub fn wait_ready(&mut self) {
        let port = self.port;
        wait_started(
            &format!("the engine on port {port}"),
            &mut self.child,
            &self.dir.join("engine.log"),
            Duration::from_secs(60),
            || get(port, "/health/ready").is_ok_and(|r| r.status == 200),
        );
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("engine.log")).unwrap_or_default()
    }

    /// Every event the topic holds, via `ingestion-engine dump`.
    pub fn dump(&self) -> Vec<sonic_rs::Value> {
        let out = engine_command(&self.config, &self.broker, self.port)
            .arg("dump")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| sonic_rs::from_str(l).unwrap())
            .collect()
    }

    /// Resident memory of the engine, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS")
    }
}

/// A field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resets the process's peak resident size (`VmHWM`) to its resident size
/// now (`clear_refs`, Linux 4.0 and later), so the next peak read is the
/// peak since this call.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("resetting the engine's VmHWM: {e}"));
}

impl Engine {
    /// Waits up to `timeout` for the engine to exit on its own: its exit
    /// status, or `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the graceful stop (the sink leaves its group).
    pub fn terminate(mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body's bytes (for binary bodies, e.g. gzip).
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> sonic_rs::Value {
        sonic_rs::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Reads one response (Content-Length framed, as the engine always sends).
pub fn read_response(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        raw: body,
    })
}

/// A raw connection for keep-alive, pipelining and slow-client tests.
pub struct Raw {
    pub reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw {
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    pub fn response(&mut self) -> Resp {
        read_response(&mut self.reader).unwrap()
    }

    /// True when the server closed the connection (EOF or a reset) within
    /// the connection's read timeout (30 s). A connection the server left
    /// open (the read timed out) or that sent more bytes is not closed.
    pub fn closed(&mut self) -> bool {
        self.state_within(Duration::from_secs(30)).is_closed()
    }

    /// True when the server closes the connection within `within`; false
    /// when it is still open then (or sent more bytes).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.state_within(within).is_closed()
    }

    /// What the server does with the connection within `within`: closes
    /// it, resets it, leaves it open, or sends more.
    pub fn state_within(&mut self, within: Duration) -> PeerState {
        let s = self.reader.get_ref();
        let before = s.read_timeout().ok().flatten();
        s.set_read_timeout(Some(within)).unwrap();
        let state = peer_state(&mut self.reader);
        let _ = self.reader.get_ref().set_read_timeout(before);
        state
    }
}

/// What a read finds on a connection the client expects to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// End of stream: the server closed it.
    Closed,
    /// The server reset it (`ECONNRESET`, or a write side already gone).
    Reset(std::io::ErrorKind),
    /// Nothing came before the read timeout: the server left it open.
    Open,
    /// The server sent more bytes (the first of them).
    Sent(u8),
}

impl PeerState {
    /// Closed or reset.
    pub fn is_closed(&self) -> bool {
        matches!(self, PeerState::Closed | PeerState::Reset(_))
    }
}

/// Reads one byte from `r` (whose read timeout bounds the wait) and says
/// what that means: closed (EOF), reset, still open (timed out), or data.
pub fn peer_state(r: &mut impl Read) -> PeerState {
    use std::io::ErrorKind;
    let mut b = [0u8; 1];
    loop {
        return match r.read(&mut b) {
            Ok(0) => PeerState::Closed,
            Ok(_) => PeerState::Sent(b[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A read timeout is WouldBlock on Unix (TimedOut elsewhere).
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                PeerState::Open
            }
            Err(e) => PeerState::Reset(e.kind()),
        };
    }
}

/// Reads `s` to its end within `within`: what it sent before closing (or
/// resetting) it, or the state it was in when `within` ran out (open, or
/// still sending).
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, PeerState> {
    use std::io::ErrorKind;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = if left.is_zero() {
            Err(ErrorKind::TimedOut.into())
        } else {
            s.set_read_timeout(Some(left)).unwrap();
            s.read(&mut buf)
        };
        match read {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(match got.first() {
                    Some(&b) => PeerState::Sent(b),
                    None => PeerState::Open,
                });
            }
            // Reset: closed, with what came before.
            Err(_) => return Ok(got),
        }
    }
}

/// `POST /ingest` request bytes.
pub fn ingest_request(auth: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /ingest HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(port: u16, path: &str) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())?;
    read_response(&mut BufReader::new(s))
}

/// The value of an unlabelled metric (or one with its labels written out,
/// e.g. `sink_event_lag_seconds{quantile="0.99"}`) from `GET /metrics`.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let r = get(port, "/metrics").ok()?;
    r.body.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}

/// POSTs to `/ingest` with ureq (a real HTTP client); any status is
/// returned, not raised.
pub fn post(port: u16, auth: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend(auth.map(|a| ("Authorization", a)));
    all.extend_from_slice(headers);
    call("POST", port, "/ingest", &all, Some(body))
}

/// Any request with ureq (a real HTTP client); any status is returned, not
/// raised. `target` is the path with its query.
pub fn call(
    method: &str,
    port: u16,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut req = ureq::request(method, &format!("http://127.0.0.1:{port}{target}"))
        .timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let sent = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match sent {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|k| {
            let v = resp.header(&k).unwrap_or("").to_string();
            (k, v)
        })
        .collect();
    let mut raw = Vec::new();
    resp.into_reader().read_to_end(&mut raw).unwrap();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&raw).into_owned(),
        raw,
    }
}

/// Now as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A valid event of each type by `i % 5`, for tenant `tenant`.
pub fn event(i: usize, tenant: &str, session: &str) -> sonic_rs::Value {
    let id = uuid::Uuid::new_v4().to_string();
    let ts = now_rfc3339();
    let mut v = sonic_rs::json!({
        "id": id, "tenant_id": tenant, "session_id": session, "timestamp": ts,
        "url": "https://shop.example.com/products/42?ref=home", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "locale": "en-US",
    });
    let extra = match i % 5 {
        0 => {
            sonic_rs::json!({"type": "pageview", "path": "/products/42", "title": "Product 42", "referrer": "https://google.com/"})
        }
        1 => {
            sonic_rs::json!({"type": "click", "selector": "button#buy", "text": "Buy now", "x": 120, "y": 480})
        }
        2 => sonic_rs::json!({"type": "scroll", "depth_pct": 75}),
        3 => {
            sonic_rs::json!({"type": "performance", "lcp": 1234.5, "fcp": 800, "cls": 0.05, "ttfb": 120})
        }
        _ => {
            sonic_rs::json!({"type": "custom", "name": "add_to_cart", "properties": {"sku": "A-42", "qty": 2}})
        }
    };
    use sonic_rs::{JsonContainerTrait, JsonValueMutTrait};
    let obj = v.as_object_mut().unwrap();
    for (k, val) in extra.as_object().unwrap().iter() {
        obj.insert(k, val.clone());
    }
    v
}

pub fn batch(events: &[sonic_rs::Value]) -> Vec<u8> {
    sonic_rs::to_vec(&sonic_rs::json!({ "events": events })).unwrap()
}

/// Runs the binary with `args` against this engine's config, broker and
/// `ch`; panics unless it succeeds.
pub fn tenant_cli(engine: &Engine, broker: &Broker, ch: &ClickHouse, args: &[&str]) -> Output {
    let out = engine_command(engine.config_path(), &broker.addr(), engine.port)
        .env("INGESTION_CLICKHOUSE_URL", ch.url())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of a `name: value` line of a command's output.
/// A paid tenant made through the CLI: `(id, write key, secret key)`.
pub fn create_tenant(
    engine: &Engine,
    broker: &Broker,
    ch: &ClickHouse,
    name: &str,
) -> (String, String, String) {
    let created = tenant_cli(
        engine,
        broker,
        ch,
        &["tenant", "create", "--name", name, "--tier", "paid"],
    );
    (
        field(&created, "tenant_id"),
        field(&created, "write_key"),
        field(&created, "secret_key"),
    )
}

pub fn field(out: &Output, name: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(&out.stdout)))
}
