//! The admin surfaces (`/metrics`, `/health`, `/debug/*`, the on-call page):
//! where they are answered and who may read them (`[admin]` in the config).
//!
//! One rule for both listeners (the shards' and the small blocking one in
//! the binary): with a separate admin listener, the main port answers admin
//! routes `404` and the admin listener answers nothing else but the probes;
//! with a token set, the routes that carry data need it. The probes
//! (`/health/live`, `/health/ready`) are answered everywhere, without a token,
//! for load balancers.

use engine_core::config::AdminConfig;

use crate::http::{Response, Route};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Admin,
}

/// The refusal of `route` on `listener`, if any; `authorization` is the
/// request's `Authorization` header.
pub fn refusal(
    route: Route,
    listener: Listener,
    authorization: Option<&[u8]>,
    admin: &AdminConfig,
) -> Option<Response> {
    let probe = matches!(route, Route::Live | Route::Ready);
    match listener {
        Listener::Main if route.is_admin() && admin.separate() => {
            return Some(Response::error(
                404,
                "not_found",
                "no such endpoint on this port (admin surfaces are on the admin listener)",
            ));
        }
        Listener::Admin if !route.is_admin() && !probe => {
            return Some(Response::error(
                404,
                "not_found",
                "the admin listener answers /metrics, /health and /debug/* only",
            ));
        }
        _ => {}
    }
    let token = admin.token()?;
    if route.needs_admin_token() && !authorization.is_some_and(|a| token.admits(a)) {
        return Some(
            Response::error(
                401,
                "admin_token_required",
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
    use crate::assets::Asset;

    #[test]
    fn where_and_with_what_each_route_is_answered() {
        let open = AdminConfig::default();
        for r in [
            Route::Metrics,
            Route::Health,
            Route::DebugStats,
            Route::Ingest,
        ] {
            assert!(refusal(r, Listener::Main, None, &open).is_none(), "{r:?}");
        }
        let apart = AdminConfig {
            port: 9100,
            token_sha256: engine_core::tenant::hash_key_hex("adm"),
            ..AdminConfig::default()
        };
        let status = |r, l, a: Option<&[u8]>| refusal(r, l, a, &apart).map(|r| r.status);
        assert_eq!(status(Route::Metrics, Listener::Main, None), Some(404));
        assert_eq!(
            status(Route::Asset(Asset::OncallHtml), Listener::Main, None),
            Some(404)
        );
        assert_eq!(status(Route::Ready, Listener::Main, None), None);
        assert_eq!(status(Route::Ingest, Listener::Main, None), None);
        assert_eq!(status(Route::Ingest, Listener::Admin, None), Some(404));
        assert_eq!(status(Route::Live, Listener::Admin, None), None);
        assert_eq!(status(Route::Metrics, Listener::Admin, None), Some(401));
        assert_eq!(
            status(Route::Metrics, Listener::Admin, Some(b"Bearer nope")),
            Some(401)
        );
        assert_eq!(
            status(Route::Metrics, Listener::Admin, Some(b"Bearer adm")),
            None
        );
        // The page's files hold no data: served without the token.
        assert_eq!(
            status(Route::Asset(Asset::OncallJs), Listener::Admin, None),
            None
        );
    }
}
