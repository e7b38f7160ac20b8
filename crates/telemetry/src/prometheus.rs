//! Prometheus text exposition (format 0.0.4).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// `# HELP` and `# TYPE` lines of one metric.
pub(crate) fn header(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric without labels.
pub(crate) fn single<V: std::fmt::Display>(
    o: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    v: V,
) {
    header(o, name, help, kind);
    let _ = writeln!(o, "{name} {v}");
}

/// A metric with one label, one line per value.
pub(crate) fn labeled<L: AsRef<str>, V: std::fmt::Display>(
    o: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    values: &[(L, V)],
) {
    header(o, name, help, kind);
    for (l, v) in values {
        let escaped = escape(l.as_ref());
        let _ = writeln!(o, "{name}{{{label}=\"{escaped}\"}} {v}");
    }
}

/// A counter with two labels, one line per pair of values.
pub(crate) fn labeled2<A: AsRef<str>, B: AsRef<str>>(
    o: &mut String,
    name: &str,
    help: &str,
    (la, lb): (&str, &str),
    values: &[((A, B), u64)],
) {
    header(o, name, help, "counter");
    for ((a, b), v) in values {
        let (a, b) = (escape(a.as_ref()), escape(b.as_ref()));
        let _ = writeln!(o, "{name}{{{la}=\"{a}\",{lb}=\"{b}\"}} {v}");
    }
}

/// A label value in the text format's escapes: a value may come from the
/// config or ClickHouse (a replica's URL, a node's address).
fn escape(l: &str) -> String {
    let mut escaped = String::with_capacity(l.len());
    for c in l.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A Prometheus summary (quantiles in seconds) of a µs histogram.
pub(crate) fn summary(o: &mut String, name: &str, h: &Histogram<u64>) {
    header(o, name, "Latency summary from the HdrHistogram.", "summary");
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
}

/// Upper bounds of the Prometheus histogram buckets, in µs: log-spaced
/// (1, 2.5, 5 per decade) from 50 µs to 60 s.
pub const BUCKET_BOUNDS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The histogram's name beside a summary's: `…_seconds` becomes
/// `…_hist_seconds` (a summary and a histogram cannot share `_sum` and
/// `_count`).
pub fn histogram_name(summary: &str) -> String {
    match summary.strip_suffix("_seconds") {
        Some(base) => format!("{base}_hist_seconds"),
        None => format!("{summary}_hist"),
    }
}

/// A Prometheus histogram (cumulative `_bucket{le}`, `_sum`, `_count`, in
/// seconds) of a µs HdrHistogram: unlike quantiles, buckets sum across
/// nodes, so `histogram_quantile` works over a fleet.
pub(crate) fn histogram(o: &mut String, summary: &str, h: &Histogram<u64>) {
    let name = histogram_name(summary);
    header(
        o,
        &name,
        "Latency histogram from the HdrHistogram (aggregatable across nodes).",
        "histogram",
    );
    for le in BUCKET_BOUNDS_US {
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(0, le)
        };
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {n}", le as f64 / 1e6);
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
}

#[cfg(test)]
mod tests {

    #[test]
    fn label_values_are_escaped() {
        let mut o = String::new();
        super::labeled(&mut o, "x", "X.", "gauge", "node", &[("a\"b\\c\nd", 1)]);
        assert!(o.ends_with("x{node=\"a\\\"b\\\\c\\nd\"} 1\n"), "{o}");
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [40, 90, 900, 1_200, 80_000, 70_000_000] {
            h.record(v).unwrap();
        }
        let mut o = String::new();
        super::histogram(&mut o, "x_latency_seconds", &h);
        let buckets: Vec<(String, u64)> = o
            .lines()
            .filter_map(|l| l.strip_prefix("x_latency_hist_seconds_bucket{le=\""))
            .map(|l| {
                let (le, n) = l.split_once("\"} ").unwrap();
                (le.to_string(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), super::BUCKET_BOUNDS_US.len() + 1, "{o}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{o}");
        let at = |le: &str| buckets.iter().find(|(l, _)| l == le).unwrap().1;
        assert_eq!(at("0.00005"), 1);
        assert_eq!(at("0.001"), 3);
        assert_eq!(at("0.1"), 5);
        assert_eq!(at("60"), 5, "70 s is past the last bound");
        assert_eq!(at("+Inf"), 6);
        assert!(o.contains("# TYPE x_latency_hist_seconds histogram"), "{o}");
        assert!(o.contains("x_latency_hist_seconds_count 6"), "{o}");
    }
}
