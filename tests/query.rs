//! The query API's SQL on the real ClickHouse 18.16: results equal what the
//! generated dataset says, tenants never see each other's rows, and hostile
//! values are values.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::ClickHouse;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use uuid::Uuid;

/// 2026-11-28T12:00:00Z.
const NOW: i64 = 1_795_867_200;
const PATHS: [&str; 4] = ["/", "/blog/a", "/blog/b", "/pricing"];
const REFERRERS: [&str; 3] = [
    "",
    "https://www.google.com/search",
    "https://news.example/x",
];

/// One generated event.
#[derive(Clone)]
struct Ev {
    tenant: Uuid,
    session: Uuid,
    user: String,
    ty: &'static str,
    time: i64,
    path: &'static str,
    referrer: &'static str,
    url: String,
    lcp: Option<f64>,
    depth: Option<f64>,
    name: &'static str,
    selector: &'static str,
    agent: (&'static str, &'static str, &'static str),
}

const AGENTS: [(&str, &str, &str); 3] = [
    ("Chrome", "Windows", "Desktop"),
    ("Safari", "iOS", "Mobile"),
    ("Firefox", "Linux", "Desktop"),
];

/// A deterministic dataset: `sessions` sessions of 1–4 pageviews (and a click
/// after every second one) for `tenant`, within the last day.
fn dataset(tenant: Uuid, sessions: usize, seed: u64) -> Vec<Ev> {
    let mut x = seed;
    let mut next = move |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut out = Vec::new();
    for s in 0..sessions {
        let session = Uuid::from_u128(u128::from(seed) << 64 | s as u128);
        let user = if s % 3 == 0 {
            format!("user-{}", s / 6)
        } else {
            String::new()
        };
        let referrer = REFERRERS[next(3) as usize];
        let utm = if s % 4 == 0 { "?utm_source=mail" } else { "" };
        let agent = AGENTS[next(3) as usize];
        let start = NOW - 3600 - next(80_000) as i64;
        for p in 0..=next(4) {
            let path = PATHS[next(4) as usize];
            let base = Ev {
                tenant,
                session,
                user: user.clone(),
                ty: "pageview",
                time: start + p as i64 * 30,
                path,
                referrer,
                url: format!("https://shop.example{path}{utm}"),
                lcp: None,
                depth: None,
                name: "",
                selector: "",
                agent,
            };
            if p % 2 == 1 {
                out.push(Ev {
                    ty: "click",
                    time: base.time + 5,
                    selector: ["button#buy", "a.nav"][next(2) as usize],
                    ..base.clone()
                });
            }
            if next(3) > 0 {
                out.push(Ev {
                    ty: "scroll",
                    time: base.time + 7,
                    depth: Some(next(101) as f64),
                    ..base.clone()
                });
            }
            if p == 1 && s % 5 == 0 {
                out.push(Ev {
                    ty: "custom",
                    time: base.time + 9,
                    name: "signup",
                    ..base.clone()
                });
            }
            if p == 0 {
                out.push(Ev {
                    ty: "performance",
                    time: base.time + 1,
                    lcp: Some(100.0 + next(2000) as f64),
                    ..base.clone()
                });
            }
            out.push(base);
        }
    }
    out
}

fn insert(ch: &ClickHouse, events: &[Ev]) {
    let rows: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "(toUUID('{}'), toUUID('{}'), toUUID('{}'), '{}', toDateTime({}), '{}', '{}', '{}', '{}', {}, 90, {}, '{}', '{}', '{}', '{}', '{}')",
                e.tenant,
                Uuid::new_v4(),
                e.session,
                e.ty,
                e.time,
                e.path,
                e.user,
                e.referrer,
                e.url,
                e.lcp.map_or("NULL".to_string(), |v| v.to_string()),
                e.depth.map_or("NULL".to_string(), |v| v.to_string()),
                e.name,
                e.selector,
                e.agent.0,
                e.agent.1,
                e.agent.2,
            )
        })
        .collect();
    ch.client()
        .execute(&format!(
            "INSERT INTO overwatch.events (tenant_id, event_id, session_id, event_type, event_time, path, user_id, referrer, url, lcp, \
             retention_days, depth_pct, name, selector, browser, os, device) VALUES {}",
            rows.join(",")
        ))
        .unwrap();
}

/// Rows of an answer: (dimensions, metrics).
type Rows = Vec<(Vec<String>, Vec<f64>)>;

/// Runs a request for `tenant`.
fn run(ch: &ClickHouse, tenant: Uuid, body: &str) -> Rows {
    run_from(ch, tenant, body).1
}

/// Runs a request for `tenant`: the table that answered, and the rows.
fn run_from(ch: &ClickHouse, tenant: Uuid, body: &str) -> (query::sql::Source, Rows) {
    let q = query::parse(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body}: {e}"));
    let source = query::sql::source(&q);
    let sql = query::sql::build(&q, "overwatch", tenant);
    let out = ch
        .client()
        .query(&sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let v: Value = sonic_rs::from_str(&out).unwrap();
    let dims = q.answer_dimensions();
    let rows = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row = row.as_array().unwrap();
            // A breakdown comes as its index in the request (the service
            // names it).
            let d = row
                .iter()
                .take(dims)
                .map(|c| match c.as_u64() {
                    Some(i) => q.breakdowns[i as usize].name().to_string(),
                    None => c.as_str().unwrap().to_string(),
                })
                .collect();
            let m = row
                .iter()
                .skip(dims)
                .map(|c| {
                    c.as_f64()
                        .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
                        .unwrap_or(f64::NAN)
                })
                .collect();
            (d, m)
        })
        .collect();
    (source, rows)
}

fn by_first_dim(rows: &[(Vec<String>, Vec<f64>)]) -> BTreeMap<String, Vec<f64>> {
    rows.iter()
        .map(|(d, m)| (d[0].clone(), m.clone()))
        .collect()
}

#[test]
fn metrics_by_dimension_equal_the_dataset_and_tenants_stay_apart() {
    let ch = ClickHouse::start();
    clickhouse_client::schema::migrate(&ch.client(), "overwatch").unwrap();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let ev_a = dataset(a, 60, 1);
    let ev_b = dataset(b, 25, 2);
    insert(&ch, &ev_a);
    insert(&ch, &ev_b);
    let range = r#""date_range":["2026-11-27T00:00:00Z","2026-11-29T00:00:00Z"]"#;

    // Event shape: per page, visitors, visits, pageviews, events.
    let rows = run(
        &ch,
        a,
        &format!(
            r#"{{"metrics":["visitors","visits","pageviews","events"],{range},"dimensions":["event:page"]}}"#
        ),
    );
    let got = by_first_dim(&rows);
    for path in PATHS {
        let on: Vec<&Ev> = ev_a.iter().filter(|e| e.path == path).collect();
        if on.is_empty() {
            continue;
        }
        let visitors: HashSet<String> = on
            .iter()
            .map(|e| {
                if e.user.is_empty() {
                    e.session.to_string()
                } else {
                    e.user.clone()
                }
            })
            .collect();
        let visits: HashSet<Uuid> = on.iter().map(|e| e.session).collect();
        let pageviews = on.iter().filter(|e| e.ty == "pageview").count();
        let want = vec![
            visitors.len() as f64,
            visits.len() as f64,
            pageviews as f64,
            on.len() as f64,
        ];
        assert_eq!(got[path], want, "{path}");
    }
    assert_eq!(got.len(), PATHS.len());

    // Session shape: bounce rate and visits by entry page.
    let mut sessions: HashMap<Uuid, Vec<&Ev>> = HashMap::new();
    for e in &ev_a {
        sessions.entry(e.session).or_default().push(e);
    }
    let mut want: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for evs in sessions.values() {
        let pvs: Vec<&&Ev> = evs.iter().filter(|e| e.ty == "pageview").collect();
        let entry = pvs.iter().min_by_key(|e| e.time).unwrap().path.to_string();
        let w = want.entry(entry).or_default();
        w.0 += 1.0;
        w.1 += f64::from(u8::from(pvs.len() <= 1));
    }
    let rows = run(
        &ch,
        a,
        &format!(
            r#"{{"metrics":["visits","bounce_rate"],{range},"dimensions":["visit:entry_page"]}}"#
        ),
    );
    let got = by_first_dim(&rows);
    for (entry, (visits, bounced)) in &want {
        let bounce = (1000.0 * bounced / visits).round() / 10.0;
        assert_eq!(got[entry], vec![*visits, bounce], "{entry}");
    }

    // Sources (the referrer's host without www.) and a UTM parameter.
    let rows = run(
        &ch,
        a,
        &format!(r#"{{"metrics":["visits"],{range},"dimensions":["visit:source"]}}"#),
    );
    let got = by_first_dim(&rows);
    let google: HashSet<Uuid> = ev_a
        .iter()
        .filter(|e| e.referrer.contains("google"))
        .map(|e| e.session)
        .collect();
    assert_eq!(got["google.com"], vec![google.len() as f64]);
    let rows = run(
        &ch,
        a,
        &format!(
            r#"{{"metrics":["visits"],{range},"filters":[["is","visit:utm_source",["mail"]]]}}"#
        ),
    );
    let mail: HashSet<Uuid> = ev_a
        .iter()
        .filter(|e| e.url.contains("utm_source=mail"))
        .map(|e| e.session)
        .collect();
    assert_eq!(rows[0].1, vec![mail.len() as f64]);

    // A web vital percentile, as quantileExact defines it (the element at
    // floor(level × n) of the sorted values).
    let mut lcp: Vec<f64> = ev_a.iter().filter_map(|e| e.lcp).collect();
    lcp.sort_by(f64::total_cmp);
    let rows = run(&ch, a, &format!(r#"{{"metrics":["lcp_p75"],{range}}}"#));
    assert_eq!(rows[0].1, vec![lcp[(0.75 * lcp.len() as f64) as usize]]);

    // Tenant B sees only its own rows, whatever the filters say.
    let total_b = run(&ch, b, &format!(r#"{{"metrics":["events"],{range}}}"#));
    assert_eq!(total_b[0].1, vec![ev_b.len() as f64]);
    let hostile = [
        "' OR 1=1 --",
        "') OR tenant_id != toUUID('00000000-0000-0000-0000-000000000000') OR ('",
        "\\' OR 1=1 /*",
        "*/ OR 1=1 --",
        "ünï🙂\u{202e}",
    ];
    for h in hostile {
        let v = sonic_rs::to_string(&h).unwrap();
        for op in ["is", "is_not", "contains", "matches"] {
            let pattern = if op == "matches" {
                sonic_rs::to_string(&regex_escape(h)).unwrap()
            } else {
                v.clone()
            };
            let body = format!(
                r#"{{"metrics":["events"],{range},"filters":[["{op}","event:page",[{pattern}]]]}}"#
            );
            let rows = run(&ch, b, &body);
            let n = rows.first().map_or(0.0, |r| r.1[0]);
            let want = if op == "is_not" {
                ev_b.len() as f64
            } else {
                0.0
            };
            assert_eq!(n, want, "{op} {h:?}");
        }
    }

    // The literal round-trips through the real server.
    for h in hostile.iter().chain(["\\", "'", "a\tb\nc\u{1}"].iter()) {
        let out = ch
            .client()
            .query(&format!(
                "SELECT {} AS s FORMAT JSONCompact",
                query::sql::literal(h)
            ))
            .unwrap();
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["data"][0][0].as_str(), Some(*h));
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || !c.is_ascii() || c == ' ' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn filters_with_several_values_match_any_of_them_exactly() {
    let ch = ClickHouse::start();
    clickhouse_client::schema::migrate(&ch.client(), "overwatch").unwrap();
    let (a, b) = (Uuid::from_u128(0xa2), Uuid::from_u128(0xb2));
    let ev_a = dataset(a, 70, 5);
    let ev_b = dataset(b, 30, 6);
    insert(&ch, &ev_a);
    insert(&ch, &ev_b);
    let range = r#""date_range":["2026-11-27T00:00:00Z","2026-11-29T00:00:00Z"]"#;
    let on_page = |keep: &dyn Fn(&str) -> bool| ev_a.iter().filter(|e| keep(e.path)).count();

    // (filters, the number of tenant A's events they keep), each computed
    // here from the dataset. Every value of a filter counts (any of them),
    // a row that matches two values counts once, filters AND together, and
    // nothing of tenant B's is ever counted.
    let cases: Vec<(&str, usize)> = vec![
        (
            r#"[["is","event:page",["/blog/a","/pricing"]]]"#,
            on_page(&|p| p == "/blog/a" || p == "/pricing"),
        ),
        (
            r#"[["is","event:page",["/blog/a","/blog/b","/pricing","/"]]]"#,
            ev_a.len(),
        ),
        (
            r#"[["is_not","event:page",["/","/blog/b"]]]"#,
            on_page(&|p| p != "/" && p != "/blog/b"),
        ),
        (
            r#"[["contains","event:page",["blog/a","pric"]]]"#,
            on_page(&|p| p.contains("blog/a") || p.contains("pric")),
        ),
        // Overlapping values: a row matching both counts once.
        (
            r#"[["contains","event:page",["blog","blog/a"]]]"#,
            on_page(&|p| p.contains("blog")),
        ),
        (
            r#"[["matches","event:page",["^/blog/b$","^/$","ing$"]]]"#,
            on_page(&|p| p == "/blog/b" || p == "/" || p.ends_with("ing")),
        ),
        (
            r#"[["is","event:type",["click","scroll"]]]"#,
            ev_a.iter()
                .filter(|e| e.ty == "click" || e.ty == "scroll")
                .count(),
        ),
        // Two filters of several values each: both hold.
        (
            r#"[["contains","event:page",["blog","pricing"]],["is","event:type",["pageview","click"]]]"#,
            ev_a.iter()
                .filter(|e| e.path.contains("blog") || e.path.contains("pricing"))
                .filter(|e| e.ty == "pageview" || e.ty == "click")
                .count(),
        ),
        (
            r#"[["matches","event:page",["^/blog"]],["contains","event:selector",["buy","nav"]]]"#,
            ev_a.iter()
                .filter(|e| e.path.starts_with("/blog"))
                .filter(|e| e.selector.contains("buy") || e.selector.contains("nav"))
                .count(),
        ),
        // A hostile value beside a real one is one more value, no more.
        (
            r#"[["is","event:page",["/pricing","') OR 1=1 OR ('"]]]"#,
            on_page(&|p| p == "/pricing"),
        ),
        (
            r#"[["contains","event:page",["pricing","') OR 1=1 OR position(path, '"]]]"#,
            on_page(&|p| p.contains("pricing")),
        ),
    ];
    for (filters, want) in &cases {
        let body = format!(r#"{{"metrics":["events"],{range},"filters":{filters}}}"#);
        let rows = run(&ch, a, &body);
        let got = rows.first().map_or(0.0, |r| r.1[0]);
        assert!(
            *want > 0,
            "a case that keeps nothing proves little: {filters}"
        );
        assert_eq!(got, *want as f64, "{body}");
    }

    // Per visit: visits whose landing referrer matches any of two patterns,
    // and visits with a click on either of two selectors (an event filter
    // that keeps the visits it matches once each).
    let sessions = |keep: &dyn Fn(&Ev) -> bool| -> usize {
        let mut first: HashMap<Uuid, &Ev> = HashMap::new();
        for e in ev_a.iter().filter(|e| e.ty == "pageview") {
            let f = first.entry(e.session).or_insert(e);
            if e.time < f.time {
                *f = e;
            }
        }
        first.values().filter(|e| keep(e)).count()
    };
    let body = format!(
        r#"{{"metrics":["visits"],{range},"filters":[["matches","visit:referrer",["google\\.","^https://news"]]]}}"#
    );
    let want =
        sessions(&|e| e.referrer.contains("google.") || e.referrer.starts_with("https://news"));
    assert!(want > 0);
    assert_eq!(run(&ch, a, &body)[0].1, vec![want as f64], "{body}");
    let body = format!(
        r#"{{"metrics":["visits"],{range},"filters":[["is","event:selector",["button#buy","a.nav"]]]}}"#
    );
    let clicked: HashSet<Uuid> = ev_a
        .iter()
        .filter(|e| e.selector == "button#buy" || e.selector == "a.nav")
        .map(|e| e.session)
        .collect();
    assert!(!clicked.is_empty());
    assert_eq!(
        run(&ch, a, &body)[0].1,
        vec![clicked.len() as f64],
        "{body}"
    );
}

#[test]
fn the_query_api_over_http_takes_secret_keys_only_and_answers_in_the_order_asked() {
    use common::*;
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let (id, pk, sk) = create_tenant(&engine, &broker, &ch, "q");
    let secret = format!("Bearer {id}:{sk}");
    let session = Uuid::new_v4().to_string();
    // Five events of each type by `event(i % 5)`: 2 pageviews of /products/42.
    let events: Vec<Value> = (0..10).map(|i| event(i, &id, &session)).collect();
    common::wait_for(
        "the tenant at the edge",
        std::time::Duration::from_secs(30),
        || post(engine.port, Some(&secret), &[], &batch(&events)).status == 200,
    );
    common::wait_for(
        "rows in ClickHouse",
        std::time::Duration::from_secs(60),
        || {
            ch.query(&format!(
                "SELECT count() FROM overwatch.events WHERE tenant_id = toUUID('{id}')"
            )) == "10"
        },
    );
    let ask = |auth: &str, body: &str| {
        call(
            "POST",
            engine.port,
            "/api/v1/query",
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    };
    let body = r#"{"metrics":["pageviews","events","visits"],"date_range":"day","dimensions":["event:type"],"order_by":[["events","desc"]]}"#;
    let r = ask(&secret, body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["meta"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["pageviews", "events", "visits"]
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{}", r.body);
    let pv = results
        .iter()
        .find(|r| r["dimensions"][0].as_str() == Some("pageview"))
        .unwrap();
    assert_eq!(
        pv["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect::<Vec<_>>(),
        [2.0, 2.0, 1.0]
    );

    let r = ask(&format!("Bearer {id}:{pk}"), body);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("secret_key_required"))
    );
    let r = ask(DEV_AUTH, r#"{"metrics":["nope"],"date_range":"day"}"#);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown metric"),
        "{}",
        r.body
    );
    let r = ask(
        &secret,
        &format!(r#"{{"metrics":["events"],"date_range":"day","tenant_id":"{DEV_TENANT}"}}"#),
    );
    assert_eq!(
        r.status, 400,
        "the tenant comes from the key, never the body"
    );
    // The dev tenant (another tenant) sees none of these rows.
    let r = ask(DEV_AUTH, r#"{"metrics":["events"],"date_range":"day"}"#);
    assert_eq!(
        r.json()["results"][0]["metrics"][0].as_f64(),
        Some(0.0),
        "{}",
        r.body
    );
    let r = ask(&secret, &"x".repeat(70_000));
    assert_eq!(r.status, 413);

    // The per-tenant rate: distinct queries (identical ones come from the cache).
    let statuses: Vec<u16> = (1..=150)
        .map(|n| {
            ask(
                &secret,
                &format!(r#"{{"metrics":["events"],"date_range":"day","limit":{n}}}"#),
            )
            .status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 429, 503].contains(s)),
        "{statuses:?}"
    );

    // The service's own metrics, in /metrics: answers by status (the 429s
    // and the 400 above among them), cache hits, ClickHouse time per query.
    let m = |name: &str| metric(engine.port, name).unwrap_or_else(|| panic!("no {name}"));
    let limited = statuses.iter().filter(|s| **s == 429).count() as f64;
    assert!(m("query_answers_total{status=\"429\"}") >= limited);
    assert!(m("query_answers_total{status=\"400\"}") >= 2.0);
    assert!(m("query_answers_total{status=\"200\"}") >= 2.0);
    assert!(m("query_clickhouse_hist_seconds_count") >= 2.0);
    // Statuses outside the usual ones show up under their own code once
    // answered; none outside HTTP's range was.
    assert!(metric(engine.port, "query_answers_total{status=\"other\"}").is_none());
    // A fresh second for the rate; the same new query twice: run, then cached.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = m("query_cache_hits_total");
    let again = r#"{"metrics":["events"],"date_range":"day","limit":777}"#;
    assert_eq!(ask(&secret, again).status, 200);
    assert_eq!(ask(&secret, again).status, 200);
    assert_eq!(
        m("query_cache_hits_total"),
        before + 1.0,
        "an identical query within 5 s"
    );
}

/// `round(x, places)` as the API rounds.
fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn visitor(e: &Ev) -> String {
    if e.user.is_empty() {
        e.session.to_string()
    } else {
        e.user.clone()
    }
}

fn day(t: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap().date();
    format!("{d}")
}

fn host(referrer: &str) -> String {
    let rest = referrer.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    host.strip_prefix("www.").unwrap_or(host).to_string()
}

/// An event metric by an event dimension, computed here from the dataset.
fn event_reference(evs: &[Ev], metric: &str, dim: Option<&str>) -> BTreeMap<String, f64> {
    let mut groups: BTreeMap<String, Vec<&Ev>> = BTreeMap::new();
    for e in evs {
        let key = match dim {
            None => String::new(),
            Some("time:day") => day(e.time),
            Some("event:page") => e.path.to_string(),
            Some("event:type") => e.ty.to_string(),
            Some("event:name") => e.name.to_string(),
            Some("event:selector") => e.selector.to_string(),
            Some(other) => panic!("{other}"),
        };
        groups.entry(key).or_default().push(e);
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let count = |ty: &str| g.iter().filter(|e| e.ty == ty).count() as f64;
            let v = match metric {
                "visitors" => g.iter().map(|e| visitor(e)).collect::<HashSet<_>>().len() as f64,
                "visits" => g.iter().map(|e| e.session).collect::<HashSet<_>>().len() as f64,
                "pageviews" => count("pageview"),
                "events" => g.len() as f64,
                "clicks" => count("click"),
                "scroll_depth" => {
                    let d: Vec<f64> = g.iter().filter_map(|e| e.depth).collect();
                    round(d.iter().sum::<f64>() / d.len() as f64, 1)
                }
                other => panic!("{other}"),
            };
            (k, v)
        })
        .collect()
}

/// A visit metric by a visit dimension: visits folded here from the
/// dataset's pageviews (a visit starts at its first pageview and lasts until
/// its last; its referrer, URL and user agent are its first pageview's).
fn session_reference(evs: &[Ev], metric: &str, dim: Option<&str>) -> BTreeMap<String, f64> {
    let mut sessions: BTreeMap<Uuid, Vec<&Ev>> = BTreeMap::new();
    for e in evs {
        sessions.entry(e.session).or_default().push(e);
    }
    let mut groups: BTreeMap<String, Vec<Vec<&Ev>>> = BTreeMap::new();
    for (_, mut s) in sessions {
        s.retain(|e| e.ty == "pageview");
        if s.is_empty() {
            continue;
        }
        s.sort_by_key(|e| e.time);
        let first = s[0];
        let pvs: Vec<&&Ev> = s.iter().collect();
        let key = match dim {
            None => String::new(),
            Some("time:day") => day(first.time),
            Some("visit:entry_page") => pvs.first().map_or("", |e| e.path).to_string(),
            Some("visit:exit_page") => pvs.last().map_or("", |e| e.path).to_string(),
            Some("visit:referrer") => first.referrer.to_string(),
            Some("visit:source") => host(first.referrer),
            Some("visit:utm_source") => {
                let q = first.url.split_once("utm_source=").map_or("", |(_, v)| v);
                q.split('&').next().unwrap_or("").to_string()
            }
            Some("visit:browser") => first.agent.0.to_string(),
            Some("visit:os") => first.agent.1.to_string(),
            Some("visit:device") => first.agent.2.to_string(),
            Some(other) => panic!("{other}"),
        };
        groups.entry(key).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let n = g.len() as f64;
            let pv = |s: &Vec<&Ev>| s.iter().filter(|e| e.ty == "pageview").count() as f64;
            let v = match metric {
                "visitors" => g
                    .iter()
                    .map(|s| visitor(s[0]))
                    .collect::<HashSet<_>>()
                    .len() as f64,
                "visits" => n,
                "pageviews" => g.iter().map(pv).sum(),
                "bounce_rate" => round(
                    100.0 * g.iter().filter(|s| pv(s) <= 1.0).count() as f64 / n,
                    1,
                ),
                "visit_duration" => round(
                    g.iter()
                        .map(|s| (s[s.len() - 1].time - s[0].time) as f64)
                        .sum::<f64>()
                        / n,
                    1,
                ),
                "views_per_visit" => round(g.iter().map(pv).sum::<f64>() / n, 2),
                other => panic!("{other}"),
            };
            (k, v)
        })
        .collect()
}

/// The step of a rounded metric's last digit (`round(x, 1)` or `round(x, 2)`
/// in the SQL); `None` for a count, which is an integer and exact.
fn rounding_step(metric: &str) -> Option<f64> {
    match metric {
        "visitors" | "visits" | "pageviews" | "events" | "clicks" => None,
        "bounce_rate" | "visit_duration" | "scroll_depth" => Some(0.1),
        "views_per_visit" => Some(0.01),
        other => panic!("no rounding known for {other}"),
    }
}

/// Compares an answer's metric `i` (named `metric`) by first dimension with
/// a reference: counts exactly; a rounded ratio within one step of its last
/// digit (ClickHouse rounds halves to even, and its average of the same
/// values may land on the other side of a tie).
fn assert_same(
    body: &str,
    rows: &[(Vec<String>, Vec<f64>)],
    i: usize,
    metric: &str,
    want: &BTreeMap<String, f64>,
) {
    let got: BTreeMap<String, f64> = rows
        .iter()
        .map(|(d, m)| (d.first().cloned().unwrap_or_default(), m[i]))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{body}"
    );
    for (k, w) in want {
        let g = got[k];
        let same = match rounding_step(metric) {
            None => g == *w,
            Some(_) if g.is_nan() || w.is_nan() => g.is_nan() && w.is_nan(),
            Some(step) => (g - w).abs() <= step * 1.000_001,
        };
        assert!(same, "{body}: {metric} of {k:?}: got {g}, want {w}");
    }
}

#[test]
fn every_metric_by_every_main_dimension_equals_the_dataset_from_roll_ups_and_from_events() {
    use query::sql::Source;
    let ch = ClickHouse::start();
    clickhouse_client::schema::migrate(&ch.client(), "overwatch").unwrap();
    let (a, b) = (Uuid::from_u128(0xa1), Uuid::from_u128(0xb1));
    let ev_a = dataset(a, 80, 3);
    insert(&ch, &ev_a);
    insert(&ch, &dataset(b, 30, 4));
    // Whole hours: roll-ups answer. One second off: `events` answers.
    let whole = r#""date_range":["2026-11-26T00:00:00Z","2026-11-29T00:00:00Z"]"#;
    let ragged = r#""date_range":["2026-11-26T00:00:01Z","2026-11-29T00:00:00Z"]"#;
    let mut checked = 0;

    let dims_of =
        |dim: Option<&str>| dim.map_or(String::new(), |d| format!(r#","dimensions":["{d}"]"#));
    for metric in [
        "visitors",
        "visits",
        "pageviews",
        "events",
        "clicks",
        "scroll_depth",
    ] {
        for dim in [
            None,
            Some("time:day"),
            Some("event:page"),
            Some("event:type"),
            Some("event:name"),
            Some("event:selector"),
        ] {
            let want = event_reference(&ev_a, metric, dim);
            let body = format!(r#"{{"metrics":["{metric}"],{ragged}{}}}"#, dims_of(dim));
            let (from, rows) = run_from(&ch, a, &body);
            assert_eq!(from, Source::Events, "{body}");
            assert_same(&body, &rows, 0, metric, &want);
            checked += 1;
        }
    }
    // Pageviews, and visitors of pageviews, by hour and page: the roll-up
    // over whole hours, `events` otherwise, the same numbers.
    let pageviews: Vec<Ev> = ev_a
        .iter()
        .filter(|e| e.ty == "pageview")
        .cloned()
        .collect();
    for metric in ["pageviews", "visitors"] {
        for dim in [None, Some("time:day"), Some("event:page")] {
            let want = event_reference(&pageviews, metric, dim);
            let typed = r#","filters":[["is","event:type",["pageview"]]]"#;
            for (range, source) in [(whole, Source::PageviewsHourly), (ragged, Source::Events)] {
                let body = format!(
                    r#"{{"metrics":["{metric}"],{range}{}{typed}}}"#,
                    dims_of(dim)
                );
                let (from, rows) = run_from(&ch, a, &body);
                assert_eq!(from, source, "{body}");
                assert_same(&body, &rows, 0, metric, &want);
                checked += 1;
            }
        }
    }
    let body = format!(r#"{{"metrics":["visitors"],{whole},"dimensions":["event:page"]}}"#);
    assert_eq!(
        run_from(&ch, a, &body).0,
        Source::Events,
        "visitors of any event: {body}"
    );
    for metric in [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
    ] {
        for dim in [
            None,
            Some("time:day"),
            Some("visit:entry_page"),
            Some("visit:exit_page"),
            Some("visit:referrer"),
            Some("visit:source"),
            Some("visit:utm_source"),
            Some("visit:browser"),
            Some("visit:os"),
            Some("visit:device"),
        ] {
            let want = session_reference(&ev_a, metric, dim);
            let bounce = session_reference(&ev_a, "bounce_rate", dim);
            // Every event is on a page containing "/": a filter on single
            // events that keeps them all keeps every visit.
            for filters in ["", r#","filters":[["contains","event:page",["/"]]]"#] {
                let body = format!(
                    r#"{{"metrics":["{metric}","bounce_rate"],{whole}{}{filters}}}"#,
                    dims_of(dim)
                );
                let (from, rows) = run_from(&ch, a, &body);
                assert_eq!(from, Source::Sessions, "{body}");
                assert_same(&body, &rows, 0, metric, &want);
                assert_same(&body, &rows, 1, "bounce_rate", &bounce);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 6 + 2 * 3 * 2 + 6 * 10 * 2);

    // Every visit dimension at once (`breakdowns`, one fold of the
    // sessions): each breakdown equals its own query.
    let visit_dims = [
        "visit:entry_page",
        "visit:exit_page",
        "visit:referrer",
        "visit:source",
        "visit:utm_source",
        "visit:browser",
        "visit:os",
        "visit:device",
    ];
    let body = format!(
        r#"{{"metrics":["visits","visitors","bounce_rate"],{whole},"breakdowns":{}}}"#,
        sonic_rs::to_string(&visit_dims).unwrap()
    );
    let (from, rows) = run_from(&ch, a, &body);
    assert_eq!(from, Source::Sessions);
    for dim in visit_dims {
        let of_dim: Rows = rows
            .iter()
            .filter(|(d, _)| d[0] == dim)
            .map(|(d, m)| (vec![d[1].clone()], m.clone()))
            .collect();
        for (i, metric) in ["visits", "visitors", "bounce_rate"].iter().enumerate() {
            assert_same(
                &body,
                &of_dim,
                i,
                metric,
                &session_reference(&ev_a, metric, Some(dim)),
            );
        }
    }

    // An event filter keeps the visits with a matching event: visits that
    // clicked `button#buy`, by entry page, from their whole visit.
    let body = format!(
        r#"{{"metrics":["visits","bounce_rate"],{whole},"dimensions":["visit:entry_page"],"filters":[["is","event:selector",["button#buy"]]]}}"#
    );
    let (from, rows) = run_from(&ch, a, &body);
    assert_eq!(from, Source::Sessions);
    let buyers: HashSet<Uuid> = ev_a
        .iter()
        .filter(|e| e.selector == "button#buy")
        .map(|e| e.session)
        .collect();
    let theirs: Vec<Ev> = ev_a
        .iter()
        .filter(|e| buyers.contains(&e.session))
        .cloned()
        .collect();
    assert!(!theirs.is_empty());
    assert_same(
        &body,
        &rows,
        0,
        "visits",
        &session_reference(&theirs, "visits", Some("visit:entry_page")),
    );
    assert_same(
        &body,
        &rows,
        1,
        "bounce_rate",
        &session_reference(&theirs, "bounce_rate", Some("visit:entry_page")),
    );

    // Filters on roll-up columns narrow like the same filter on events.
    let body = format!(
        r#"{{"metrics":["visits","bounce_rate"],{whole},"filters":[["is","visit:browser",["Safari"]],["matches","visit:entry_page",["^/blog"]]]}}"#
    );
    let (from, rows) = run_from(&ch, a, &body);
    assert_eq!(from, Source::Sessions);
    let safari: Vec<Ev> = ev_a
        .iter()
        .filter(|e| e.agent.0 == "Safari")
        .cloned()
        .collect();
    let by_entry = session_reference(&safari, "visits", Some("visit:entry_page"));
    let blog: f64 = by_entry
        .iter()
        .filter(|(k, _)| k.starts_with("/blog"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rows[0].1[0], blog, "{body}");
    let body = format!(
        r#"{{"metrics":["pageviews"],{whole},"dimensions":["event:page"],"filters":[["is_not","event:page",["/pricing"]]]}}"#
    );
    let (from, rows) = run_from(&ch, a, &body);
    assert_eq!(from, Source::PageviewsHourly);
    let mut want = event_reference(&ev_a, "pageviews", Some("event:page"));
    want.remove("/pricing");
    assert_same(&body, &rows, 0, "pageviews", &want);

    // A timezone whose offset is not whole hours cannot use hourly buckets.
    let body = format!(
        r#"{{"metrics":["pageviews"],{whole},"dimensions":["time:day"],"timezone":"Asia/Kolkata"}}"#
    );
    assert_eq!(run_from(&ch, a, &body).0, Source::Events);
}
