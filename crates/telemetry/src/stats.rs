//! The on-call page's data (`GET /debug/stats`): one JSON snapshot of every
//! counter, gauge and latency histogram, for a page that polls it every
//! second and draws rates (from counter deltas) and latency by percentile.
//!
//! Each histogram comes twice: exact percentiles since start (from the
//! HdrHistogram, at [`PERCENTILES`]), and cumulative counts at fixed
//! log-spaced bounds ([`stats_bounds_us`], 20 per decade), so the page can
//! subtract two snapshots and draw the last seconds alone.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentiles of the since-start curves: the "nines" from 50% to 99.999%.
pub const PERCENTILES: [f64; 12] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// Bucket bounds of the windowed histograms, in µs: 20 per decade from
/// 10 µs to 60 s (12% apart, so a windowed percentile is within 12%).
pub fn stats_bounds_us() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out: Vec<u64> = (0..)
            .map(|i| (10.0 * 10f64.powf(f64::from(i) / 20.0)).round() as u64)
            .take_while(|&b| b < 60_000_000)
            .collect();
        out.dedup();
        out.push(60_000_000);
        out
    })
}

fn histogram_json(o: &mut String, h: &Histogram<u64>) {
    let bounds = stats_bounds_us();
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let i = bounds.partition_point(|&b| b < value);
        counts[i] += v.count_since_last_iteration();
    }
    let _ = write!(o, "{{\"count\":{},\"percentiles_us\":[", h.len());
    for (i, p) in PERCENTILES.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let v = if h.is_empty() {
            0
        } else {
            h.value_at_percentile(*p)
        };
        let _ = write!(o, "{sep}{v}");
    }
    let _ = write!(o, "],\"cumulative\":[");
    let mut total = 0;
    for (i, c) in counts.iter().take(bounds.len()).enumerate() {
        total += c;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(o, "{sep}{total}");
    }
    let _ = write!(o, "]}}");
}

/// One JSON object's members, written as they come.
#[derive(Debug, Default)]
struct Members(String);

impl Members {
    fn push(&mut self, key: &str, value: impl std::fmt::Display) {
        let sep = if self.0.is_empty() { "" } else { "," };
        self.0.push_str(sep);
        // Keys are names and label values: escaped, since a label value may
        // come from the config or ClickHouse (a replica's URL, a node's
        // address).
        push_json_str(&mut self.0, key);
        let _ = write!(self.0, ":{value}");
    }
}

/// Appends `s` as a JSON string: quotes, backslashes and control
/// characters escaped.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The snapshot being built: each collector's metrics land in their section.
/// Names are the Prometheus names; label values are escaped as JSON.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    counters: Members,
    gauges: Members,
    labeled: Members,
    latency: Members,
}

impl Stats {
    pub(crate) fn counter(&mut self, name: &str, v: u64) {
        self.counters.push(name, v);
    }

    pub(crate) fn gauge(&mut self, name: &str, v: i64) {
        self.gauges.push(name, v);
    }

    pub(crate) fn labeled<'a, L: AsRef<str> + 'a, V: std::fmt::Display + 'a>(
        &mut self,
        name: &str,
        values: impl Iterator<Item = &'a (L, V)>,
    ) {
        let mut m = Members::default();
        for (l, v) in values {
            m.push(l.as_ref(), v);
        }
        self.labeled.push(name, format_args!("{{{}}}", m.0));
    }

    pub(crate) fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        let mut o = String::with_capacity(1024);
        histogram_json(&mut o, h);
        self.latency.push(name, o);
    }

    /// The whole snapshot; `parts` names the collectors that wrote it.
    pub(crate) fn finish<'a>(self, now_ms: u64, parts: impl Iterator<Item = &'a str>) -> String {
        let mut o = String::with_capacity(16 * 1024);
        let _ = write!(o, "{{\"time_ms\":{now_ms},\"parts\":[");
        for (i, p) in parts.enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}\"{p}\"");
        }
        o.push_str("],\"bounds_us\":");
        list(&mut o, stats_bounds_us());
        o.push_str(",\"percentiles\":");
        list(&mut o, &PERCENTILES);
        let _ = write!(
            o,
            ",\"counters\":{{{}}},\"gauges\":{{{}}},\"labeled\":{{{}}},\"latency\":{{{}}}}}",
            self.counters.0, self.gauges.0, self.labeled.0, self.latency.0
        );
        o
    }
}

fn list<V: std::fmt::Display>(o: &mut String, values: &[V]) {
    o.push('[');
    for (i, v) in values.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(o, "{sep}{v}");
    }
    o.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_as_json() {
        let mut m = Members::default();
        m.push("a\"b\\c\u{1}", 1);
        assert_eq!(m.0, "\"a\\\"b\\\\c\\u0001\":1");
        let v: sonic_rs::Value = sonic_rs::from_str(&format!("{{{}}}", m.0)).unwrap();
        assert!(sonic_rs::JsonValueTrait::get(&v, "a\"b\\c\u{1}").is_some());
    }

    #[derive(Debug)]
    struct Part;

    impl crate::Collector for Part {
        fn part(&self) -> &'static str {
            "edge"
        }
        fn collect(&self, out: &mut crate::Exposition<'_>) {
            out.counter("x_total", "A counter.", 7);
            out.gauge("x_up", "A gauge.", -1);
            out.labeled_counter(
                "x_by_status_total",
                "By status.",
                "status",
                &[("200", 1), ("500", 0)],
            );
            out.labeled_gauge("x_depth", "By shard.", "shard", &[("0", 0i64), ("1", 4)]);
            let mut h = crate::new_histogram();
            for v in 1..=1000u64 {
                h.record(v * 100).unwrap();
            }
            out.latency("x_request_seconds", &h);
        }
    }

    #[test]
    fn the_snapshot_is_json_with_exact_and_bucketed_latencies() {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        let r = crate::Registry::new();
        r.register(std::sync::Arc::new(Part));
        let v: sonic_rs::Value = sonic_rs::from_str(&r.render_stats_json(1234)).unwrap();
        assert_eq!(v["time_ms"].as_u64(), Some(1234));
        assert_eq!(v["parts"][0].as_str(), Some("edge"));
        assert_eq!(v["counters"]["x_total"].as_u64(), Some(7));
        assert_eq!(v["gauges"]["x_up"].as_i64(), Some(-1));
        assert_eq!(v["labeled"]["x_by_status_total"]["200"].as_u64(), Some(1));
        assert!(
            v["labeled"]["x_by_status_total"].get("500").is_none(),
            "zero counts are left out"
        );
        assert_eq!(
            v["labeled"]["x_depth"]["0"].as_u64(),
            Some(0),
            "zero gauges stay"
        );
        let req = &v["latency"]["x_request_seconds"];
        assert_eq!(req["count"].as_u64(), Some(1000));
        // Exact since-start percentiles: p50 of 100..=100,000 µs.
        let p50 = req["percentiles_us"][0].as_u64().unwrap();
        assert!((49_900..=50_100).contains(&p50), "{p50}");
        // Cumulative bucket counts, one per bound, ending at the total.
        let cum: Vec<u64> = req["cumulative"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        let bounds = stats_bounds_us();
        assert_eq!(cum.len(), bounds.len());
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cum.last(), Some(&1000));
        // Half the values are at most 50 ms: the bucket holding 50 ms says so.
        let i = bounds.partition_point(|&b| b < 50_000);
        assert!((450..=560).contains(&cum[i]), "{} at {}", cum[i], bounds[i]);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((bounds[0], *bounds.last().unwrap()), (10, 60_000_000));
        // The same collector in the other two forms.
        let text = r.render_prometheus();
        assert!(
            text.contains("x_by_status_total{status=\"500\"} 0"),
            "{text}"
        );
        assert!(text.contains("x_depth{shard=\"1\"} 4"), "{text}");
        assert!(text.contains("x_request_hist_seconds_count 1000"), "{text}");
        let table = r.render_latency_table();
        assert!(
            table.contains("# stage: x_request_seconds (milliseconds)"),
            "{table}"
        );
        assert!(table.contains("Total count    =         1000"), "{table}");
        assert!(!table.contains("x_total"), "{table}");
    }
}
