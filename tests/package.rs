//! The Debian package, installed on this machine with `dpkg -i`: the files,
//! the service user, the unit (`systemd-analyze verify`), then the installed
//! binary started the way the unit starts it (the service user, the
//! installed config edited to point at the test broker and ClickHouse,
//! `NOTIFY_SOCKET`). It ingests, is stopped with `SIGTERM` under load and
//! must exit 0 within the unit's `TimeoutStopSec` with nothing accepted
//! lost. Then `dpkg -r` and `dpkg -P` remove every trace.
//!
//! Needs root and the package: `scripts/test` builds it (`cargo deb`) and
//! sets `ENGINE_TEST_DEB`, and runs it with `--ignored` (it is ignored in
//! the plain integration run, so the totals count it once, as ignored
//! there and as run in the package step). Run with `--ignored` but without
//! the package, it is a visible, counted skip (`common::skip`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::flow::*;
use common::notify::NotifySocket;
use common::*;

const UNIT: &str = "/usr/lib/systemd/system/ingestion-engine.service";
const CONFIG: &str = "/etc/ingestion-engine/config.toml";
const USER: &str = "ingestion-engine";

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A value of the unit's `[Service]` section.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

/// `ExecStart` of the unit, as the service user, from its working
/// directory, with systemd's notify socket; stderr into `log`.
/// The installed engine, killed if the test fails before stopping it (a
/// leftover process of the service user would keep `dpkg -P` from removing
/// the user).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_installed(unit: &str, socket: &Path, log: &Path) -> Running {
    let exec: Vec<String> = unit_value(unit, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let user = unit_value(unit, "User");
    let mut args = vec![
        format!("--reuid={user}"),
        format!("--regid={}", unit_value(unit, "Group")),
        "--init-groups".to_string(),
    ];
    args.extend(exec);
    Command::new("setpriv")
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "30000000")
        .current_dir(unit_value(unit, "WorkingDirectory"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .map(Running)
        .unwrap()
}

fn sigterm_and_wait(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    // SAFETY: kill(2) on our own child's pid (setpriv execs the engine in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("the installed engine did not stop within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs the package: scripts/test builds it and runs this with --ignored"]
fn installs_runs_as_the_unit_does_stops_cleanly_and_purges() {
    let Some(deb) = std::env::var_os("ENGINE_TEST_DEB") else {
        common::skip(
            "package::installs_runs_as_the_unit_does_stops_cleanly_and_purges",
            "ENGINE_TEST_DEB is not set (scripts/test builds the package and sets it)",
        );
        return;
    };
    // SAFETY: geteuid(2) reads the process's credentials; it cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the package test installs with dpkg: run it as root"
    );
    let deb = Path::new(&deb);
    assert!(deb.exists(), "{} does not exist", deb.display());
    let name = deb.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("ingestion-engine_") && name.ends_with("_amd64.deb"),
        "{name}"
    );

    // Install.
    let _ = Command::new("dpkg")
        .args(["-P", "ingestion-engine"])
        .output();
    run("dpkg", &["-i", &deb.to_string_lossy()]);
    let conffiles =
        String::from_utf8(run("dpkg-query", &["-W", "-f=${Conffiles}", "ingestion-engine"]).stdout)
            .unwrap();
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    let config = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(config.mode() & 0o777, 0o640);
    let home = std::fs::metadata("/var/lib/ingestion-engine").unwrap();
    let uid = String::from_utf8(run("id", &["-u", USER]).stdout).unwrap();
    assert_eq!(home.uid().to_string(), uid.trim());
    let installed = std::fs::read_to_string(CONFIG).unwrap();
    assert!(
        !installed.contains("00000000-0000-0000-0000-000000000000"),
        "the packaged config must not hold the development tenant"
    );
    for tool in ["check", "irq-affinity", "sysctl.conf", "README.md"] {
        assert!(
            Path::new("/usr/share/ingestion-engine/tuning")
                .join(tool)
                .exists(),
            "{tool}"
        );
    }

    // The unit.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
    let stop_timeout: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();

    // The operator edits the one config file: broker, ClickHouse, a port, a tenant.
    let broker = Broker::start();
    let ch = ClickHouse::start();
    let port = free_port();
    let admin_port = free_port();
    let edited = installed
        .replace("port = 8080", &format!("port = {port}"))
        .replace("host = \"0.0.0.0\"", "host = \"127.0.0.1\"")
        .replace(
            "brokers = \"localhost:9092\"",
            &format!("brokers = \"{}\"", broker.addr()),
        )
        .replace(
            "url = \"http://localhost:8123\"",
            &format!("url = \"{}\"", ch.url()),
        )
        .replace("port = 9464", &format!("port = {admin_port}"))
        .replace("compression = \"lz4\"", "compression = \"none\"")
        .replace("shards = 0", "shards = 2")
        + "\n[sink]\nbatch_max_age_ms = 200\n"
        + TEST_CONFIG;
    assert_ne!(edited, installed);
    std::fs::write(CONFIG, &edited).unwrap();
    // As the unit runs it: no INGESTION_* from this test's environment.
    let check = Command::new("/usr/bin/ingestion-engine")
        .args(["--config", CONFIG, "check-config"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout)
        .starts_with(&format!("# config file: {CONFIG} (named)")));

    // Start as the unit does; it tells "systemd" when it is ready.
    let dir = scratch_dir("package");
    // The service user must reach the notify socket, as it reaches systemd's
    // in /run: a directory of its own straight under /tmp, not inside the
    // test's scratch folder (which may be private to root).
    let sockets = std::env::temp_dir().join(format!("ingestion-package-{}", std::process::id()));
    std::fs::create_dir_all(&sockets).unwrap();
    std::fs::set_permissions(
        &sockets,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut notify = NotifySocket::bind(&sockets);
    let log1 = dir.join("engine-1.log");
    let mut engine = start_installed(&unit, &notify.path, &log1);
    notify.expect_or("READY=1", Duration::from_secs(90), || {
        std::fs::read_to_string(&log1).unwrap_or_default()
    });
    let user = std::fs::read_to_string(format!("/proc/{}/status", engine.0.id())).unwrap();
    let euid = user
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert_eq!(euid, uid.trim(), "the engine must run as {USER}");
    wait_for("edge ready", Duration::from_secs(30), || {
        get(port, "/health/ready").is_ok_and(|r| r.status == 200)
    });

    // Ingest, then SIGTERM while the load goes on.
    let mut load = Load::start(port, usize::MAX, Duration::from_secs(60));
    wait_for("events acknowledged", Duration::from_secs(30), || {
        load.acked().len() >= 2000
    });
    let (status, took) = sigterm_and_wait(&mut engine.0, Duration::from_secs(stop_timeout));
    notify.expect("STOPPING=1", Duration::from_secs(1));
    load.finish();
    assert!(status.success(), "exit status {status} after SIGTERM");
    let acked = load.acked();
    let sent = load.sent();
    println!(
        "package: {} events acknowledged, stopped in {took:?} (TimeoutStopSec={stop_timeout})",
        acked.len()
    );

    // Started again, its sink moves whatever the stop left in the broker.
    let log2 = dir.join("engine-2.log");
    let mut again = start_installed(&unit, &notify.path, &log2);
    notify.expect_or("READY=1", Duration::from_secs(90), || {
        std::fs::read_to_string(&log2).unwrap_or_default()
    });
    wait_landed(&ch, &acked, LANDING_BOUND, "after a SIGTERM under load");
    assert_exactly_once(&ch, &acked, &sent);
    let (status, _) = sigterm_and_wait(&mut again.0, Duration::from_secs(stop_timeout));
    assert!(status.success(), "exit status {status}");

    // Remove keeps the edited config (a conffile); purge removes every trace.
    run("dpkg", &["-r", "ingestion-engine"]);
    assert!(!Path::new("/usr/bin/ingestion-engine").exists());
    assert!(!Path::new(UNIT).exists());
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    run("dpkg", &["-P", "ingestion-engine"]);
    for gone in [
        "/etc/ingestion-engine",
        "/var/lib/ingestion-engine",
        "/usr/share/ingestion-engine",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let _ = std::fs::remove_dir_all(&sockets);
    assert!(
        !Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success(),
        "{USER} left after purge"
    );
}
