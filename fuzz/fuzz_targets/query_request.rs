//! The query API's request parser and SQL builder: a request is refused with
//! a message, or becomes SQL whose first condition is the tenant's, with
//! every value inside its literal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// 2026-11-28T12:00:00Z, in seconds: a fixed clock, so a finding reproduces.
const NOW: i64 = 1_795_867_200;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = query::parse(data, NOW) else {
        return;
    };
    let tenant = Uuid::from_u128(0x1234);
    let sql = query::sql::build(&q, "overwatch", tenant);
    let condition = format!("tenant_id = toUUID('{}')", tenant.hyphenated());
    let at = sql.find(" WHERE ").expect("every query has a WHERE");
    assert!(
        sql[at..].starts_with(&format!(" WHERE {condition}")),
        "the tenant is the first condition: {sql}"
    );
    assert!(sql.ends_with(" FORMAT JSONCompact"), "{sql}");
    assert_eq!(outside_literals(&sql).matches(';').count(), 0, "{sql}");
    assert!(!outside_literals(&sql).contains("--"), "{sql}");
});

/// `sql` with every single-quoted literal (backslash escapes) blanked.
fn outside_literals(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars();
    while let Some(c) = chars.next() {
        if c != '\'' {
            out.push(c);
            continue;
        }
        loop {
            match chars.next() {
                Some('\\') => {
                    chars.next();
                }
                Some('\'') | None => break,
                Some(_) => {}
            }
        }
        out.push_str("''");
    }
    out
}
