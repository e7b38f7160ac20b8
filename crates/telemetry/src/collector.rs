//! Metrics that their own crate declares and keeps (as quickwit's ingest
//! crate does): the owner implements [`Collector`] and registers it with
//! [`crate::Metrics::register`]; telemetry only renders what it is given.
//! The query service's metrics are declared this way; the edge's, the
//! producer's and the sink's are still declared in [`crate::Metrics`].

use hdrhistogram::Histogram;

/// A crate's metrics, rendered on every scrape.
pub trait Collector: Send + Sync + std::fmt::Debug {
    /// Writes the metrics, each with its help text.
    fn collect(&self, out: &mut Exposition<'_>);
}

/// Where a [`Collector`] writes: Prometheus text (format 0.0.4).
#[derive(Debug)]
pub struct Exposition<'a> {
    pub(crate) text: &'a mut String,
}

impl Exposition<'_> {
    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        crate::prometheus::header(self.text, name, help, "counter");
        crate::prometheus::line(self.text, name, "", value);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        crate::prometheus::header(self.text, name, help, "gauge");
        crate::prometheus::line(self.text, name, "", value);
    }

    /// A counter with one label, one line per value.
    pub fn labeled_counter(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        crate::prometheus::header(self.text, name, help, "counter");
        for (v, n) in values {
            crate::prometheus::line(self.text, name, &format!("{{{label}=\"{v}\"}}"), *n);
        }
    }

    /// A latency in µs, as a summary (`name`, seconds) and a histogram
    /// (`…_hist_seconds`), as every latency of the engine is exposed.
    pub fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        crate::prometheus::summary(self.text, name, h);
        crate::prometheus::histogram(self.text, name, h);
    }
}
