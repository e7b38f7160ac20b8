//! Request body decoding: gzip and zstd, bounded.
//!
//! The decompressed size is capped at `http.max_decompressed_bytes`: the
//! decoder reads at most one byte past the cap, so a decompression bomb costs
//! at most the cap in memory before it is refused with 413.

use std::io::Read;

use crate::Encoding;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("body is not valid {0}")]
    Corrupt(&'static str),
}

/// Decodes `input` into `out` (cleared first). Identity bodies are not copied:
/// callers parse them in place and never call this.
pub fn decode(
    encoding: Encoding,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), BodyError> {
    out.clear();
    let limit = max as u64 + 1;
    let res = match encoding {
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(input)
            .take(limit)
            .read_to_end(out),
        Encoding::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(d) => d.take(limit).read_to_end(out),
            Err(_) => return Err(BodyError::Corrupt("zstd")),
        },
        Encoding::Identity | Encoding::Unsupported => {
            out.extend_from_slice(input);
            Ok(input.len())
        }
    };
    match res {
        Ok(_) if out.len() > max => Err(BodyError::TooLarge(max)),
        Ok(_) => Ok(()),
        Err(_) => Err(BodyError::Corrupt(match encoding {
            Encoding::Zstd => "zstd",
            _ => "gzip",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_and_bounds() {
        let data = br#"{"events":[]}"#;
        let mut out = Vec::new();
        decode(Encoding::Gzip, &gzip(data), &mut out, 100).unwrap();
        assert_eq!(out, data);
        decode(
            Encoding::Zstd,
            &zstd::encode_all(&data[..], 3).unwrap(),
            &mut out,
            100,
        )
        .unwrap();
        assert_eq!(out, data);
        let bomb = gzip(&vec![b'a'; 10 * 1024 * 1024]);
        assert_eq!(
            decode(Encoding::Gzip, &bomb, &mut out, 1024),
            Err(BodyError::TooLarge(1024))
        );
        assert!(out.len() <= 1025);
        assert_eq!(
            decode(Encoding::Gzip, b"nope", &mut out, 10),
            Err(BodyError::Corrupt("gzip"))
        );
        assert_eq!(
            decode(Encoding::Zstd, b"nope", &mut out, 10),
            Err(BodyError::Corrupt("zstd"))
        );
    }
}
