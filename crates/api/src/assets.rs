//! Files built from JavaScript and embedded in the binary: the browser SDK
//! (`/sdk.js`, `/sdk/v1.js`), the analytics dashboard (`/dashboard`) and the
//! on-call page (`/debug/dashboard`).
//!
//! Each is built by esbuild and committed (`sdk/dist/`, `dashboard/dist/`);
//! it is embedded here at compile time, so building the engine never needs
//! node, and the test suite fails when a committed file is stale. Each is
//! gzipped once, on first use, and served with a strong `ETag` per
//! representation, so a revalidating browser gets `304`.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::http::{RequestHead, Response};

/// A file embedded in the binary (the route table, `routes.rs`, names its
/// paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Sdk,
    DashboardHtml,
    DashboardJs,
    DashboardCss,
    /// The on-call page (`/debug/dashboard`): an admin surface.
    OncallHtml,
    OncallJs,
    OncallCss,
}

impl Asset {
    /// Whether the file belongs to the on-call page, which every node
    /// serves (a sink-only node too).
    pub fn is_oncall(self) -> bool {
        matches!(self, Asset::OncallHtml | Asset::OncallJs | Asset::OncallCss)
    }
}

/// How long browsers may use their copy of the SDK before revalidating, in
/// seconds: an engine upgrade reaches every page within this time.
pub const SDK_MAX_AGE_SECS: u32 = 3600;

/// The dashboard's policy: its own scripts, styles and API only; never framed.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file's bytes.
pub fn bytes(asset: Asset) -> &'static [u8] {
    match asset {
        Asset::Sdk => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../sdk/dist/sdk.js"
        )),
        Asset::DashboardHtml => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/index.html"
        )),
        Asset::DashboardJs => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/app.js"
        )),
        Asset::DashboardCss => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/app.css"
        )),
        Asset::OncallHtml => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/oncall.html"
        )),
        Asset::OncallJs => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/oncall.js"
        )),
        Asset::OncallCss => include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../dashboard/dist/oncall.css"
        )),
    }
}

fn content_type(asset: Asset) -> &'static str {
    match asset {
        Asset::Sdk | Asset::DashboardJs | Asset::OncallJs => "text/javascript; charset=utf-8",
        Asset::DashboardHtml | Asset::OncallHtml => "text/html; charset=utf-8",
        Asset::DashboardCss | Asset::OncallCss => "text/css; charset=utf-8",
    }
}

struct Encoded {
    gzip: Vec<u8>,
    etag: String,
    etag_gzip: String,
}

fn encoded(asset: Asset) -> &'static Encoded {
    static ENCODED: [OnceLock<Encoded>; 7] = [const { OnceLock::new() }; 7];
    ENCODED[asset as usize].get_or_init(|| {
        use std::io::Write;
        let bytes = bytes(asset);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(bytes);
        let gzip = enc.finish().unwrap_or_default();
        let digest = Sha256::digest(bytes);
        let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Encoded {
            gzip,
            etag: format!("\"{tag}\""),
            etag_gzip: format!("\"{tag}-gz\""),
        }
    })
}

/// The gzip size of the served SDK, in bytes.
pub fn gzip_len() -> usize {
    encoded(Asset::Sdk).gzip.len()
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, RFC 9110
/// §13.1.2, as required for `If-None-Match`).
fn none_match(header: &[u8], etag: &str) -> bool {
    header.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
    })
}

/// The answer to `GET`/`HEAD` of an embedded file.
pub fn answer(asset: Asset, head: &RequestHead, buf: &[u8]) -> Response {
    let a = encoded(asset);
    let gzip = head.accepts_gzip && !a.gzip.is_empty();
    let etag = if gzip { &a.etag_gzip } else { &a.etag };
    let cached = head
        .if_none_match
        .clone()
        .is_some_and(|r| none_match(&buf[r], etag));
    let resp = if cached {
        Response::empty(304)
    } else if gzip {
        Response::text(200, content_type(asset), a.gzip.clone()).header("Content-Encoding", "gzip")
    } else {
        Response::text(200, content_type(asset), bytes(asset).to_vec())
    };
    let resp = resp
        .header("ETag", etag.clone())
        .header("Vary", "Accept-Encoding")
        .header("X-Content-Type-Options", "nosniff");
    match asset {
        Asset::Sdk => resp
            .header(
                "Cache-Control",
                format!("public, max-age={SDK_MAX_AGE_SECS}"),
            )
            // Lets pages load it with `crossorigin` (subresource integrity).
            .header("Access-Control-Allow-Origin", "*"),
        // Revalidated on every load (a 304 when unchanged): the page and its
        // files always match the engine that serves them.
        _ => resp
            .header("Cache-Control", "no-cache")
            .header("Content-Security-Policy", DASHBOARD_CSP)
            .header("X-Frame-Options", "DENY")
            .header("Referrer-Policy", "no-referrer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn get(extra: &str) -> Response {
        let raw = format!("GET /sdk.js HTTP/1.1\r\n{extra}\r\n");
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        answer(Asset::Sdk, &head, raw.as_bytes())
    }

    fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn serves_gzip_etag_and_304() {
        let plain = get("");
        assert_eq!(
            (plain.status, plain.body.as_slice()),
            (200, bytes(Asset::Sdk))
        );
        assert!(header(&plain, "Content-Encoding").is_none());
        let gz = get("Accept-Encoding: gzip, br\r\n");
        assert_eq!(header(&gz, "Content-Encoding"), Some("gzip"));
        assert!(gz.body.len() < bytes(Asset::Sdk).len());
        let mut d = flate2::read::GzDecoder::new(gz.body.as_slice());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).unwrap();
        assert_eq!(back, bytes(Asset::Sdk));
        let (e1, e2) = (
            header(&plain, "ETag").unwrap(),
            header(&gz, "ETag").unwrap(),
        );
        assert_ne!(e1, e2, "one tag per representation");
        let again = get(&format!("If-None-Match: \"x\", W/{e1}\r\n"));
        assert_eq!((again.status, again.body.len()), (304, 0));
        assert_eq!(get("If-None-Match: \"other\"\r\n").status, 200);
        assert_eq!(
            get(&format!("If-None-Match: {e1}\r\nAccept-Encoding: gzip\r\n")).status,
            200
        );
    }
}
