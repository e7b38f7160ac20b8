//! The dashboards in a real headless Chromium. The analytics dashboard: a
//! tenant signs in at `/dashboard` with its secret key, and the panels show
//! the numbers of a known dataset (read from the DOM), with no console
//! errors; a click on a row filters every panel. The on-call page
//! (`/debug/dashboard`) under load: rates and latency percentiles move. The
//! browser is driven by `dashboard/e2e/drive.mjs` (playwright-core with
//! Debian's chromium; `scripts/test` installs both).

mod common;

use std::path::Path;
use std::time::Duration;

use common::page::{drive, out_dir};
use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Twelve sessions, one minute apart, within the last hour: every page
/// `/`, every second also `/pricing` (with a click on `button#buy`), every
/// third also `/docs` and from Google; browsers in turn Chrome, Firefox,
/// Safari; every fourth a `signup`; one scroll (50%) and one web-vitals
/// sample (LCP 1200 ms, INP 300 ms, CLS 0.3) each.
fn insert_dataset(ch: &ClickHouse, tenant: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut rows = Vec::new();
    for i in 0..12i64 {
        let session = format!("5e550000-0000-0000-0000-{i:012}");
        let t = now - 3000 + i * 60;
        let browser = ["Chrome", "Firefox", "Safari"][(i % 3) as usize];
        let referrer = if i % 3 == 0 {
            "https://www.google.com/"
        } else {
            ""
        };
        let mut ev = |offset: i64, ty: &str, path: &str, extra: &str| {
            rows.push(format!(
                "(toUUID('{tenant}'), toUUID('{}'), toUUID('{session}'), '{ty}', toDateTime({}), 90, '{path}', \
                 'https://shop.example{path}', '{referrer}', '{browser}', 'Linux', 'Desktop', {extra})",
                uuid::Uuid::new_v4(),
                t + offset
            ));
        };
        let none = "NULL, NULL, NULL, NULL, '', ''";
        ev(0, "pageview", "/", none);
        ev(1, "scroll", "/", "50, NULL, NULL, NULL, '', ''");
        ev(2, "performance", "/", "NULL, 1200, 300, 0.3, '', ''");
        if i % 4 == 0 {
            ev(3, "custom", "/", "NULL, NULL, NULL, NULL, 'signup', ''");
        }
        if i % 2 == 0 {
            ev(10, "pageview", "/pricing", none);
            ev(
                11,
                "click",
                "/pricing",
                "NULL, NULL, NULL, NULL, '', 'button#buy'",
            );
        }
        if i % 3 == 0 {
            ev(20, "pageview", "/docs", none);
        }
    }
    ch.client()
        .execute(&format!(
            "INSERT INTO overwatch.events (tenant_id, event_id, session_id, event_type, event_time, retention_days, path, url, \
             referrer, browser, os, device, depth_pct, lcp, inp, cls, name, selector) VALUES {}",
            rows.join(", ")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_tenant_signs_in_and_the_panels_show_its_numbers() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let (id, _, sk) = create_tenant(&engine, &broker, &ch, "dash");
    insert_dataset(&ch, &id);

    // The page and its files: embedded, revalidated, locked down.
    let page = call("GET", engine.port, "/dashboard", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/dashboard/app.js"), "{}", page.body);
    assert_eq!(page.header("Cache-Control"), Some("no-cache"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    for (path, ty) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = call("GET", engine.port, path, &[], None);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("Content-Type").unwrap().starts_with(ty), "{path}");
    }

    wait_for("the tenant at the edge", Duration::from_secs(30), || {
        let r = call(
            "POST",
            engine.port,
            "/api/v1/query",
            &[("Authorization", &format!("Bearer {id}:{sk}"))],
            Some(br#"{"metrics":["visits"],"date_range":"day"}"#),
        );
        r.status == 200
    });

    assert!(
        root()
            .join("dashboard/node_modules/playwright-core")
            .exists(),
        "dashboard/node_modules is missing: scripts/test installs it (npm ci in dashboard/)"
    );
    let (report, pretty) = drive(
        engine.port,
        &[
            ("TENANT", id.as_str()),
            ("SECRET_KEY", sk.as_str()),
            ("FILTER_PAGE", "/pricing"),
        ],
        None,
    );
    assert!(
        report["wrong_key_message"]
            .as_str()
            .unwrap()
            .contains("key"),
        "{pretty}"
    );
    // Kept for this tab only, never in the URL.
    assert_eq!(report["session_key_stored"].as_bool(), Some(true));
    assert_eq!(report["local_storage_items"].as_u64(), Some(0));
    assert!(!report["url"].as_str().unwrap().contains(&sk), "{pretty}");

    let b = &report["before"];
    let kpi = |k: &str| b["kpis"][k].as_str().unwrap().to_string();
    assert_eq!(
        (
            kpi("visitors"),
            kpi("visits"),
            kpi("pageviews"),
            kpi("bounce_rate")
        ),
        ("12".into(), "12".into(), "22".into(), "33.3%".into()),
        "{pretty}"
    );
    let panel = |name: &str, row: &str| strs(&b["panels"][name][row]);
    assert_eq!(panel("Top pages", "/"), ["12", "12"], "{pretty}");
    assert_eq!(panel("Top pages", "/pricing"), ["6", "6"]);
    assert_eq!(panel("Top pages", "/docs"), ["4", "4"]);
    assert_eq!(panel("Entry pages", "/"), ["12", "33.3%"]);
    assert_eq!(panel("Exit pages", "/pricing"), ["4"]);
    assert_eq!(panel("Sources", "google.com"), ["4", "4"]);
    assert_eq!(panel("Sources", "(none)"), ["8", "8"]);
    for browser in ["Chrome", "Firefox", "Safari"] {
        assert_eq!(panel("Browsers", browser), ["4"], "{pretty}");
    }
    assert_eq!(panel("Operating systems", "Linux"), ["12"]);
    assert_eq!(panel("Devices", "Desktop"), ["12"]);
    assert_eq!(panel("Custom events", "signup"), ["3", "3"]);
    assert_eq!(panel("Clicks by selector", "button#buy"), ["6"]);
    assert_eq!(panel("Scroll depth by page", "/"), ["50%"]);
    let vital = |m: &str| {
        (
            b["vitals"][m]["value"].as_str().unwrap().to_string(),
            b["vitals"][m]["rating"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        vital("lcp_p75"),
        ("1.20 s".into(), "good".into()),
        "{pretty}"
    );
    assert_eq!(
        vital("inp_p75"),
        ("300 ms".into(), "needs-improvement".into())
    );
    assert_eq!(vital("cls_p75"), ("0.300".into(), "poor".into()));
    assert_eq!(b["chart_visitors"].as_f64(), Some(12.0), "{pretty}");
    assert_eq!(b["chart_canvas"].as_bool(), Some(true));
    assert!(report["realtime"].as_str().is_some());

    // A click on /pricing filters every panel by it.
    let f = &report["filtered"];
    assert_eq!(
        strs(&f["filters"]),
        ["event:page is /pricing ×"],
        "{pretty}"
    );
    assert_eq!(f["kpis"]["visitors"].as_str(), Some("6"), "{pretty}");
    let top: Vec<&str> = f["panels"]["Top pages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(top, ["/pricing"], "{pretty}");
    for browser in ["Chrome", "Firefox", "Safari"] {
        assert_eq!(strs(&f["panels"]["Browsers"][browser]), ["2"], "{pretty}");
    }
    assert!(out_dir().join("dashboard.png").exists());
}

#[test]
fn the_oncall_page_shows_rates_and_latency_percentiles_under_load() {
    // On its own admin listener, behind the admin token.
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let admin = free_port();
    let admin_port = admin.to_string();
    let token_hash = engine_core::tenant::hash_key_hex("adm_oncall");
    let url = ch.url();
    let engine = Engine::start_with(
        &broker,
        TEST_CONFIG,
        &[
            ("INGESTION_ROLES", "ingest,sink"),
            ("INGESTION_CLICKHOUSE_URL", &url),
            ("INGESTION_SINK_BATCH_MAX_AGE_MS", "200"),
            ("INGESTION_ADMIN_PORT", &admin_port),
            ("INGESTION_ADMIN_TOKEN_SHA256", &token_hash),
        ],
    );
    wait_for("the admin listener", Duration::from_secs(10), || {
        get(admin, "/health/live").is_ok_and(|r| r.status == 200)
    });
    let bearer = [("Authorization", "Bearer adm_oncall")];
    let stats = call("GET", admin, "/debug/stats", &bearer, None);
    assert_eq!(stats.status, 200);
    assert!(
        stats.json()["latency"]["ingest_request_latency_seconds"]["count"]
            .as_u64()
            .is_some()
    );
    let page = call("GET", admin, "/debug/dashboard", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/debug/dashboard/oncall.js"));

    // Load beside the page: batches of 20 events, as fast as one client goes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let port = engine.port;
        std::thread::spawn(move || {
            let session = uuid::Uuid::new_v4().to_string();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let events: Vec<_> = (0..20).map(|i| event(i, DEV_TENANT, &session)).collect();
                let status = call(
                    "POST",
                    port,
                    "/ingest",
                    &[("Authorization", DEV_AUTH)],
                    Some(&batch(&events)),
                )
                .status;
                assert_eq!(status, 200);
                sent += 20;
            }
            sent
        })
    };
    let (report, pretty) = drive(
        admin,
        &[("POLLS", "8"), ("ADMIN_TOKEN", "adm_oncall")],
        Some("oncall"),
    );
    assert!(
        report["asked_for_token"]
            .as_str()
            .unwrap()
            .contains("admin token"),
        "{pretty}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().unwrap();
    assert!(sent > 0);
    assert_eq!(report["roles"].as_str(), Some("edge + sink"), "{pretty}");
    assert_eq!(
        strs(&report["pills"]),
        ["broker up", "ClickHouse up"],
        "{pretty}"
    );
    let rate: f64 = report["cards"]["accepted"]
        .as_str()
        .unwrap()
        .trim_end_matches('k')
        .parse()
        .unwrap();
    assert!(rate > 0.0, "events/s while the load runs: {pretty}");
    assert!(
        report["edge_latency_points"].as_u64().unwrap() >= 20,
        "{pretty}"
    );
    assert!(report["canvases"].as_u64().unwrap() >= 5, "{pretty}");
    let request = strs(&report["table"]["ingest_request"]);
    assert!(request[0].parse::<u64>().unwrap() > 0, "{pretty}");
    assert!(
        request[1].ends_with("ms") || request[1].ends_with("µs"),
        "{pretty}"
    );
    assert!(
        report["table"]["sink_event_lag"].as_array().is_some(),
        "{pretty}"
    );
    assert!(out_dir().join("oncall.png").exists());
}
