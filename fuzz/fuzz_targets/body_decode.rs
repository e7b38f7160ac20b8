//! gzip/zstd inflation with its bound, against a reference decode of the
//! same input that knows no bound: the output equals the reference's when
//! that fits the bound, `TooLarge` comes exactly when the real decompressed
//! size passes the bound, and never more than the bound (and the one byte
//! that proves it was passed) is held.
//!
//! The first byte picks the encoding (bit 0) and what the rest is (bit 1):
//! compressed bytes as they come, or the recipe of a body compressed here, so
//! that sizes within bytes of the bound and bombs far past it (128 times the
//! bound, gzip and zstd) are reached whatever the corpus holds.
#![no_main]

use std::io::{Read, Write};

use edge_http::body::{decode, BodyError};
use edge_http::Encoding;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;
/// How far the reference decode reads: past `MAX` the only question is
/// "more than `MAX`?", so the rest of a bomb would only cost the fuzzer time.
const REFERENCE_CAP: usize = 2 * MAX;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let encoding = if pick & 1 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Zstd
    };
    let made;
    let input = if pick & 2 == 0 {
        rest
    } else {
        made = compress(encoding, rest);
        &made[..]
    };

    let want = reference(encoding, input);
    let mut out = Vec::new();
    let got = decode(encoding, input, &mut out, MAX);
    // What a bomb can cost: the bound and the one byte that shows it passed.
    assert!(
        out.len() <= MAX + 1,
        "{} bytes held against a bound of {MAX}",
        out.len()
    );
    if want.bytes.len() > MAX {
        // More than the bound decompresses (before any error): too large.
        assert_eq!(
            got,
            Err(BodyError::TooLarge(MAX)),
            "{} bytes",
            want.bytes.len()
        );
        assert_eq!(out[..], want.bytes[..out.len()], "not a prefix of the body");
    } else if !want.ok {
        // Corrupt within the bound: refused as corrupt, never as too large.
        assert!(matches!(got, Err(BodyError::Corrupt(_))), "{got:?}");
    } else {
        // Fits: the very bytes.
        assert_eq!(got, Ok(()));
        assert_eq!(
            out, want.bytes,
            "the decoded body differs from the reference"
        );
    }
});

/// What the unbounded decoder made of the input: its bytes (the first
/// [`REFERENCE_CAP`] of them), and whether it ended cleanly (false on an
/// error before the end).
struct Reference {
    bytes: Vec<u8>,
    ok: bool,
}

/// The reference decode: the `bufread` gzip decoder and zstd's buffered
/// reader (not the code under test's), read until the end, an error or
/// [`REFERENCE_CAP`]. On an error, again one byte at a time: a decoder that
/// meets an error in the same call that produced bytes drops them, so only
/// one-byte reads count every byte before the error, as the code under test
/// (whose last reads ask for no more than is left to its bound) sees them.
fn reference(encoding: Encoding, input: &[u8]) -> Reference {
    let r = reference_in_steps(encoding, input, 4096, REFERENCE_CAP);
    if r.ok {
        r
    } else {
        reference_in_steps(encoding, input, 1, MAX + 1)
    }
}

fn reference_in_steps(encoding: Encoding, input: &[u8], step: usize, cap: usize) -> Reference {
    let mut reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        _ => match zstd::stream::read::Decoder::new(input) {
            Ok(d) => Box::new(d),
            Err(_) => {
                return Reference {
                    bytes: Vec::new(),
                    ok: false,
                }
            }
        },
    };
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; step];
    while bytes.len() < cap {
        match reader.read(&mut buf) {
            Ok(0) => return Reference { bytes, ok: true },
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Reference { bytes, ok: false },
        }
    }
    // Past the cap: more than the bound, whatever follows.
    Reference { bytes, ok: true }
}

/// A body made from a recipe: two bytes of length (in bytes, or in units of
/// 4 when the third byte is odd; for a quarter of the byte lengths, within
/// 32 bytes of the bound), then a pattern repeated to that length,
/// compressed as one stream (gzip member, zstd frame) and repeated: once,
/// twice, or up to 32 times by the third byte's upper bits, so a bomb of up
/// to 8 MiB (128 times the bound) costs the compression of one stream.
fn compress(encoding: Encoding, recipe: &[u8]) -> Vec<u8> {
    let [a, b, c, pattern @ ..] = recipe else {
        return Vec::new();
    };
    let n = usize::from(u16::from_le_bytes([*a, *b]));
    let len = match (c % 2, n % 4) {
        (0, 0) => MAX - 32 + n / 4 % 65,
        (0, _) => n,
        _ => n * 4,
    };
    let copies = match (c >> 1) % 4 {
        0 | 1 => 1,
        2 => 2,
        _ => 1 + usize::from(c >> 3),
    };
    let pattern: &[u8] = if pattern.is_empty() { b"0" } else { pattern };
    let body: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
    let mut one = Vec::new();
    match encoding {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(&mut one, flate2::Compression::fast());
            e.write_all(&body).unwrap();
            e.finish().unwrap();
        }
        _ => {
            let mut e = zstd::stream::write::Encoder::new(&mut one, 1).unwrap();
            e.write_all(&body).unwrap();
            e.finish().unwrap();
        }
    }
    one.repeat(copies)
}
