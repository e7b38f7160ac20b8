//! The routes every node answers, edge or sink-only: `/health`,
//! `/health/live`, `/health/ready`, `/metrics` and `/debug/latency`.
//!
//! One set of bodies for both node kinds: a node tells what it knows through
//! [`Node`] and [`answer`] builds the response. The shards answer for an edge
//! node ([`AppState`]); the binary's sink-only status endpoint answers for a
//! sink with its own `Node`, over the same request reader
//! ([`crate::http::reader`]), so both get the same routes, bodies and bounds.
//!
//! Bodies (`<…>` from the node):
//! - `/health/live`: `{"status":"live"}`, 200 while the process serves.
//! - `/health/ready`: `{"ready":true}`, or 503 `{"ready":false,"reason":<code>}`
//!   with `Retry-After`.
//! - `/health`: `{"status":"ok"|"degraded","version","roles":[…],"ready",<node
//!   members>,"sink":{…}}`; `sink` only while this node runs the sink.

use std::io::Write as _;
use std::sync::atomic::Ordering;

use engine_core::config::Role;
use telemetry::{HealthCheck, Registry};

use crate::http::{push_json_str, Response};
use crate::state::AppState;

/// What a node knows about itself, for the routes every node answers.
pub trait Node {
    /// Every metric of the process.
    fn registry(&self) -> &Registry;
    /// Parts whose state `/health` shows, each as its own member.
    fn components(&self) -> &[std::sync::Arc<dyn HealthCheck>];
    /// The roles this node runs.
    fn roles(&self) -> &[Role];
    /// `Ok` when ready for its work, else why not (a snake_case code).
    fn readiness(&self) -> Result<(), &'static str>;
    /// `Retry-After` of a 503, in seconds.
    fn retry_after_secs(&self) -> u32;
    /// Appends this node's own members of the `/health` object, each one
    /// starting with a comma.
    fn health_members(&self, out: &mut Vec<u8>);
}

/// The routes every node answers the same (the route table, `routes.rs`,
/// names their paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRoute {
    /// `/health/live`
    Live,
    /// `/health/ready`
    Ready,
    /// `/health`
    Health,
    /// `/metrics`
    Metrics,
    /// `/debug/latency`
    DebugLatency,
    /// `/debug/stats`: every counter, gauge and latency histogram as JSON,
    /// for the on-call page.
    DebugStats,
}

/// The answer to `route` (method already checked).
pub fn answer(route: NodeRoute, node: &impl Node) -> Response {
    match route {
        NodeRoute::Live => Response::json(200, br#"{"status":"live"}"#.to_vec()),
        NodeRoute::Ready => match node.readiness() {
            Ok(()) => Response::json(200, br#"{"ready":true}"#.to_vec()),
            Err(reason) => {
                let mut b = br#"{"ready":false,"reason":"#.to_vec();
                push_json_str(&mut b, reason);
                b.push(b'}');
                Response::json(503, b).retry_after(node.retry_after_secs())
            }
        },
        NodeRoute::Health => health(node),
        NodeRoute::Metrics => Response::text(
            200,
            "text/plain; version=0.0.4",
            node.registry().render_prometheus().into_bytes(),
        ),
        NodeRoute::DebugLatency => Response::text(
            200,
            "text/plain; charset=utf-8",
            node.registry().render_latency_table().into_bytes(),
        ),
        NodeRoute::DebugStats => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Response::json(200, node.registry().render_stats_json(now_ms).into_bytes())
                .header("Cache-Control", "no-store")
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Ingest => "ingest",
        Role::Sink => "sink",
    }
}

fn health(node: &impl Node) -> Response {
    let ready = node.readiness().is_ok();
    let mut b = Vec::with_capacity(512);
    let _ = write!(
        b,
        "{{\"status\":\"{}\",\"version\":\"{}\",\"roles\":[",
        if ready { "ok" } else { "degraded" },
        env!("CARGO_PKG_VERSION"),
    );
    for (i, r) in node.roles().iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        push_json_str(&mut b, role_name(*r));
    }
    let _ = write!(b, "],\"ready\":{ready}");
    node.health_members(&mut b);
    for c in node.components() {
        let _ = write!(b, ",\"{}\":{}", c.name(), c.state_json());
    }
    b.push(b'}');
    Response::json(200, b)
}

/// A node shared with another thread (the admin listener's).
impl<T: Node> Node for std::sync::Arc<T> {
    fn registry(&self) -> &Registry {
        (**self).registry()
    }

    fn components(&self) -> &[std::sync::Arc<dyn HealthCheck>] {
        (**self).components()
    }

    fn roles(&self) -> &[Role] {
        (**self).roles()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        (**self).readiness()
    }

    fn retry_after_secs(&self) -> u32 {
        (**self).retry_after_secs()
    }

    fn health_members(&self, out: &mut Vec<u8>) {
        (**self).health_members(out)
    }
}

/// An edge node: broker connectivity, io driver, ring depths.
impl Node for AppState {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn components(&self) -> &[std::sync::Arc<dyn HealthCheck>] {
        &self.components
    }

    fn roles(&self) -> &[Role] {
        &self.config.roles
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Err("shutting_down")
        } else if !self.broker_up() {
            Err("broker_unreachable")
        } else if self.rings.saturated() {
            Err("rings_saturated")
        } else {
            Ok(())
        }
    }

    fn retry_after_secs(&self) -> u32 {
        self.config.http.retry_after_secs
    }

    fn health_members(&self, b: &mut Vec<u8>) {
        let cfg = &self.config;
        let m = &self.metrics;
        let _ = write!(
            b,
            ",\"io_driver\":\"{}\",\"shards\":{},\"rate_limit_share\":{},\"broker\":{{\"up\":{},\"brokers\":",
            self.io_driver.get().copied().unwrap_or("starting"),
            m.shard_count(),
            self.rate_limit_share(),
            self.broker_up(),
        );
        push_json_str(b, &cfg.redpanda.brokers.joined());
        b.extend_from_slice(b",\"topic\":");
        push_json_str(b, &cfg.redpanda.topic);
        let _ = write!(
            b,
            ",\"inflight_records\":{}}},\"clickhouse\":{{\"url\":",
            self.producer.inflight()
        );
        push_json_str(b, cfg.clickhouse.url.as_str());
        let _ = write!(
            b,
            ",\"used_by_this_node\":{}}},\"rings\":[",
            cfg.roles.contains(&Role::Sink)
        );
        for i in 0..m.shard_count() {
            if i > 0 {
                b.push(b',');
            }
            let _ = write!(
                b,
                "{{\"shard\":{i},\"depth\":{},\"capacity\":{}}}",
                self.rings.depth(i),
                self.rings.capacity()
            );
        }
        b.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Part;

    impl HealthCheck for Part {
        fn name(&self) -> &'static str {
            "sink"
        }
        fn problem(&self) -> Option<&'static str> {
            None
        }
        fn state_json(&self) -> String {
            r#"{"running":true}"#.into()
        }
    }

    struct Probe {
        registry: Registry,
        components: Vec<std::sync::Arc<dyn HealthCheck>>,
        ready: Result<(), &'static str>,
    }

    impl Node for Probe {
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn components(&self) -> &[std::sync::Arc<dyn HealthCheck>] {
            &self.components
        }
        fn roles(&self) -> &[Role] {
            &[Role::Sink]
        }
        fn readiness(&self) -> Result<(), &'static str> {
            self.ready
        }
        fn retry_after_secs(&self) -> u32 {
            3
        }
        fn health_members(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(br#","extra":1"#);
        }
    }

    fn body(r: &Response) -> sonic_rs::Value {
        sonic_rs::from_slice(&r.body).unwrap()
    }

    #[test]
    fn bodies_are_json_and_shared() {
        use sonic_rs::JsonValueTrait;
        let mut node = Probe {
            registry: Registry::new(),
            components: Vec::new(),
            ready: Ok(()),
        };
        let live = answer(NodeRoute::Live, &node);
        assert_eq!(
            (live.status, &live.body[..]),
            (200, &br#"{"status":"live"}"#[..])
        );
        let h = answer(NodeRoute::Health, &node);
        let j = body(&h);
        assert_eq!(j["status"].as_str(), Some("ok"));
        assert_eq!(j["roles"][0].as_str(), Some("sink"));
        assert_eq!(j["extra"].as_u64(), Some(1));
        assert!(j.get("sink").is_none());
        node.components.push(std::sync::Arc::new(Part));
        assert!(body(&answer(NodeRoute::Health, &node))["sink"]["running"]
            .as_bool()
            .unwrap());
        node.ready = Err("clickhouse_unreachable");
        let r = answer(NodeRoute::Ready, &node);
        assert_eq!(r.status, 503);
        assert_eq!(r.retry_after_secs, Some(3));
        assert_eq!(body(&r)["reason"].as_str(), Some("clickhouse_unreachable"));
        assert_eq!(
            body(&answer(NodeRoute::Health, &node))["status"].as_str(),
            Some("degraded")
        );
    }
}
