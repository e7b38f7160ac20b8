//! Sample events in the shapes SDKs send, for benchmarks and load generators
//! (`crates/core/benches`, `benches/loadgen`), so both measure the same thing.

use uuid::Uuid;

/// One event of type `n % 5`: about 280 bytes of JSON, as close to 250 as the
/// fields every event carries (three UUIDs, a timestamp, url, user agent) allow.
pub fn event_json(n: usize, tenant: &Uuid, session: &Uuid, timestamp: &str) -> String {
    let id = Uuid::new_v4();
    let page = n % 97;
    let common = format!(
        r#""id":"{id}","tenant_id":"{tenant}","session_id":"{session}","timestamp":"{timestamp}","url":"https://ex.com/{page}","user_agent":"sdk/1.4""#
    );
    match n % 5 {
        0 => format!(r#"{{{common},"type":"pageview","path":"/{page}","title":"Home"}}"#),
        1 => format!(
            r##"{{{common},"type":"click","selector":"#buy","text":"Buy","x":{},"y":{}}}"##,
            100 + n % 800,
            50 + n % 600
        ),
        2 => format!(r#"{{{common},"type":"scroll","depth_pct":{}}}"#, n % 101),
        3 => format!(
            r#"{{{common},"type":"performance","lcp":{},"fcp":{},"cls":0.04,"ttfb":{}}}"#,
            900 + n % 1500,
            400 + n % 700,
            40 + n % 200
        ),
        _ => {
            format!(r#"{{{common},"type":"custom","name":"signup","properties":{{"plan":"pro"}}}}"#)
        }
    }
}

/// The same event as [`event_json`] (type `n % 5`, same fields) in the shape
/// Segment's libraries send: a `page`, or a `track` (the engine's click,
/// scroll and web-vitals conventions, or a custom event), `session` as the
/// `anonymousId`.
pub fn segment_json(n: usize, session: &Uuid, timestamp: &str) -> String {
    let id = Uuid::new_v4();
    let page = n % 97;
    let common = format!(
        r#""messageId":"{id}","anonymousId":"{session}","timestamp":"{timestamp}","context":{{"userAgent":"sdk/1.4","page":{{"url":"https://ex.com/{page}"}}}}"#
    );
    match n % 5 {
        0 => format!(
            r#"{{{common},"type":"page","properties":{{"path":"/{page}","url":"https://ex.com/{page}","title":"Home"}}}}"#
        ),
        1 => format!(
            r##"{{{common},"type":"track","event":"Element Clicked","properties":{{"selector":"#buy","text":"Buy","x":{},"y":{}}}}}"##,
            100 + n % 800,
            50 + n % 600
        ),
        2 => format!(
            r#"{{{common},"type":"track","event":"Page Scrolled","properties":{{"depth_pct":{}}}}}"#,
            n % 101
        ),
        3 => format!(
            r#"{{{common},"type":"track","event":"Web Vitals","properties":{{"lcp":{},"fcp":{},"cls":0.04,"ttfb":{}}}}}"#,
            900 + n % 1500,
            400 + n % 700,
            40 + n % 200
        ),
        _ => {
            format!(r#"{{{common},"type":"track","event":"signup","properties":{{"plan":"pro"}}}}"#)
        }
    }
}

/// The same event as [`event_json`] in the shape PostHog's libraries send:
/// `$pageview`, an `$autocapture` click, a `$pageleave` with its scroll
/// depth, `$web_vitals`, or a custom event; `session` as `$session_id` and
/// `distinct_id`.
pub fn posthog_json(n: usize, session: &Uuid, timestamp: &str) -> String {
    let id = Uuid::new_v4();
    let page = n % 97;
    let common = format!(r#""uuid":"{id}","timestamp":"{timestamp}","distinct_id":"{session}""#);
    let props = format!(
        r#""$session_id":"{session}","$current_url":"https://ex.com/{page}","$raw_user_agent":"sdk/1.4""#
    );
    match n % 5 {
        0 => format!(
            r#"{{{common},"event":"$pageview","properties":{{{props},"$pathname":"/{page}","title":"Home"}}}}"#
        ),
        1 => format!(
            r#"{{{common},"event":"$autocapture","properties":{{{props},"$event_type":"click","$elements":[{{"tag_name":"button","$el_text":"Buy","attr__id":"buy"}}]}}}}"#
        ),
        2 => format!(
            r#"{{{common},"event":"$pageleave","properties":{{{props},"$prev_pageview_max_scroll_percentage":{}}}}}"#,
            (n % 101) as f64 / 100.0
        ),
        3 => format!(
            r#"{{{common},"event":"$web_vitals","properties":{{{props},"$web_vitals_LCP_value":{},"$web_vitals_FCP_value":{},"$web_vitals_CLS_value":0.04}}}}"#,
            900 + n % 1500,
            400 + n % 700
        ),
        _ => format!(r#"{{{common},"event":"signup","properties":{{{props},"plan":"pro"}}}}"#),
    }
}
