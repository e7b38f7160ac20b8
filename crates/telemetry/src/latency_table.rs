//! `/debug/latency`: the classic HdrHistogram percentile table per stage.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use crate::{Metrics, SinkStage, Stage};

impl Metrics {
    /// The classic HdrHistogram percentile table per stage, values in ms.
    pub fn render_latency_table(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        if !self.shards.is_empty() {
            for stage in Stage::ALL {
                let h = self.merged(stage);
                let _ = writeln!(o, "# stage: {} (milliseconds)", stage.name());
                percentile_table(&h, &mut o);
                o.push('\n');
            }
        }
        if self.sink.running.load(Ordering::Relaxed) {
            for stage in SinkStage::ALL {
                let h = self.sink_histogram(stage);
                let _ = writeln!(o, "# stage: sink_{} (milliseconds)", stage.name());
                percentile_table(&h, &mut o);
                o.push('\n');
            }
        }
        o
    }
}

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
    let _ = writeln!(
        o,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
}
