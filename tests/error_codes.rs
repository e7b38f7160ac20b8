//! `docs/errors.md` against the code: its tables of error codes and of
//! per-event rejection reasons are generated from `ErrorCode::ALL`
//! (crates/http/src/codes.rs) and `Reason::ALL` (crates/core), so a code
//! the engine can answer and the list cannot drift apart.
//!
//! After adding or changing a code: `BLESS=1 cargo test --test error_codes`
//! rewrites the generated parts of the page (the prose around them is kept).

use std::path::Path;

use api::http::ErrorCode;
use engine_core::Reason;

const CODES: (&str, &str) = (
    "<!-- BEGIN error codes: generated from crates/http/src/codes.rs by `BLESS=1 cargo test --test error_codes` -->",
    "<!-- END error codes -->",
);
const REASONS: (&str, &str) = (
    "<!-- BEGIN rejection reasons: generated from engine_core::Reason by `BLESS=1 cargo test --test error_codes` -->",
    "<!-- END rejection reasons -->",
);

/// What a reason means and what the sender should change. A new reason
/// does not compile until it is described here.
fn reason_text(r: Reason) -> (&'static str, &'static str) {
    match r {
        Reason::MalformedEvent => (
            "The event is not a JSON object, or a field has the wrong JSON type.",
            "Send each event as an object with the documented field types.",
        ),
        Reason::MissingField => (
            "A required field is missing (`field` names it).",
            "Add the field.",
        ),
        Reason::InvalidUuid => (
            "An id field (`event_id`, `session_id`, `tenant_id`) is not a UUID.",
            "Send a UUID (the SDK makes v4 ids).",
        ),
        Reason::InvalidTimestamp => (
            "`timestamp` is not an RFC 3339 time.",
            "Send RFC 3339 (`2026-12-01T10:00:00.000Z`).",
        ),
        Reason::TenantMismatch => (
            "`tenant_id` names another tenant than the key's.",
            "Leave `tenant_id` out or send the key's own.",
        ),
        Reason::UnknownType => (
            "`event_type` is not one of the engine's types.",
            "Use a documented type, or `custom` with a `name`.",
        ),
        Reason::InvalidPath => ("`path` does not start with `/`.", "Send the URL's path."),
        Reason::OutOfRange => (
            "A number is outside its documented range, or not finite.",
            "Clamp it on the client, or leave it out.",
        ),
        Reason::StringTooLong => (
            "A string is longer than its limit (`limits.max_string_bytes`, `limits.max_url_bytes`).",
            "Shorten it.",
        ),
        Reason::EventTooLarge => (
            "The event is larger than `limits.max_event_bytes` (or `properties` than `limits.max_properties_bytes`).",
            "Send fewer or smaller properties.",
        ),
        Reason::TimestampInFuture => (
            "`timestamp` is further ahead of the server's clock than `limits.max_future_secs`, after the `sent_at` correction.",
            "Send `sent_at` with the client's clock so skew is corrected.",
        ),
        Reason::TimestampTooOld => (
            "The event is older than the tenant's retention.",
            "Nothing: it would be dropped at once.",
        ),
        Reason::MissingMetric => (
            "A `performance` event carries no web-vital metric.",
            "Send at least one of `lcp`, `fcp`, `inp`, `cls`, `ttfb`, `fid`.",
        ),
        Reason::InvalidProperties => (
            "`properties` is not a JSON object.",
            "Send an object (or leave it out).",
        ),
    }
}

/// A table cell: no raw `|` (Markdown would split the cell).
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn codes_table() -> String {
    let mut out = String::from(
        "| code | status | what it means | what the client should do |\n|---|---|---|---|\n",
    );
    for &c in ErrorCode::ALL {
        let statuses: Vec<String> = c.statuses().iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "| <a id=\"{name}\"></a>`{name}` | {} | {} | {} |\n",
            statuses.join(", "),
            cell(c.meaning()),
            cell(c.action()),
            name = c.as_str(),
        ));
    }
    out
}

fn reasons_table() -> String {
    let mut out =
        String::from("| reason | what it means | what the sender should do |\n|---|---|---|\n");
    for r in Reason::ALL {
        let (meaning, action) = reason_text(r);
        out.push_str(&format!(
            "| <a id=\"{name}\"></a>`{name}` | {} | {} |\n",
            cell(meaning),
            cell(action),
            name = r.as_str(),
        ));
    }
    out
}

/// `page` with the text between `markers` replaced by `table`; `None`
/// when the markers are missing.
fn with_block(page: &str, markers: (&str, &str), table: &str) -> Option<String> {
    let (begin, end) = markers;
    let (head, rest) = page.split_once(begin)?;
    let (_, tail) = rest.split_once(end)?;
    Some(format!("{head}{begin}\n{table}{end}{tail}"))
}

#[test]
fn docs_errors_md_lists_every_error_code_and_rejection_reason() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md");
    let page = std::fs::read_to_string(&path).expect("docs/errors.md");
    let expected = with_block(&page, CODES, &codes_table())
        .and_then(|p| with_block(&p, REASONS, &reasons_table()))
        .unwrap_or_else(|| {
            panic!(
                "docs/errors.md must hold the markers\n{}\n{}\nand\n{}\n{}",
                CODES.0, CODES.1, REASONS.0, REASONS.1
            )
        });
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/errors.md");
        return;
    }
    if expected != page {
        let diff: Vec<String> = expected
            .lines()
            .zip(page.lines().chain(std::iter::repeat("")))
            .filter(|(want, have)| want != have)
            .take(5)
            .map(|(want, have)| format!("  want: {want}\n  have: {have}"))
            .collect();
        panic!(
            "docs/errors.md is not what crates/http/src/codes.rs and engine_core::Reason say; \
             run `BLESS=1 cargo test --test error_codes` and commit the page:\n{}",
            diff.join("\n")
        );
    }
}

#[test]
fn every_code_and_reason_name_appears_once() {
    let mut seen = std::collections::HashSet::new();
    for name in ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(Reason::ALL.iter().map(|r| r.as_str()))
    {
        assert!(
            seen.insert(name),
            "{name} is both an error code and a reason (one anchor each)"
        );
    }
}
