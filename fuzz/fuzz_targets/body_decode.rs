//! gzip/zstd inflation with its bound: never more than the bound comes out,
//! whatever goes in (bombs included).
#![no_main]

use edge_http::body::{decode, BodyError};
use edge_http::Encoding;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let encoding = if pick % 2 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Zstd
    };
    let mut out = Vec::new();
    match decode(encoding, input, &mut out, MAX) {
        Ok(()) => assert!(out.len() <= MAX),
        Err(BodyError::TooLarge(n)) => assert_eq!(n, MAX),
        Err(_) => {}
    }
});
