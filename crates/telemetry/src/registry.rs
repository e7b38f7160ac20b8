//! The registered collectors of a process, and the three renderings of them.

use std::sync::{Arc, Mutex};

use crate::collector::Form;
use crate::stats::Stats;
use crate::{Collector, Exposition};

/// Every collector of the process, in registration order.
#[derive(Debug, Default)]
pub struct Registry {
    collectors: Mutex<Vec<Arc<dyn Collector>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a crate's metrics to every rendering.
    pub fn register(&self, c: Arc<dyn Collector>) {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }

    fn collectors(&self) -> Vec<Arc<dyn Collector>> {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        for c in self.collectors() {
            c.collect(&mut Exposition {
                form: Form::Prometheus(&mut o),
            });
        }
        o
    }

    /// The snapshot `GET /debug/stats` answers; `now_ms` is the wall clock.
    pub fn render_stats_json(&self, now_ms: u64) -> String {
        let mut s = Stats::default();
        let collectors = self.collectors();
        for c in &collectors {
            c.collect(&mut Exposition {
                form: Form::Stats(&mut s),
            });
        }
        s.finish(now_ms, collectors.iter().map(|c| c.part()))
    }

    /// The HdrHistogram percentile table of every latency, values in ms.
    pub fn render_latency_table(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        for c in self.collectors() {
            c.collect(&mut Exposition {
                form: Form::Table(&mut o),
            });
        }
        o
    }
}
