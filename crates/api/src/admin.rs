//! The admin surfaces (`/metrics`, `/health`, `/debug/*`, the on-call page):
//! where they are answered and who may read them (`[admin]` in the config).
//!
//! One rule for both listeners (the shards' and the small blocking one in
//! the binary): with a separate admin listener, the main port answers admin
//! routes `404` and the admin listener answers nothing else but the probes;
//! with a token set, the routes that carry data need it. The probes
//! (`/health/live`, `/health/ready`) are answered everywhere, without a token,
//! for load balancers.

use edge_http::ErrorCode;
use engine_core::config::AdminConfig;

use crate::auth::Key;
use crate::http::Response;
use crate::routes::{Route, Surface};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Admin,
}

/// The refusal of `route` on `listener`, if any; `authorization` is the
/// request's `Authorization` header.
pub fn refusal(
    route: &Route,
    listener: Listener,
    authorization: Option<&[u8]>,
    admin: &AdminConfig,
) -> Option<Response> {
    match (listener, route.surface) {
        (Listener::Main, Surface::Admin) if admin.separate() => {
            return Some(Response::error(
                404,
                ErrorCode::NotFound,
                "no such endpoint on this port (admin surfaces are on the admin listener)",
            ));
        }
        (Listener::Admin, Surface::Public) => {
            return Some(Response::error(
                404,
                ErrorCode::NotFound,
                "the admin listener answers /metrics, /health and /debug/* only",
            ));
        }
        _ => {}
    }
    let token = admin.token()?;
    if route.key == Key::Admin && !authorization.is_some_and(|a| token.admits(a)) {
        return Some(
            Response::error(
                401,
                ErrorCode::AdminTokenRequired,
                "this endpoint needs `Authorization: Bearer <admin token>`",
            )
            .header("WWW-Authenticate", "Bearer"),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::lookup;

    #[test]
    fn where_and_with_what_each_route_is_answered() {
        let open = AdminConfig::default();
        for p in ["/metrics", "/health", "/debug/stats", "/ingest"] {
            assert!(
                refusal(lookup(p.as_bytes()), Listener::Main, None, &open).is_none(),
                "{p}"
            );
        }
        let apart = AdminConfig {
            port: 9100,
            token_sha256: engine_core::tenant::hash_key_hex("adm"),
            ..AdminConfig::default()
        };
        let status = |p: &str, l, a: Option<&[u8]>| {
            refusal(lookup(p.as_bytes()), l, a, &apart).map(|r| r.status)
        };
        assert_eq!(status("/metrics", Listener::Main, None), Some(404));
        assert_eq!(status("/debug/dashboard", Listener::Main, None), Some(404));
        assert_eq!(status("/health/ready", Listener::Main, None), None);
        assert_eq!(status("/ingest", Listener::Main, None), None);
        assert_eq!(status("/ingest", Listener::Admin, None), Some(404));
        assert_eq!(status("/health/live", Listener::Admin, None), None);
        assert_eq!(status("/metrics", Listener::Admin, None), Some(401));
        assert_eq!(
            status("/metrics", Listener::Admin, Some(b"Bearer nope")),
            Some(401)
        );
        assert_eq!(
            status("/metrics", Listener::Admin, Some(b"Bearer adm")),
            None
        );
        // The page's files hold no data: served without the token.
        assert_eq!(
            status("/debug/dashboard/oncall.js", Listener::Admin, None),
            None
        );
    }
}
