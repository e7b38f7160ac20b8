//! Every bound on a request, in one place (docs/query-api.md lists them).

/// Most metrics in one request.
pub const MAX_METRICS: usize = 20;
/// Most dimensions in one request.
pub const MAX_DIMENSIONS: usize = 4;
/// Most breakdowns in one request.
pub const MAX_BREAKDOWNS: usize = 12;
/// Most filters in one request.
pub const MAX_FILTERS: usize = 20;
/// Most values of one filter.
pub const MAX_FILTER_VALUES: usize = 100;
/// Longest filter value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest `matches` pattern, in bytes (RE2 runs in linear time in the text;
/// the program it runs is bounded by [`MAX_PATTERN_PROGRAM`]).
pub const MAX_PATTERN_BYTES: usize = 256;
/// Filter values in all filters together (`is` values too: each is one
/// entry of a set the query builds, and text in the SQL).
pub const MAX_TOTAL_FILTER_VALUES: usize = 200;
/// `contains` values and `matches` patterns in all filters together: each
/// one is a scan of a text column on every row read, so 20 filters of 100
/// patterns over two years would be 2,000 scans per row.
pub const MAX_SCAN_VALUES: usize = 32;
/// Bytes of all `contains` values and `matches` patterns together.
pub const MAX_TOTAL_PATTERN_BYTES: usize = 4096;
/// Largest count of a counted repetition (`x{n}`, `x{n,}`, `x{n,m}`) in a
/// pattern. RE2 allows 1,000 and compiles `x{n}` to `n` copies of `x`.
pub const MAX_REPEAT: u32 = 100;
/// Largest product of counted repetitions nested in one another
/// (`(x{10}){20}` copies `x` 200 times).
pub const MAX_NESTED_REPEAT: u64 = 1_000;
/// Largest estimated program of one pattern, in about RE2 instructions
/// (`request::filters::pattern_program`: a literal byte is one, `.` eight, a
/// Unicode class 256, a repetition multiplies what it repeats).
pub const MAX_PATTERN_PROGRAM: u64 = 4_000;
/// Largest estimated program of all patterns of a request together.
pub const MAX_TOTAL_PATTERN_PROGRAM: u64 = 16_000;
/// Deepest nesting of groups, classes and repetitions in a pattern.
pub const MAX_REGEX_NESTING: u32 = 16;
/// Largest `limit`.
pub const MAX_LIMIT: u64 = 10_000;
/// `limit` when the request gives none.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// Longest explicit date range, in days (two years: a year and its previous
/// period).
pub const MAX_RANGE_DAYS: i64 = 731;
/// The values of `event:type`.
pub const EVENT_TYPES: [&str; 5] = ["pageview", "click", "scroll", "performance", "custom"];
/// What `"realtime"` covers, in seconds.
pub const REALTIME_SECS: i64 = 300;
