//! The engine as a systemd service: it says when it is ready, pings the
//! watchdog while its shards run, reloads tenants, rate limits and the log
//! filter on `SIGHUP` (and names what needs a restart), keeps running on an
//! invalid file, and stops cleanly on `SIGTERM`. The service manager's side
//! is a real `NOTIFY_SOCKET`, as systemd sets for `Type=notify`.

mod common;

use std::time::Duration;

use common::notify::NotifySocket;
use common::*;

/// A tenant the reload adds; its secret key is `secret`.
const ADDED_TENANT: &str = "77777777-7777-7777-7777-777777777777";
const ADDED_AUTH: &str = "Bearer 77777777-7777-7777-7777-777777777777:secret";

fn added_tenant_block() -> String {
    format!(
        "\n[[tenants]]\nid = \"{ADDED_TENANT}\"\nname = \"added\"\ntier = \"paid\"\n\
         secret_key_sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n"
    )
}

fn send_one(port: u16, tenant: &str, auth: &str) -> u16 {
    let body = batch(&[event(0, tenant, &uuid::Uuid::new_v4().to_string())]);
    post(port, Some(auth), &[], &body).status
}

fn sighup(engine: &Engine) {
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe { libc::kill(engine.pid() as i32, libc::SIGHUP) };
}

#[test]
fn notifies_systemd_reloads_on_sighup_and_stops_on_sigterm() {
    let mut broker = Broker::start();
    let dir = scratch_dir("service");
    let mut notify = NotifySocket::bind(&dir);
    let socket = notify.path.to_string_lossy().to_string();
    // `RUST_LOG` empty: the file's log.level is in force and reloadable.
    let base = format!("[log]\nlevel = \"warn\"\n{TEST_CONFIG}");
    let mut engine = Engine::start_with(
        &broker,
        &base,
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
            ("RUST_LOG", ""),
        ],
    );
    notify.expect("READY=1", Duration::from_secs(10));
    // Pings every half period while the shards beat.
    notify.expect("WATCHDOG=1", Duration::from_secs(3));
    notify.expect("WATCHDOG=1", Duration::from_secs(3));
    assert_eq!(send_one(engine.port, ADDED_TENANT, ADDED_AUTH), 401);

    // 1. The log filter: at `warn`, the reload's own `info` line shows only
    // if the new level is in force.
    std::fs::write(engine.config_path(), base.replace("\"warn\"", "\"info\"")).unwrap();
    sighup(&engine);
    let msg = notify.expect("RELOADING=1", Duration::from_secs(5));
    assert!(msg.contains("MONOTONIC_USEC="), "{msg}");
    notify.expect("READY=1", Duration::from_secs(5));
    wait_for("the reload's info line", Duration::from_secs(5), || {
        engine.log().contains("configuration reloaded")
    });
    assert!(!engine.log().contains("needs_restart"), "{}", engine.log());

    // 2. A tenant added and a bound that needs a restart.
    let with_tenant = format!(
        "{}\n{}",
        base.replace("\"warn\"", "\"info\"").replacen(
            "[log]",
            "[http]\nmax_body_bytes = 500000\n\n[log]",
            1
        ),
        added_tenant_block()
    );
    std::fs::write(engine.config_path(), &with_tenant).unwrap();
    sighup(&engine);
    wait_for("the added tenant", Duration::from_secs(10), || {
        send_one(engine.port, ADDED_TENANT, ADDED_AUTH) == 200
    });
    wait_for("the restart notice", Duration::from_secs(5), || {
        let log = engine.log();
        log.contains("needs_restart") && log.contains("http.max_body_bytes")
    });
    assert_eq!(send_one(engine.port, DEV_TENANT, DEV_AUTH), 200);

    // 3. An invalid file changes nothing.
    std::fs::write(engine.config_path(), "port = [").unwrap();
    sighup(&engine);
    wait_for("the invalid-file error", Duration::from_secs(5), || {
        engine
            .log()
            .contains("reload: invalid configuration; nothing changed")
    });
    assert_eq!(send_one(engine.port, ADDED_TENANT, ADDED_AUTH), 200);
    assert_eq!(get(engine.port, "/health/ready").unwrap().status, 200);

    // Errors name their request, in the answer and in the log.
    let body = batch(&[event(0, DEV_TENANT, "s")]);
    let refused = post(
        engine.port,
        Some("Bearer 99999999-9999-9999-9999-999999999999:x"),
        &[],
        &body,
    );
    assert_eq!(refused.status, 401);
    let id = refused
        .header("x-request-id")
        .expect("X-Request-Id on a 401")
        .to_string();
    use sonic_rs::JsonValueTrait;
    assert_eq!(
        refused.json().get("request_id").and_then(|v| v.as_str()),
        Some(id.as_str())
    );
    broker.stop();
    let mut failed = None;
    wait_for(
        "a 503 while the broker is down",
        Duration::from_secs(30),
        || {
            let r = post(engine.port, Some(DEV_AUTH), &[], &body);
            failed = r
                .header("x-request-id")
                .filter(|_| r.status == 503)
                .map(str::to_string);
            failed.is_some()
        },
    );
    let failed = failed.unwrap();
    wait_for("the 503's log line", Duration::from_secs(5), || {
        engine
            .log()
            .lines()
            .any(|l| l.contains("request failed") && l.contains(&failed))
    });

    // 4. A stop: STOPPING=1, exit 0.
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe { libc::kill(engine.pid() as i32, libc::SIGTERM) };
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let status = engine
        .wait_exit(Duration::from_secs(30))
        .expect("the engine did not stop within 30 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = engine.log();
    assert_eq!(
        log.matches("stopped accepting connections").count(),
        2,
        "each shard closes its listener on a stop: {log}"
    );
}

#[test]
fn logs_json_lines_and_names_its_config_file() {
    let broker = Broker::start();
    let engine = Engine::start_with(
        &broker,
        &format!("[log]\nformat = \"json\"\n{TEST_CONFIG}"),
        &[("RUST_LOG", "info")],
    );
    // A shard logs its placement from its own thread, which may come after
    // readiness on a loaded machine (a clean-clone CI run read the log first).
    wait_for("the shard placement line", Duration::from_secs(10), || {
        engine.log().contains("shard placement")
    });
    let log = engine.log();
    let lines: Vec<sonic_rs::Value> = log
        .lines()
        .map(|l| sonic_rs::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    use sonic_rs::JsonValueTrait;
    let loaded = lines
        .iter()
        .find(|v| v.get("message").and_then(|m| m.as_str()) == Some("configuration loaded"))
        .expect("a `configuration loaded` line");
    let file = loaded.get("file").and_then(|f| f.as_str()).unwrap();
    assert!(
        file.contains(&engine.config_path().display().to_string()),
        "{file}"
    );
    assert!(lines
        .iter()
        .any(
            |v| v.get("message").and_then(|m| m.as_str()) == Some("shard placement")
                && v.get("placement")
                    .and_then(|p| p.as_str())
                    .is_some_and(|p| p.contains("shard-0:core"))
        ));
    assert!(lines
        .iter()
        .any(|v| v.get("message").and_then(|m| m.as_str()) == Some("thread placement")));

    // Without --config, from a directory with no config/: it says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingestion-engine"))
        .env_clear()
        .current_dir(scratch_dir("no-config"))
        .arg("check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = if std::path::Path::new("/etc/ingestion-engine/config.toml").exists() {
        "# config file: /etc/ingestion-engine/config.toml (found)"
    } else {
        "# config file: none: built-in defaults"
    };
    assert!(text.starts_with(expected), "{text}");
}
