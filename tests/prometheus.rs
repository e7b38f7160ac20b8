//! Prometheus done properly, checked with the real thing: Debian's
//! `prometheus` scrapes a test engine (its target is up, and a
//! `histogram_quantile` over the engine's buckets has a value), the shipped
//! rules load in it, `promtool` checks and unit-tests them, and every metric
//! the rules and the Grafana dashboard name is one the engine exposes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("dashboards/prometheus"))
        .output()
        .expect("promtool must be installed (scripts/test installs Debian's prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Metric names (without `_bucket`/`_sum`/`_count`) in PromQL expressions.
fn names_in(exprs: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in exprs {
        let mut word = String::new();
        for c in e.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
                continue;
            }
            let w = std::mem::take(&mut word);
            let known = ["ingest_", "sink_", "broker_"];
            // A name, not a label (`{instance=`) or a recording rule (`ingestion:`).
            if known.iter().any(|p| w.starts_with(p)) && c != '=' && !w.contains(':') {
                out.insert(w);
            }
        }
    }
    out
}

#[test]
fn prometheus_scrapes_the_engine_and_the_rules_and_dashboard_name_real_metrics() {
    promtool(&["check", "rules", "rules.yml"]);
    promtool(&["test", "rules", "rules.test.yml"]);

    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let dir = scratch_dir("prometheus");
    let rules = root().join("dashboards/prometheus/rules.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: ingestion-engine\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            rules.display(),
            engine.port
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (scripts/test installs Debian's prometheus)"),
    );
    let api = |path: &str| call("GET", port, path, &[], None);
    wait_for("prometheus answers", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && api("/-/ready").status == 200
    });
    wait_for("the engine's target is up", Duration::from_secs(30), || {
        let t = api("/api/v1/targets").json();
        t["data"]["activeTargets"][0]["health"].as_str() == Some("up")
    });

    // Traffic, so that the request-latency buckets move between scrapes.
    let session = uuid::Uuid::new_v4().to_string();
    let query = "histogram_quantile(0.99, sum by (le) (rate(ingest_request_latency_hist_seconds_bucket[10s])))";
    let mut value = None;
    for _ in 0..60 {
        let events: Vec<_> = (0..5).map(|i| event(i, DEV_TENANT, &session)).collect();
        assert_eq!(
            post(engine.port, Some(DEV_AUTH), &[], &batch(&events)).status,
            200
        );
        std::thread::sleep(Duration::from_millis(250));
        let r = api(&format!("/api/v1/query?query={}", encode(query))).json();
        let v = r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0);
        if v.is_some() {
            value = v;
            break;
        }
    }
    let p99 = value.expect("histogram_quantile over the engine's buckets never had a value");
    assert!(p99 < 5.0, "p99 of a few local requests: {p99} s");

    // The rules loaded and evaluate without errors.
    let r = api("/api/v1/rules").json();
    let groups = r["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{}", r);
    wait_for(
        "every rule evaluated once, healthy",
        Duration::from_secs(30),
        || {
            let r = api("/api/v1/rules").json();
            r["data"]["groups"].as_array().unwrap().iter().all(|g| {
                g["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|rule| rule["health"].as_str() == Some("ok"))
            })
        },
    );

    // Every metric the rules and the dashboard use is one the engine
    // exposes (a typo would make an alert that can never fire).
    let exposed = get(engine.port, "/metrics").unwrap().body;
    // And the exposition itself passes promtool's lint.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), exposed.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(
        exposed.contains("query_answers_total{status=\"200\"}"),
        "{exposed}"
    );
    let mut exprs = vec![std::fs::read_to_string(&rules).unwrap()];
    let grafana: sonic_rs::Value = sonic_rs::from_str(
        &std::fs::read_to_string(root().join("dashboards/grafana/ingestion-engine.json")).unwrap(),
    )
    .unwrap();
    for p in grafana["panels"].as_array().unwrap().iter() {
        if let Some(targets) = p.get("targets").and_then(|t| t.as_array()) {
            for t in targets.iter() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
    }
    let names = names_in(&exprs);
    assert!(names.len() >= 15, "{names:?}");
    for n in &names {
        assert!(
            exposed.lines().any(|l| l.starts_with(n.as_str())),
            "{n} is used by the rules or the dashboard but the engine does not expose it"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
