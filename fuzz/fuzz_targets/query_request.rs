//! The query API's request parser and SQL builder: a request is refused with
//! a message, or becomes SQL in which every table is read under the tenant's
//! condition, ANDed with the rest, and nothing in the rest can widen it.
//!
//! The shape checked, on the SQL with every literal blanked:
//! - parentheses balance, and never close more than they opened;
//! - every `FROM db.table` is followed by `WHERE tenant_id = toUUID('…')`
//!   with the authenticated tenant, then `AND` or the clause's end;
//! - every `WHERE` clause (and `HAVING`) splits at its top level into terms
//!   joined by `AND` alone: an `OR` is only ever inside parentheses, so
//!   `tenant AND a OR b` (read `(tenant AND a) OR b`) is caught, and the
//!   terms after the tenant's are one group as if parenthesised;
//! - the one `WHERE` without the tenant first is the outer one of a query
//!   that reads a parenthesised subquery (which carries it);
//! - no `;` and no `--` outside a literal, and the answer format last.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// 2026-11-28T12:00:00Z, in seconds: a fixed clock, so a finding reproduces.
const NOW: i64 = 1_795_867_200;
const DB: &str = "overwatch";

fuzz_target!(|data: &[u8]| {
    let Ok(q) = query::parse(data, NOW) else {
        return;
    };
    let tenant = Uuid::from_u128(0x1234);
    let sql = query::sql::build(&q, DB, tenant);
    if let Err(e) = check_shape(&sql, tenant) {
        panic!("{e}: {sql}");
    }
});

/// Where a `WHERE` or `HAVING` clause ends at its own depth.
const CLAUSE_ENDS: [&str; 6] = [
    " GROUP BY ",
    " HAVING ",
    " ORDER BY ",
    " LIMIT ",
    " FORMAT ",
    " ARRAY JOIN ",
];

/// Checks the shape in the module docs; the first violation found.
fn check_shape(sql: &str, tenant: Uuid) -> Result<(), String> {
    let condition = format!("tenant_id = toUUID('{}')", tenant.hyphenated());
    if !sql.ends_with(" FORMAT JSONCompact") {
        return Err("the answer format is not last".into());
    }
    // Literals blanked but the tenant's: nothing a value holds can look like
    // structure, or like the tenant's condition.
    let blank = outside_literals(sql, &tenant.hyphenated().to_string());
    if blank.contains(';') {
        return Err("`;` outside a literal".into());
    }
    if blank.contains("--") {
        return Err("`--` outside a literal".into());
    }
    // Every table read is the tenant's, first.
    let from = format!("FROM {DB}.");
    let mut tables = 0;
    for (at, _) in blank.match_indices(&from) {
        tables += 1;
        let rest = &blank[at + from.len()..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let table = &rest[..name_end];
        let Some(cond) = rest[name_end..].strip_prefix(" WHERE ") else {
            return Err(format!("{DB}.{table} read without a WHERE"));
        };
        let Some(then) = cond.strip_prefix(condition.as_str()) else {
            return Err(format!("{DB}.{table} read without the tenant first"));
        };
        let goes_on = then.starts_with(" AND ");
        let ends = then.starts_with(')') || CLAUSE_ENDS.iter().any(|k| then.starts_with(k));
        if !goes_on && !ends {
            return Err(
                "the tenant's condition is followed by neither AND nor the clause's end".into(),
            );
        }
    }
    if tables == 0 {
        return Err("no table read".into());
    }
    // And nothing is read but those tables and subqueries of them.
    for (at, _) in blank.match_indices(" FROM ") {
        let rest = &blank[at + " FROM ".len()..];
        if !rest.starts_with('(') && !rest.starts_with(&format!("{DB}.")) {
            return Err(format!("a FROM that reads neither {DB} nor a subquery"));
        }
    }
    let depths = depths(&blank)?;
    let reads_subquery = top_level_from_reads_subquery(&blank, &depths);
    for keyword in [" WHERE ", " HAVING "] {
        for (at, _) in blank.match_indices(keyword) {
            let start = at + keyword.len();
            let clause = clause_at(&blank, &depths, start);
            let clause_depths = &depths[start..start + clause.len()];
            let terms = top_level_split(clause, clause_depths, " AND ");
            for &(from, to) in &terms {
                let ors = top_level_split(&clause[from..to], &clause_depths[from..to], " OR ");
                if ors.len() != 1 {
                    return Err(format!("an OR outside parentheses in `{clause}`"));
                }
            }
            if keyword == " HAVING " {
                continue;
            }
            let first = terms.first().map(|&(from, to)| &clause[from..to]);
            // Only the outer WHERE over a subquery may start otherwise.
            if first != Some(condition.as_str()) && !(reads_subquery && depths[at] == 0) {
                return Err(format!("a WHERE without the tenant first: `{clause}`"));
            }
        }
    }
    Ok(())
}

/// The parenthesis depth before each byte of `s`; an error when a `)` closes
/// nothing or a `(` is left open.
fn depths(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut depth: u32 = 0;
    for b in s.bytes() {
        out.push(depth);
        match b {
            b'(' => depth += 1,
            b')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "a `)` closes nothing".to_string())?;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} `(` left open"));
    }
    Ok(out)
}

/// The clause starting at byte `start`: up to the `)` that closes the
/// parentheses it is in, or a clause-ending keyword at its own depth.
fn clause_at<'s>(s: &'s str, depths: &[u32], start: usize) -> &'s str {
    let own = depths.get(start).copied().unwrap_or(0);
    let end = (start..s.len())
        .find(|&i| {
            depths[i] == own
                && s.is_char_boundary(i)
                && (s[i..].starts_with(')') || CLAUSE_ENDS.iter().any(|k| s[i..].starts_with(k)))
        })
        .unwrap_or(s.len());
    &s[start..end]
}

/// The byte ranges of `s` between the `sep`s found at its top level (the
/// depth of its first byte), `depths` being the depths of `s`'s bytes.
fn top_level_split(s: &str, depths: &[u32], sep: &str) -> Vec<(usize, usize)> {
    let own = depths.first().copied().unwrap_or(0);
    let mut parts = Vec::new();
    let (mut last, mut i) = (0, 0);
    while i < s.len() {
        if depths[i] == own && s.is_char_boundary(i) && s[i..].starts_with(sep) {
            parts.push((last, i));
            i += sep.len();
            last = i;
        } else {
            i += 1;
        }
    }
    parts.push((last, s.len()));
    parts
}

/// Whether the outermost query reads `FROM (` a subquery.
fn top_level_from_reads_subquery(s: &str, depths: &[u32]) -> bool {
    s.match_indices(" FROM ")
        .find(|(at, _)| depths[*at] == 0)
        .is_some_and(|(at, _)| s[at + " FROM ".len()..].starts_with('('))
}

/// `sql` with every single-quoted literal (backslash escapes) blanked to
/// `''`, but those that are exactly `keep`.
fn outside_literals(sql: &str, keep: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.char_indices();
    while let Some((start, c)) = chars.next() {
        if c != '\'' {
            out.push(c);
            continue;
        }
        let mut end = sql.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if end < sql.len() && sql.get(start + 1..end) == Some(keep) {
            out.push_str(&sql[start..=end]);
        } else {
            out.push_str("''");
        }
    }
    out
}
