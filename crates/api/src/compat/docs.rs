//! The start-up documents the browser libraries fetch before they send:
//! analytics.js sends nothing when its settings request fails, posthog-js
//! asks for its remote config and feature flags. Each is the smallest valid
//! document that makes the library send its events here, and nothing else
//! (no integrations, no session recording, no surveys, no metrics calls).
//!
//! A key in a path is echoed only once it is a known tenant's write key (it
//! lands in JSON and in a script: an unknown one is 404), and always
//! through the JSON escaper.

use edge_http::ErrorCode;
use std::io::Write as _;

use engine_core::Tenant;

use super::public_tenant;
use crate::http::{push_json_str, RequestHead, Response};
use crate::state::Tenants;

/// The key of a path `…/<key>/…`: at most [`super::wire::MAX_KEY_BYTES`]
/// of letters, digits, `_`, `-` and `:`.
pub fn path_key(segment: &[u8]) -> Option<&str> {
    let ok = !segment.is_empty()
        && segment.len() <= super::wire::MAX_KEY_BYTES
        && segment
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    ok.then(|| std::str::from_utf8(segment).ok()).flatten()
}

/// The tenant a path's key names, or the answer.
fn tenant<'t>(
    tenants: &'t Tenants,
    segment: Option<&[u8]>,
) -> Result<(&'t Tenant, String), Response> {
    let Some(key) = segment.and_then(path_key) else {
        return Err(Response::error(
            404,
            ErrorCode::NotFound,
            "no such write key",
        ));
    };
    let t = public_tenant(tenants, key)
        .map_err(|_| Response::error(404, ErrorCode::NotFound, "no such write key"))?;
    Ok((t, key.to_owned()))
}

/// Whether the settings name the API host `https`: over the TLS listener;
/// else as a proxy's `X-Forwarded-Proto` says; else `http` only for a
/// loopback host (development), `https` for any other (a page served over
/// https cannot send to an http host: a wrong `http` loses every event,
/// a wrong `https` is a console error that says why).
pub fn https(secure: bool, head: &RequestHead, buf: &[u8], host: &str) -> bool {
    if secure {
        return true;
    }
    if let Some(proto) = head.forwarded_proto.clone().and_then(|r| buf.get(r)) {
        let first = proto.split(|&b| b == b',').next().unwrap_or_default();
        return first.trim_ascii().eq_ignore_ascii_case(b"https");
    }
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    !matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// `GET /v1/projects/<writeKey>/settings`: Segment's settings, naming this
/// engine (`host`, as the request's `Host` said) as the API host.
pub fn segment_settings(
    tenants: &Tenants,
    key: Option<&[u8]>,
    host: &str,
    https: bool,
    check: impl FnOnce(&Tenant) -> Result<(), Response>,
) -> Response {
    let (t, key) = match tenant(tenants, key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if let Err(r) = check(t) {
        return r;
    }
    let mut b = Vec::with_capacity(768);
    b.extend_from_slice(br#"{"integrations":{"Segment.io":{"apiKey":"#);
    push_json_str(&mut b, &key);
    b.extend_from_slice(br#","apiHost":"#);
    push_json_str(&mut b, &format!("{host}/v1"));
    let _ = write!(
        b,
        r#","protocol":"{}","unbundledIntegrations":[],"addBundledMetadata":true,"maybeBundledConfigIds":{{}},"versionSettings":{{"version":"4.4.7","componentTypes":["browser"]}}}}}},"plan":{{"track":{{"__default":{{"enabled":true,"integrations":{{}}}}}},"identify":{{"__default":{{"enabled":true}}}},"group":{{"__default":{{"enabled":true}}}}}},"edgeFunction":{{}},"analyticsNextEnabled":true,"middlewareSettings":{{}},"enabledMiddleware":{{}},"metrics":{{"sampleRate":0}},"legacyVideoPluginsEnabled":false,"remotePlugins":[]}}"#,
        if https { "https" } else { "http" }
    );
    // Per host and scheme: a shared cache must not hand one host's
    // document to another.
    Response::json(200, b)
        .header("Cache-Control", "private, max-age=60")
        .header("Vary", "Host, X-Forwarded-Proto")
}

/// posthog-js's remote config, as JSON.
fn posthog_config_json(key: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    b.extend_from_slice(br#"{"token":"#);
    push_json_str(&mut b, key);
    b.extend_from_slice(
        br#","supportedCompression":["gzip","gzip-js"],"hasFeatureFlags":false,"captureDeadClicks":false,"capturePerformance":{"network_timing":false,"web_vitals":true},"autocapture_opt_out":false,"autocaptureExceptions":false,"analytics":{"endpoint":"/i/v0/e/"},"sessionRecording":false,"heatmaps":false,"surveys":false,"defaultIdentifiedOnly":true,"siteApps":[]}"#,
    );
    b
}

/// `GET /array/<key>/config` (JSON) and `/array/<key>/config.js` (the
/// script posthog-js loads).
pub fn posthog_config(tenants: &Tenants, key: Option<&[u8]>, js: bool) -> Response {
    let (_, key) = match tenant(tenants, key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let config = posthog_config_json(&key);
    if !js {
        return Response::json(200, config).header("Cache-Control", "public, max-age=60");
    }
    let mut b = Vec::with_capacity(config.len() + 256);
    b.extend_from_slice(
        b"(function() {\n  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n  window._POSTHOG_REMOTE_CONFIG[",
    );
    push_json_str(&mut b, &key);
    b.extend_from_slice(b"] = {\n    config: ");
    b.extend_from_slice(&config);
    b.extend_from_slice(b",\n    siteApps: []\n  }\n})();\n");
    Response::text(200, "application/javascript; charset=utf-8", b)
        .header("Cache-Control", "public, max-age=60")
        .header("X-Content-Type-Options", "nosniff")
}

/// `POST /flags`, `/decide`: no feature flags, nothing else turned on.
pub fn posthog_flags(head: &RequestHead) -> Response {
    let _ = head;
    Response::json(
        200,
        br#"{"flags":{},"featureFlags":{},"featureFlagPayloads":{},"errorsWhileComputingFlags":false,"quotaLimited":[],"config":{"enable_collect_everything":true},"sessionRecording":false,"supportedCompression":["gzip","gzip-js"],"autocapture_opt_out":false,"capturePerformance":false,"isAuthenticated":false,"siteApps":[],"surveys":false,"heatmaps":false,"toolbarParams":{},"editorParams":{}}"#.to_vec(),
    )
    .header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_host_is_https_unless_it_is_loopback_or_a_proxy_says_http() {
        let head = |extra: &str| {
            let raw = format!("GET /v1/projects/k/settings HTTP/1.1\r\n{extra}\r\n");
            let h = crate::http::parse_head(raw.as_bytes()).unwrap().unwrap();
            (h, raw)
        };
        let (h, raw) = head("");
        assert!(!https(false, &h, raw.as_bytes(), "127.0.0.1:8080"));
        assert!(!https(false, &h, raw.as_bytes(), "localhost"));
        assert!(https(false, &h, raw.as_bytes(), "engine.example"));
        assert!(https(true, &h, raw.as_bytes(), "127.0.0.1"));
        let (h, raw) = head("X-Forwarded-Proto: https\r\n");
        assert!(https(false, &h, raw.as_bytes(), "127.0.0.1"));
        let (h, raw) = head("X-Forwarded-Proto: http\r\n");
        assert!(!https(false, &h, raw.as_bytes(), "engine.example"));
    }

    #[test]
    fn path_keys_are_plain_tokens() {
        assert_eq!(path_key(b"pk_abc123"), Some("pk_abc123"));
        for bad in [&b""[..], b"pk<script>", b"a\"b", b"\xff", &[b'a'; 300]] {
            assert_eq!(path_key(bad), None);
        }
    }

    #[test]
    fn documents_are_json_and_the_script_holds_it() {
        let j: sonic_rs::Value = sonic_rs::from_slice(&posthog_config_json("pk_x")).unwrap();
        use sonic_rs::JsonValueTrait;
        assert_eq!(j["token"].as_str(), Some("pk_x"));
        let f = posthog_flags(
            &crate::http::parse_head(b"POST /flags HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap(),
        );
        let _: sonic_rs::Value = sonic_rs::from_slice(&f.body).unwrap();
    }
}
