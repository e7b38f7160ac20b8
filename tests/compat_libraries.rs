//! The real Segment and PostHog libraries, pinned and installed by
//! `scripts/test` (`compat-libs/`: npm `@segment/analytics-node`,
//! `posthog-node`, `@segment/analytics-next`, `posthog-js`; PyPI
//! `segment-analytics-python`, `posthog` in `.venv`), with only their host
//! pointed at a test engine (both roles, the real broker and ClickHouse):
//! every event lands once, field by field; each library's own retries
//! through a broker outage store nothing twice, on the server and in the
//! browser.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn libs() -> PathBuf {
    let dir = root().join("compat-libs");
    assert!(
        dir.join("node_modules/posthog-node").exists(),
        "compat-libs/node_modules is missing: scripts/test installs it (scripts/compat-libs)"
    );
    dir
}

fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import posthog, segment.analytics"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python libraries are missing from .venv: scripts/test installs them (scripts/compat-libs)"
    );
    py
}

/// Runs a library script against `port`, letting each library retry
/// `retries` times; its stdout.
fn run_script(program: &Path, script: &str, port: u16, run: &str, retries: u32) -> String {
    let out = Command::new(program)
        .env("RETRIES", retries.to_string())
        .arg(libs().join(script))
        .current_dir(libs())
        .env("ENGINE_URL", format!("http://127.0.0.1:{port}"))
        .env("WRITE_KEY", DEV_WRITE_KEY)
        .env("RUN", run)
        .output()
        .expect("run the library script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// How many 503 answers the engine gave so far.
fn responses_503(port: u16) -> u64 {
    let m = get(port, "/metrics").expect("metrics");
    String::from_utf8_lossy(&m.raw)
        .lines()
        .find_map(|l| l.strip_prefix("ingest_http_responses_total{status=\"503\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `sig` (`-STOP`, `-CONT`) to a process of this test.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

fn node() -> PathBuf {
    PathBuf::from("node")
}

/// The dev tenant's rows whose user or session belongs to `run`, as
/// `type|name|user|path|url|title|referrer|properties|session` lines.
fn rows_of(ch: &ClickHouse, run: &str, expect: usize) -> Vec<Vec<String>> {
    let sql = format!(
        "SELECT event_type, name, user_id, path, url, title, referrer, properties, toString(session_id) \
         FROM overwatch.events WHERE tenant_id = toUUID('{DEV_TENANT}') \
         AND (user_id LIKE '{run}-%' OR properties LIKE '%{run}-%' OR session_id IN ({sessions})) \
         ORDER BY event_time_us",
        sessions = sessions(run)
            .iter()
            .map(|s| format!("toUUID('{s}')"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut got = Vec::new();
    wait_until(Duration::from_secs(90), || {
        got = ch
            .query(&sql)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        got.len() >= expect
    });
    got
}

/// The sessions the scripts use, as the engine stores them (UUID v5 of
/// each anonymous id or session id in the tenant's namespace).
fn sessions(run: &str) -> Vec<String> {
    let ns = uuid::Uuid::parse_str(DEV_TENANT).unwrap();
    [
        "node-segment-anon",
        "node-posthog-session",
        "py-segment-anon",
        "py-posthog-session",
    ]
    .iter()
    .map(|s| uuid::Uuid::new_v5(&ns, format!("{run}-{s}").as_bytes()).to_string())
    .collect()
}

/// A string property of a stored `properties` JSON object.
fn prop(json: &str, key: &str) -> String {
    use sonic_rs::JsonValueTrait;
    let v: sonic_rs::Value = sonic_rs::from_str(json).unwrap_or_default();
    v[key].as_str().unwrap_or_default().to_string()
}

fn find<'r>(rows: &'r [Vec<String>], ty: &str, name: &str, user: &str) -> Vec<&'r Vec<String>> {
    rows.iter()
        .filter(|r| r[0] == ty && r[1] == name && r[2] == user)
        .collect()
}

/// What each server library sent, checked field by field, each event once.
fn check_servers(rows: &[Vec<String>], run: &str) {
    let ns = uuid::Uuid::parse_str(DEV_TENANT).unwrap();
    let session = |s: &str| uuid::Uuid::new_v5(&ns, format!("{run}-{s}").as_bytes()).to_string();
    for (lang, seg_title, ph_title) in [
        ("node", "Node Pricing", "Node Docs"),
        ("py", "Py Pricing", "Py Docs"),
    ] {
        // Segment: page (anonymous), track and identify (with the user).
        let page = find(rows, "pageview", "", "");
        let page: Vec<_> = page.into_iter().filter(|r| r[5] == seg_title).collect();
        assert_eq!(page.len(), 1, "{lang} segment page once: {rows:#?}");
        assert_eq!(page[0][3], format!("/{lang}/pricing"));
        assert_eq!(page[0][4], format!("https://{lang}.example/{lang}/pricing"));
        assert_eq!(page[0][6], "https://ref.example/");
        assert_eq!(page[0][8], session(&format!("{lang}-segment-anon")));
        let user = format!("{run}-{lang}-segment-user");
        let signed = if lang == "node" {
            "Node Signed Up"
        } else {
            "Py Signed Up"
        };
        let track = find(rows, "custom", signed, &user);
        assert_eq!(track.len(), 1, "{lang} segment track once: {rows:#?}");
        assert_eq!(prop(&track[0][7], "plan"), "pro", "{:?}", track[0]);
        let identify = find(rows, "custom", "identify", &user);
        assert_eq!(identify.len(), 1, "{lang} segment identify once: {rows:#?}");
        assert!(identify[0][7].contains("@example.com"), "{:?}", identify[0]);
        // PostHog: $pageview, a capture with properties, and the person
        // call (`identify` in Node, `set` in Python).
        let distinct = format!("{run}-{lang}-posthog-user");
        let pv = find(rows, "pageview", "", &distinct);
        assert_eq!(pv.len(), 1, "{lang} posthog pageview once: {rows:#?}");
        assert_eq!(pv[0][3], format!("/{lang}/docs"));
        assert_eq!(pv[0][5], ph_title);
        assert_eq!(pv[0][8], session(&format!("{lang}-posthog-session")));
        let name = format!("{lang} plan upgraded");
        let up = find(rows, "custom", &name, &distinct);
        assert_eq!(up.len(), 1, "{lang} posthog capture once: {rows:#?}");
        assert_eq!(prop(&up[0][7], "plan"), "team", "{:?}", up[0]);
        let person = if lang == "node" { "identify" } else { "set" };
        assert_eq!(
            find(rows, "custom", person, &distinct).len(),
            1,
            "{lang} posthog {person} once: {rows:#?}"
        );
    }
}

#[test]
fn the_server_libraries_of_segment_and_posthog_land_once_field_by_field() {
    let (libs_dir, py) = (libs(), python());
    let _ = libs_dir;
    let broker = Broker::start();
    let ch = ClickHouse::start();
    let mut engine = Engine::start_on(&broker, &ch, "ingest,sink");
    engine.wait_ready();
    let run = format!("r{}", uuid::Uuid::new_v4().simple());
    let out = run_script(&node(), "servers.mjs", engine.port, &run, 3);
    assert!(
        !out.contains("\"errors\":[\""),
        "node libraries reported errors: {out}"
    );
    let out = run_script(&py, "servers.py", engine.port, &run, 3);
    assert!(
        !out.contains("\"errors\": [\""),
        "python libraries reported errors: {out}"
    );
    let rows = rows_of(&ch, &run, 12);
    std::thread::sleep(Duration::from_secs(1));
    let rows = {
        let again = rows_of(&ch, &run, 12);
        assert_eq!(again.len(), rows.len(), "{again:#?}");
        again
    };
    assert_eq!(rows.len(), 12, "{rows:#?}");
    check_servers(&rows, &run);

    // The broker hangs (SIGSTOP) before the libraries send: once the edge
    // sees it down it answers 503 on the head, each library retries the
    // same events with its own backoff, and when the broker is back every
    // event is stored once. (Nothing is produced while it hangs: tansu 0.6
    // cannot take back a producer whose records timed out, tests/chaos.rs.)
    let run = format!("r{}", uuid::Uuid::new_v4().simple());
    let refused_before = responses_503(engine.port);
    signal(broker.pid(), "-STOP");
    wait_for(
        "the edge to see the broker down",
        Duration::from_secs(20),
        || get(engine.port, "/health/ready").is_ok_and(|r| r.status == 503),
    );
    let port = engine.port;
    let spawn = |program: PathBuf, script: &'static str| {
        let run = run.clone();
        std::thread::spawn(move || run_script(&program, script, port, &run, 30))
    };
    let (node_send, py_send) = (
        spawn(node(), "servers.mjs"),
        spawn(py.clone(), "servers.py"),
    );
    std::thread::sleep(Duration::from_secs(2));
    signal(broker.pid(), "-CONT");
    let (a, b) = (node_send.join().unwrap(), py_send.join().unwrap());
    let rows = rows_of(&ch, &run, 12);
    std::thread::sleep(Duration::from_secs(2));
    let rows = {
        let again = rows_of(&ch, &run, 12);
        assert_eq!(again.len(), rows.len(), "{again:#?}");
        again
    };
    assert_eq!(rows.len(), 12, "after the outage: {rows:#?}\n{a}\n{b}");
    check_servers(&rows, &run);
    assert!(
        responses_503(engine.port) > refused_before,
        "the outage was answered 503 at least once (so the libraries retried)"
    );
}

/// Runs `browser.mjs` with `key` (and `extra` env); its report.
fn browser(port: u16, key: &str, run: &str, extra: &[(&str, &str)]) -> sonic_rs::Value {
    let mut cmd = Command::new(node());
    cmd.arg(libs().join("browser.mjs"))
        .current_dir(libs())
        .env("ENGINE_URL", format!("http://127.0.0.1:{port}"))
        .env("WRITE_KEY", key)
        .env("RUN", run);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node browser.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "browser.mjs: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| sonic_rs::from_str::<sonic_rs::Value>(l).ok())
        .unwrap_or_else(|| panic!("a report from browser.mjs: {stdout}"));
    line["report"].clone()
}

/// The dev tenant's rows of the browser run `run` (its page's URL carries
/// it), as `type|name|user|path|url|title|selector|element|text`, once at
/// least the 7 events the page makes are there and a second more has
/// passed (for any copy to show).
fn browser_rows(ch: &ClickHouse, run: &str) -> Vec<Vec<String>> {
    let sql = format!(
        "SELECT event_type, name, user_id, path, url, title, selector, element, text \
         FROM overwatch.events WHERE tenant_id = toUUID('{DEV_TENANT}') \
         AND position(url, 'run={run}') > 0 ORDER BY event_time_us"
    );
    let read = || -> Vec<Vec<String>> {
        ch.query(&sql)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    wait_until(Duration::from_secs(90), || read().len() >= 7);
    std::thread::sleep(Duration::from_secs(1));
    read()
}

/// What the page sent, through both libraries, each event once.
fn check_browser(rows: &[Vec<String>], run: &str) {
    let count =
        |rows: &[Vec<String>], f: &dyn Fn(&[String]) -> bool| rows.iter().filter(|r| f(r)).count();
    let title = format!("Compat {run}");
    let url = |r: &[String]| r[4].contains("/pricing?utm_source=compat");
    // One page view from each library, on the page's path and title.
    assert_eq!(
        count(rows, &|r| r[0] == "pageview"
            && r[3] == "/pricing"
            && r[5] == title
            && url(r)),
        2,
        "{rows:#?}"
    );
    let signed = format!("{run} browser signed up");
    assert_eq!(
        count(rows, &|r| r[0] == "custom" && r[1] == signed && url(r)),
        1,
        "{rows:#?}"
    );
    let upgraded = format!("{run} browser plan upgraded");
    assert_eq!(
        count(rows, &|r| r[0] == "custom" && r[1] == upgraded),
        1,
        "{rows:#?}"
    );
    for user in ["browser-segment-user", "browser-posthog-user"] {
        let user = format!("{run}-{user}");
        assert_eq!(
            count(rows, &|r| r[1] == "identify" && r[2] == user),
            1,
            "{user}: {rows:#?}"
        );
    }
    // posthog-js's autocapture of the click.
    assert_eq!(
        count(rows, &|r| r[0] == "click"
            && r[6] == "#buy"
            && r[7] == "button"
            && r[8] == "Buy now"),
        1,
        "{rows:#?}"
    );
}

/// The answers `browser.mjs` logged so far to `log` (REQUEST_LOG), as
/// (path, status) pairs; a failed request has status 0.
fn logged(log: &Path) -> Vec<(String, u64)> {
    use sonic_rs::JsonValueTrait;
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| sonic_rs::from_str::<sonic_rs::Value>(l).ok())
        .map(|v| {
            (
                v["url"].as_str().unwrap_or_default().to_string(),
                v["status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Whether `path` is one of the event paths the browser libraries post to.
fn segment_event(path: &str) -> bool {
    ["/v1/p", "/v1/t", "/v1/i", "/v1/b"]
        .iter()
        .any(|p| path.split('?').next() == Some(p))
}
fn posthog_event(path: &str) -> bool {
    ["/e/", "/i/v0/e/", "/batch/"]
        .iter()
        .any(|p| path.split('?').next() == Some(p))
}

#[test]
fn the_browser_libraries_of_segment_and_posthog_land_once_with_no_console_error() {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let _ = libs();
    let broker = Broker::start();
    let ch = ClickHouse::start();
    let mut engine = Engine::start_on(&broker, &ch, "ingest,sink");
    engine.wait_ready();
    let run = format!("r{}", uuid::Uuid::new_v4().simple());
    let report = browser(engine.port, DEV_WRITE_KEY, &run, &[]);
    let pretty = report.to_string();
    assert!(report["error"].is_null(), "{pretty}");
    let console = report["console"].as_array().unwrap();
    assert!(
        console
            .iter()
            .all(|m| !matches!(m["type"].as_str(), Some("error" | "pageerror" | "warning"))),
        "console errors: {pretty}"
    );
    let requests = report["requests"].as_array().unwrap();
    let paths: Vec<&str> = requests.iter().filter_map(|r| r["url"].as_str()).collect();
    for wanted in [
        "/v1/projects/pk_development/settings",
        "/v1/p",
        "/v1/t",
        "/v1/i",
        "/flags/",
    ] {
        assert!(
            paths.iter().any(|p| p.starts_with(wanted)),
            "{wanted} in {pretty}"
        );
    }
    for r in requests {
        let status = r["status"].as_u64().unwrap_or(0);
        assert!(
            (200..300).contains(&status),
            "every engine answer is 2xx: {pretty}"
        );
    }
    check_browser(&browser_rows(&ch, &run), &run);

    // The shop allows only its own origin: from this page both libraries
    // are refused (403, readable) and nothing is stored for it.
    let report = browser(engine.port, SHOP_WRITE_KEY, &run, &[("REFUSED", "1")]);
    let pretty = report.to_string();
    let requests = report["requests"].as_array().unwrap();
    assert!(
        requests.iter().any(|r| r["status"].as_u64() == Some(403)),
        "a 403 for the foreign origin: {pretty}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let shop = ch.query(&format!(
        "SELECT count() FROM overwatch.events WHERE tenant_id = toUUID('{SHOP_TENANT}')"
    ));
    assert_eq!(shop.trim(), "0", "{pretty}");

    // The broker hangs (SIGSTOP) once the page is about to send: the edge
    // answers the libraries' event requests 503, each library retries them
    // on its own schedule (analytics.js per event within a second,
    // posthog-js its batch after 3-6 s with `retry_count`), and once the
    // broker is back every event is stored once. The page stays open until
    // the test has read ClickHouse (DONE_FILE), so no retry is cut short.
    let run = format!("r{}", uuid::Uuid::new_v4().simple());
    let dir = scratch_dir("compat-browser-outage");
    let (log, done) = (dir.join("requests.jsonl"), dir.join("done"));
    signal(broker.pid(), "-STOP");
    wait_for(
        "the edge to see the broker down",
        Duration::from_secs(20),
        || get(engine.port, "/health/ready").is_ok_and(|r| r.status == 503),
    );
    let page = {
        let (port, run) = (engine.port, run.clone());
        let (log, done) = (log.display().to_string(), done.display().to_string());
        std::thread::spawn(move || {
            browser(
                port,
                DEV_WRITE_KEY,
                &run,
                &[("REQUEST_LOG", &log), ("DONE_FILE", &done)],
            )
        })
    };
    let refused = |f: fn(&str) -> bool| {
        let log = log.clone();
        move || logged(&log).iter().any(|(p, s)| f(p) && *s == 503)
    };
    wait_for(
        "analytics.js to be answered 503",
        Duration::from_secs(60),
        refused(segment_event),
    );
    wait_for(
        "posthog-js to be answered 503",
        Duration::from_secs(60),
        refused(posthog_event),
    );
    signal(broker.pid(), "-CONT");
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(120), || {
        rows = browser_rows(&ch, &run);
        rows.len() >= 7 && rows.iter().any(|r| r[0] == "click")
    });
    // Time for a late copy of any retry to land too.
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(&done, b"").unwrap();
    let report = page.join().unwrap();
    let rows = browser_rows(&ch, &run);
    check_browser(&rows, &run);
    let answers = logged(&log);
    for (lib, f) in [
        ("analytics.js", segment_event as fn(&str) -> bool),
        ("posthog-js", posthog_event),
    ] {
        let first_ok = answers
            .iter()
            .position(|(p, s)| f(p) && (200..300).contains(s));
        let first_503 = answers.iter().position(|(p, s)| f(p) && *s == 503);
        assert!(
            matches!((first_503, first_ok), (Some(a), Some(b)) if a < b),
            "{lib}: refused 503, then retried and accepted: {answers:?}\n{report}"
        );
    }
    assert!(
        answers
            .iter()
            .any(|(p, _)| posthog_event(p) && p.contains("retry_count=")),
        "posthog-js marked its retry: {answers:?}"
    );
}
