use super::*;

/// 2026-11-28T12:00:00Z.
const NOW: i64 = 1_795_867_200;

fn ok(json: &str) -> Query {
    parse(json.as_bytes(), NOW).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn err(json: &str) -> String {
    match parse(json.as_bytes(), NOW) {
        Err(QueryError::Invalid(m)) => m,
        Ok(q) => panic!("accepted {json}: {q:?}"),
    }
}

#[test]
fn the_plausible_shaped_example() {
    let q = ok(r#"{"metrics": ["visitors", "pageviews"],
        "date_range": ["2026-11-01T00:00:00Z", "2026-11-28T00:00:00Z"],
        "dimensions": ["event:page"],
        "filters": [["is", "event:type", ["pageview"]], ["contains", "event:page", ["/blog"]]],
        "order_by": [["pageviews", "desc"]],
        "limit": 10}"#);
    assert_eq!(q.metrics, [Metric::Visitors, Metric::Pageviews]);
    assert_eq!(q.dimensions, [Dimension::EventPage]);
    assert_eq!(q.filters.len(), 2);
    assert_eq!(q.filters[1].op, Op::Contains);
    assert_eq!(q.range.to - q.range.from, 27 * 86_400);
    assert_eq!(q.order_by, [(OrderKey::Metric(1), Direction::Desc)]);
    assert_eq!((q.limit, q.timezone.as_str()), (10, "UTC"));
    assert!(!q.per_session());
}

#[test]
fn named_ranges_and_timezones() {
    let q = ok(r#"{"metrics":["visitors"],"date_range":"realtime"}"#);
    assert_eq!((q.range.from, q.range.to), (NOW - 300, NOW + 1));
    let q = ok(r#"{"metrics":["visitors"],"date_range":"day"}"#);
    assert_eq!(q.range.from, NOW - 12 * 3600);
    // Midnight in Tokyo (UTC+9) was 03:00 UTC... of the next day there.
    let q = ok(r#"{"metrics":["visitors"],"date_range":"day","timezone":"Asia/Tokyo"}"#);
    assert_eq!(q.range.from, NOW - 21 * 3600);
    let q = ok(r#"{"metrics":["visitors"],"date_range":"7d"}"#);
    assert_eq!(q.range.from, NOW - 12 * 3600 - 6 * 86_400);
    let q = ok(r#"{"metrics":["visitors"],"date_range":["2026-11-01","2026-11-02"]}"#);
    assert_eq!(q.range.to - q.range.from, 86_400);
    assert!(
        err(r#"{"metrics":["visitors"],"date_range":"day","timezone":"Mars/Base"}"#)
            .contains("unknown timezone")
    );
    assert!(err(r#"{"metrics":["visitors"],"date_range":"1y"}"#).contains("date_range"));
    assert!(
        err(r#"{"metrics":["visitors"],"date_range":["2026-11-02","2026-11-01"]}"#)
            .contains("end after")
    );
    assert!(
        err(r#"{"metrics":["visitors"],"date_range":["2020-01-01","2026-11-01"]}"#)
            .contains("731 days")
    );
    assert!(err(r#"{"metrics":["visitors"],"date_range":["2026-11-01"]}"#).contains("[from, to]"));
}

#[test]
fn vocabulary_and_shapes() {
    let q = ok(
        r#"{"metrics":["bounce_rate","visit_duration","visitors"],"date_range":"30d",
        "dimensions":["visit:entry_page","time:day"],"filters":[["is","event:type",["pageview"]]]}"#,
    );
    assert!(q.per_session());
    assert_eq!(
        Metric::parse("ttfb_p99"),
        Some(Metric::Vital(Vital::Ttfb, 99))
    );
    for bad in ["lcp_p80", "lcp_", "foo", "", "visitors "] {
        assert!(Metric::parse(bad).is_none(), "{bad}");
    }
    assert!(err(r#"{"metrics":["bounce_rate","clicks"],"date_range":"day"}"#).contains("clicks"));
    assert!(err(
        r#"{"metrics":["visits"],"date_range":"day","dimensions":["visit:exit_page","event:page"]}"#
    )
    .contains("event:*"));
    assert!(
        err(r#"{"metrics":["visits"],"date_range":"day","dimensions":["visit:country"]}"#)
            .contains("unknown dimension")
    );
    assert!(err(r#"{"metrics":[],"date_range":"day"}"#).contains("1 to 20 metrics"));
    assert!(
        err(r#"{"metrics":["visits"],"date_range":"day","order_by":[["clicks","desc"]]}"#)
            .contains("order_by")
    );
    assert!(err(r#"{"metrics":["visits"],"date_range":"day","limit":10001}"#).contains("limit"));
    assert!(
        err(r#"{"metrics":["visits"],"date_range":"day","tenant_id":"x"}"#)
            .contains("not a valid query"),
        "unknown fields are refused, tenant_id above all"
    );
}

#[test]
fn hostile_values_are_bounded() {
    let filters: Vec<String> = (0..10_000)
        .map(|_| r#"["is","event:page",["/"]]"#.to_string())
        .collect();
    let many = format!(
        r#"{{"metrics":["visits"],"date_range":"day","filters":[{}]}}"#,
        filters.join(",")
    );
    assert!(err(&many).contains("at most 20 filters"));
    let long = format!(
        r#"{{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["{}"]]]}}"#,
        "x".repeat(1 << 20)
    );
    assert!(err(&long).contains("longer than 1024 bytes"));
    let nul =
        r#"{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["a\u0000b"]]]}"#;
    let m = err(nul);
    assert!(m.contains("NUL"), "{m}");
    let regex =
        r#"{"metrics":["visits"],"date_range":"day","filters":[["matches","event:page",["a(b"]]]}"#;
    assert!(err(regex).contains("regular expression"));
    // Quotes, backslashes and SQL comments are values like any other.
    let q = ok(
        r#"{"metrics":["visits"],"date_range":"day","filters":[["is","event:page",["' OR 1=1 --","\\'; DROP TABLE x; /*","ünï🙂"]]]}"#,
    );
    assert_eq!(q.filters[0].values[0], "' OR 1=1 --");
    assert!(err("[1,2]").contains("not a valid query"));
    assert!(err("{").contains("not a valid query"));
}

fn with_filters(filters: &[String]) -> String {
    format!(
        r#"{{"metrics":["visits"],"date_range":"day","filters":[{}]}}"#,
        filters.join(",")
    )
}

fn filter(op: &str, dimension: &str, values: &[String]) -> String {
    let values: Vec<String> = values
        .iter()
        .map(|v| sonic_rs::to_string(v).unwrap())
        .collect();
    format!(r#"["{op}","{dimension}",[{}]]"#, values.join(","))
}

#[test]
fn the_filters_together_are_bounded() {
    // 20 filters of 100 `matches` values: 2,000 scans per row, refused.
    let hundred: Vec<String> = (0..100).map(|i| format!("^/p{i}")).collect();
    let all: Vec<String> = (0..20)
        .map(|_| filter("matches", "event:page", &hundred))
        .collect();
    let m = err(&with_filters(&all));
    assert!(
        m.contains("more than 32 `contains`/`matches` values"),
        "{m}"
    );
    assert!(
        m.starts_with(r#"filter 1 ["matches", "event:page"]"#),
        "{m}"
    );
    // Spread over filters, the total is what counts, named where it crosses.
    let eight: Vec<String> = (0..8).map(|i| format!("/p{i}")).collect();
    let five: Vec<String> = (0..5)
        .map(|_| filter("contains", "event:page", &eight))
        .collect();
    let m = err(&with_filters(&five));
    assert!(
        m.starts_with(r#"filter 5 ["contains", "event:page"]"#),
        "{m}"
    );
    let four = &five[..4];
    assert_eq!(
        ok(&with_filters(four)).filters.len(),
        4,
        "32 scans are fine"
    );
    // `is` values are cheap per row, but bounded in all too.
    let all: Vec<String> = (0..3)
        .map(|_| filter("is", "event:page", &hundred))
        .collect();
    let m = err(&with_filters(&all));
    assert!(
        m.contains("filter 3") && m.contains("more than 200 values in all"),
        "{m}"
    );
    ok(&with_filters(&all[..2]));
    // Pattern bytes in all: 17 values of 250 bytes.
    let long: Vec<String> = (0..17)
        .map(|i| format!("/{i}{}", "x".repeat(246)))
        .collect();
    let m = err(&with_filters(&[filter("contains", "event:page", &long)]));
    assert!(m.contains("longer than 4096 bytes in all"), "{m}");
}

#[test]
fn patterns_that_compile_to_huge_programs_are_refused() {
    let one = |p: &str| with_filters(&[filter("matches", "visit:referrer", &[p.to_string()])]);
    // The issue's case: a large repetition, repeated.
    let m = err(&one(&".{1000}".repeat(30)));
    assert!(m.contains("repeats a part 1000 times (at most 100)"), "{m}");
    assert!(
        m.starts_with(r#"filter 1 ["matches", "visit:referrer"]"#),
        "{m}"
    );
    assert!(err(&one("a{5,1000}")).contains("1000 times"));
    assert!(err(&one("a{101,}")).contains("101 times"));
    // Under the count bound, but nested: 50 × 50 copies.
    let m = err(&one("((ab){50}){50}"));
    assert!(m.contains("2500 times (at most 1000)"), "{m}");
    // Under both, but many of them: the program estimate.
    let m = err(&one(&".{100}".repeat(30)));
    assert!(m.contains("too large for a filter"), "{m}");
    let m = err(&one(r"\pL{20}"));
    assert!(m.contains("too large for a filter"), "{m}");
    // Each fine alone, too large together.
    let big = ".{90}x".repeat(5);
    let m = err(&with_filters(&[filter(
        "matches",
        "event:page",
        &[big.clone(), big.clone(), big.clone(), big.clone(), big],
    )]));
    assert!(m.contains("too large together"), "{m}");
    // What dashboards and people write passes.
    for p in [
        r"^/blog/\w+$",
        r"^/(en|de|fr)/products/\d{1,6}(/reviews)?$",
        r"(?i)google|bing|duckduckgo",
        r"[a-z0-9._-]+@example\.com",
        r"^/p/.{0,100}$",
        r"\pL+",
        r"^/[^/]+/[^/]+$",
    ] {
        ok(&one(p));
    }
}

#[test]
fn the_program_estimate_follows_repetitions() {
    use super::filters::pattern_program;
    let cost = |p: &str| {
        let ast = regex_syntax::ast::parse::Parser::new().parse(p).unwrap();
        pattern_program(&ast)
    };
    assert_eq!(cost("abc"), Ok(3));
    assert_eq!(cost("a{10}"), Ok(10));
    assert_eq!(cost("(a{10}){10}"), Ok(120), "10 × (10 + a group's 2)");
    assert_eq!(cost("a{3,}"), Ok(4));
    assert_eq!(cost("a*b+c?"), Ok(3));
    assert_eq!(cost(".{10}"), Ok(80));
    assert!(cost("a{100}").is_ok() && cost("a{101}").is_err());
    assert!(cost("((a{10}){10}){10}").is_ok());
    assert!(cost("((a{10}){10}){11}").is_err());
}

#[test]
fn case_folding_a_huge_class_is_refused_before_it_costs() {
    // A review found `(?i)` over huge classes costing ~13 ms a class to
    // translate: 100 values of 15 stalled a shard for 6 s.
    let one = |p: &str| with_filters(&[filter("matches", "event:page", &[p.to_string()])]);
    for p in [
        format!("(?i){}", r"\p{Any}".repeat(15)),
        format!("(?i){}", r"[\x{0}-\x{10FFFF}]".repeat(12)),
        format!("(?i){}", r"[\w\W]".repeat(30)),
        format!("(?i:a{})", r"\pL".repeat(3)),
        format!("a(?i){}", r"\PL".repeat(3)),
        // A second review: each of these measured small (after negation,
        // set operations, or re-read without `x`) but folded all of Unicode.
        r"(?i)\P{Any}".to_string(),
        r"(?i)[^\s\S]".to_string(),
        r"(?i)[\s\S&&a]".to_string(),
        r"(?i)[a[^\s\S]]".to_string(),
        "(?ix)[\\x00-\\x{10FFFF}#]\n]".to_string(),
        r"(?ix)[\x00 - \x{10FFFF}]".to_string(),
        r"(?i)\W".to_string(),
        r"(?i)\p{Script!=Greek}".to_string(),
    ] {
        // Refused from the class sizes alone, measured without folding.
        let m = err(&one(&p));
        assert!(m.contains("case-insensitive pattern"), "{p}: {m}");
    }
    // Ordinary case-insensitive and Unicode patterns still pass.
    for p in [
        "(?i)chrome",
        "(?i)^/blog/[a-zé0-9-]+$",
        r"\pL+",
        r"(?i)\w+",
        "(?-i)x",
        "(?s-i:.)",
    ] {
        ok(&one(p));
    }
    // The counts are checked before any pattern is parsed: 40 costly
    // patterns are refused for their number, not after parsing 32 of them.
    let costly = format!("(?i){}", r"\p{Any}".repeat(15));
    let forty = vec![costly; 40];
    let m = err(&with_filters(&[filter("matches", "event:page", &forty)]));
    assert!(m.contains("values in all"), "{m}");
}
