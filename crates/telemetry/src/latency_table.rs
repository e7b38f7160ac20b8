//! `/debug/latency`: the classic HdrHistogram percentile table per stage.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Writes `h` (recorded in µs) as the HdrHistogram percentile distribution
/// (`Value Percentile TotalCount 1/(1-Percentile)`), values in ms.
pub fn percentile_table(h: &Histogram<u64>, o: &mut String) {
    let _ = writeln!(
        o,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if h.is_empty() {
        let _ = writeln!(o, "#[Mean    = 0.000, StdDeviation   = 0.000]");
        let _ = writeln!(o, "#[Max     = 0.000, Total count    = 0]");
        return;
    }
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "{:>12.3} {:>14.12} {:>10} {}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inv
        );
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        o,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    // distinct_values(): how many values the counts array tells apart.
    let _ = writeln!(
        o,
        "#[Buckets = {:>12}, DistinctValues = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_names_what_it_prints() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.record(1_500).unwrap();
        let mut o = String::new();
        percentile_table(&h, &mut o);
        let footer = o.lines().last().unwrap();
        assert_eq!(
            footer,
            format!(
                "#[Buckets = {:>12}, DistinctValues = {:>12}]",
                h.buckets(),
                h.distinct_values()
            )
        );
        assert!(!o.contains("SubBuckets"), "{o}");
        // The histogram's counts array, not its sub-bucket count (2048 here).
        assert_ne!(h.distinct_values(), 2048);
    }
}
