//! The browser SDK, served at `/sdk.js` and `/sdk/v1.js`.
//!
//! The file is built from `sdk/` by esbuild and committed (`sdk/dist/sdk.js`);
//! it is embedded here at compile time, so building the engine never needs
//! node, and the test suite fails when the committed file is stale. It is
//! gzipped once, on first use, and served with a strong `ETag` per
//! representation, so a revalidating browser gets `304`.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::http::{RequestHead, Response};

/// The built SDK.
pub static SDK_JS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../sdk/dist/sdk.js"
));

/// How long browsers may use their copy before revalidating, in seconds:
/// an engine upgrade reaches every page within this time.
pub const SDK_MAX_AGE_SECS: u32 = 3600;

struct Asset {
    gzip: Vec<u8>,
    etag: String,
    etag_gzip: String,
}

fn asset() -> &'static Asset {
    static ASSET: OnceLock<Asset> = OnceLock::new();
    ASSET.get_or_init(|| {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(SDK_JS);
        let gzip = enc.finish().unwrap_or_default();
        let digest = Sha256::digest(SDK_JS);
        let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            gzip,
            etag: format!("\"{tag}\""),
            etag_gzip: format!("\"{tag}-gz\""),
        }
    })
}

/// The gzip size of the served SDK, in bytes.
pub fn gzip_len() -> usize {
    asset().gzip.len()
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, RFC 9110
/// §13.1.2, as required for `If-None-Match`).
fn none_match(header: &[u8], etag: &str) -> bool {
    header.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
    })
}

/// The answer to `GET`/`HEAD` of the SDK.
pub fn answer(head: &RequestHead, buf: &[u8]) -> Response {
    let a = asset();
    let gzip = head.accepts_gzip && !a.gzip.is_empty();
    let etag = if gzip { &a.etag_gzip } else { &a.etag };
    let cached = head
        .if_none_match
        .clone()
        .is_some_and(|r| none_match(&buf[r], etag));
    let resp = if cached {
        Response::empty(304)
    } else if gzip {
        Response::text(200, "text/javascript; charset=utf-8", a.gzip.clone())
            .header("Content-Encoding", "gzip")
    } else {
        Response::text(200, "text/javascript; charset=utf-8", SDK_JS.to_vec())
    };
    resp.header("ETag", etag.clone())
        .header(
            "Cache-Control",
            format!("public, max-age={SDK_MAX_AGE_SECS}"),
        )
        .header("Vary", "Accept-Encoding")
        // Lets pages load it with `crossorigin` (subresource integrity).
        .header("Access-Control-Allow-Origin", "*")
        .header("X-Content-Type-Options", "nosniff")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn get(extra: &str) -> Response {
        let raw = format!("GET /sdk.js HTTP/1.1\r\n{extra}\r\n");
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        answer(&head, raw.as_bytes())
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
        assert_eq!((plain.status, plain.body.as_slice()), (200, SDK_JS));
        assert!(header(&plain, "Content-Encoding").is_none());
        let gz = get("Accept-Encoding: gzip, br\r\n");
        assert_eq!(header(&gz, "Content-Encoding"), Some("gzip"));
        assert!(gz.body.len() < SDK_JS.len());
        let mut d = flate2::read::GzDecoder::new(gz.body.as_slice());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).unwrap();
        assert_eq!(back, SDK_JS);
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
