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

/// PromQL words that are not metric names: operators and modifiers,
/// aggregations (`sum by (…) (…)` puts a word between the name and its
/// parenthesis) and number literals.
const PROMQL_KEYWORDS: [&str; 30] = [
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "atan2",
];

/// Words after which a parenthesised list holds label names, not series.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series names a PromQL expression reads: every word that is not a
/// function (a word before `(`), a keyword, a label (in `{…}` or in a
/// `by (…)` list), a string, a duration or a number, or a Grafana variable
/// (`$instance`). Names with `:` are recording rules.
fn names_in(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    // The index past the string starting (with its quote) at `i`.
    let skip_string = |mut i: usize| -> usize {
        let q = b[i];
        i += 1;
        while i < b.len() && b[i] != q {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    // The index past the group `open … close` starting at `i`.
    let skip_group = |mut i: usize, open: u8, close: u8| -> usize {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                b'"' | b'\'' | b'`' => {
                    i = skip_string(i);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(i),
            b'{' => i = skip_group(i, b'{', b'}'),
            b'[' => i = skip_group(i, b'[', b']'),
            b'$' => {
                i += 1;
                while i < b.len() && (word(b[i]) || b[i] == b'{' || b[i] == b'}') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (word(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                // ASCII word bytes: always a whole string.
                let w = expr.get(start..i).unwrap_or_default();
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                let called = b.get(next) == Some(&b'(');
                if LABEL_LISTS.contains(&w) && called {
                    i = skip_group(next, b'(', b')');
                } else if !called && !PROMQL_KEYWORDS.contains(&w) {
                    out.insert(w.to_string());
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Every series name a Prometheus text exposition offers: the name of each
/// sample line, and for each `# TYPE` the names of its type (a histogram's
/// `_bucket`, `_sum`, `_count`; a summary's own name, `_sum`, `_count`), so a
/// labelled metric with no sample yet is there too.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut parts = t.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                out.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            out.insert(name.to_string());
        }
    }
    out
}

/// The metric names of `docs/telemetry.md`'s "Metric reference" table:
/// each backticked name of a row's first cell, its label set (`{status}`)
/// dropped and one `{a,b}` alternation inside it expanded.
fn documented_metrics(page: &str) -> BTreeSet<String> {
    let section = page
        .split_once("\n## Metric reference")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("docs/telemetry.md has a `## Metric reference` section");
    let mut out = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            // A label set ends the name: `name{status}`, `name{api,kind}`;
            // an alternation follows a `_`: `sink_{a,b}_seconds`, `c_{x,y}`.
            let name = match name.rsplit_once('{') {
                Some((base, labels)) if labels.ends_with('}') && !base.ends_with('_') => base,
                _ => name,
            };
            match name.split_once('{').zip(name.split_once('}')) {
                Some(((head, _), (inner, tail))) => {
                    let inner = inner.split_once('{').map_or(inner, |(_, i)| i);
                    for alt in inner.split(',') {
                        out.insert(format!("{head}{alt}{tail}"));
                    }
                }
                None => {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

/// Every metric family of the exposition (`# TYPE` lines) is in the
/// metric reference (a latency's `_hist_seconds` twin by its `_seconds`
/// name, as the page says), and every metric there is exposed.
fn check_metric_reference(exposition: &str) {
    let page = std::fs::read_to_string(root().join("docs/telemetry.md")).unwrap();
    let documented = documented_metrics(&page);
    let families: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|t| t.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let twin = |f: &str| {
        f.strip_suffix("_hist_seconds")
            .map(|b| format!("{b}_seconds"))
    };
    let undocumented: Vec<&String> = families
        .iter()
        .filter(|f| !documented.contains(*f) && !twin(f).is_some_and(|t| documented.contains(&t)))
        .collect();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|d| !families.contains(*d))
        .collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/telemetry.md's metric reference and the exposition differ:\n\
         exposed, not documented: {undocumented:?}\ndocumented, not exposed: {stale:?}"
    );
}

#[test]
fn the_metric_reference_reads_label_sets_and_alternations() {
    let page = "# T\n\n## Metric reference\n\n| metric | what |\n|---|---|\n\
                | `a_total{status}`, `b_{x,y}_total`, `d_total{api,kind}`, `e_{f,g}` | z |\n| `c_seconds` | w |\n\n## Next\n| `d` | e |\n";
    let got: Vec<String> = documented_metrics(page).into_iter().collect();
    assert_eq!(
        got,
        [
            "a_total",
            "b_x_total",
            "b_y_total",
            "c_seconds",
            "d_total",
            "e_f",
            "e_g"
        ]
    );
}

#[test]
fn the_name_extraction_reads_names_not_functions_labels_or_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{instance=~"$instance",x="y{z}"}[$__rate_interval])))
        / on (instance) group_left clamp_min(sum without (reason) (increase(b_total[5m] offset 1h)), 1e-9)
        > bool 0.5 and rule:name:rate1m or max(c)"#;
    let got: Vec<String> = names_in(expr).into_iter().collect();
    assert_eq!(got, ["a_bucket", "b_total", "c", "rule:name:rate1m"]);
    let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE s summary\n# TYPE l counter\n\
                # TYPE g gauge\ng 1\nu{a=\"b\"} 2\n";
    let got: Vec<String> = exposed_names(text).into_iter().collect();
    assert_eq!(
        got,
        ["g", "h_bucket", "h_count", "h_sum", "l", "s", "s_count", "s_sum", "u"]
    );
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
    // The rules' expressions as Prometheus itself parsed and loaded them,
    // and the recording rules they define; then the dashboard's.
    let r = api("/api/v1/rules").json();
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for g in r["data"]["groups"].as_array().unwrap().iter() {
        for rule in g["rules"].as_array().unwrap().iter() {
            exprs.push(rule["query"].as_str().unwrap().to_string());
            if rule["type"].as_str() == Some("recording") {
                recorded.insert(rule["name"].as_str().unwrap().to_string());
            }
        }
    }
    let rule_exprs = exprs.len();
    assert!(rule_exprs >= 10, "{exprs:?}");
    let grafana: sonic_rs::Value = sonic_rs::from_str(
        &std::fs::read_to_string(root().join("dashboards/grafana/ingestion-engine.json")).unwrap(),
    )
    .unwrap();
    let mut panels: Vec<sonic_rs::Value> = grafana["panels"].as_array().unwrap().to_vec();
    while let Some(p) = panels.pop() {
        if let Some(targets) = p.get("targets").and_then(|t| t.as_array()) {
            for t in targets.iter() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
        // Rows hold panels of their own.
        if let Some(inner) = p.get("panels").and_then(|t| t.as_array()) {
            panels.extend(inner.iter().cloned());
        }
    }
    assert!(exprs.len() > rule_exprs, "no dashboard queries read");
    // Each name exactly: a name that is only a prefix of a real one
    // (`ingest_request_latency`), a typo under any prefix, or a recording
    // rule nobody defines is an alert that can never fire.
    check_metric_reference(&exposed);
    let exposed = exposed_names(&exposed);
    let mut used = BTreeSet::new();
    for e in &exprs {
        for n in names_in(e) {
            if n.contains(':') {
                assert!(
                    recorded.contains(&n),
                    "{n} is used in `{e}` but no rule records it"
                );
            } else {
                assert!(
                    exposed.contains(&n),
                    "{n} is used in `{e}` but the engine does not expose it"
                );
            }
            used.insert(n);
        }
    }
    assert!(used.len() >= 15, "{used:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
