//! How a crate hands its metrics to the renderers: it implements
//! [`Collector`] and writes each metric once into an [`Exposition`], which
//! renders it in the form being served.

use hdrhistogram::Histogram;

use crate::stats::Stats;

/// A crate's metrics, rendered on every scrape.
pub trait Collector: Send + Sync + std::fmt::Debug {
    /// What part of the process these metrics describe (`edge`, `producer`,
    /// `sink`, `query`): the on-call page shows the panels of the parts it
    /// finds.
    fn part(&self) -> &'static str;
    /// Writes the metrics, each with its help text.
    fn collect(&self, out: &mut Exposition<'_>);
}

/// Where a [`Collector`] writes; the form is the renderer's business.
#[derive(Debug)]
pub struct Exposition<'a> {
    pub(crate) form: Form<'a>,
}

#[derive(Debug)]
pub(crate) enum Form<'a> {
    /// Prometheus text (format 0.0.4).
    Prometheus(&'a mut String),
    /// The on-call JSON snapshot.
    Stats(&'a mut Stats),
    /// The percentile table: latencies only.
    Table(&'a mut String),
}

impl Exposition<'_> {
    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        match &mut self.form {
            Form::Prometheus(o) => crate::prometheus::single(o, name, help, "counter", value),
            Form::Stats(s) => s.counter(name, value),
            Form::Table(_) => {}
        }
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        match &mut self.form {
            Form::Prometheus(o) => crate::prometheus::single(o, name, help, "gauge", value),
            Form::Stats(s) => s.gauge(name, value),
            Form::Table(_) => {}
        }
    }

    /// A counter with one label, one line per value.
    pub fn labeled_counter<L: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(L, u64)],
    ) {
        match &mut self.form {
            Form::Prometheus(o) => {
                crate::prometheus::labeled(o, name, help, "counter", label, values)
            }
            // Zero counts carry nothing for a rate: left out of the snapshot.
            Form::Stats(s) => s.labeled(name, values.iter().filter(|(_, n)| *n > 0)),
            Form::Table(_) => {}
        }
    }

    /// A counter with two labels, one line per pair of values (`labels`:
    /// their names). The on-call snapshot keys each pair as `a/b`.
    pub fn labeled_counter2<A: AsRef<str>, B: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        labels: (&str, &str),
        values: &[((A, B), u64)],
    ) {
        match &mut self.form {
            Form::Prometheus(o) => crate::prometheus::labeled2(o, name, help, labels, values),
            Form::Stats(s) => {
                let keyed: Vec<(String, u64)> = values
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|((a, b), n)| (format!("{}/{}", a.as_ref(), b.as_ref()), *n))
                    .collect();
                s.labeled(name, keyed.iter());
            }
            Form::Table(_) => {}
        }
    }

    /// A gauge with one label, one line per value.
    pub fn labeled_gauge<L: AsRef<str>>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(L, i64)],
    ) {
        match &mut self.form {
            Form::Prometheus(o) => {
                crate::prometheus::labeled(o, name, help, "gauge", label, values)
            }
            Form::Stats(s) => s.labeled(name, values.iter()),
            Form::Table(_) => {}
        }
    }

    /// A latency recorded in µs: a summary named `name` (in seconds) and a
    /// histogram `…_hist_seconds` in Prometheus text; exact percentiles and
    /// windowable buckets in the snapshot; a percentile table in the table.
    pub fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        match &mut self.form {
            Form::Prometheus(o) => {
                crate::prometheus::summary(o, name, h);
                crate::prometheus::histogram(o, name, h);
            }
            Form::Stats(s) => s.latency(name, h),
            Form::Table(o) => {
                use std::fmt::Write as _;
                let _ = writeln!(o, "# stage: {name} (milliseconds)");
                crate::percentile_table(h, o);
                o.push('\n');
            }
        }
    }
}
