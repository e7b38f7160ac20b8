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
