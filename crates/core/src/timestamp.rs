//! RFC 3339 timestamps as microseconds since the Unix epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses an RFC 3339 timestamp (`2024-01-01T00:00:00Z`, offsets and fractions
/// allowed) into microseconds since the epoch. Allocates nothing.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

/// Formats microseconds since the epoch as RFC 3339 in UTC.
pub fn format_rfc3339_us(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zulu_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_rfc3339_us("1970-01-01T01:00:01.5+01:00"),
            Some(1_500_000)
        );
        assert_eq!(
            parse_rfc3339_us("2024-01-01T00:00:00Z"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(parse_rfc3339_us("2024-01-01 00:00:00"), None);
        assert_eq!(parse_rfc3339_us("yesterday"), None);
        assert_eq!(parse_rfc3339_us(""), None);
    }

    #[test]
    fn formats_back() {
        assert_eq!(
            format_rfc3339_us(1_704_067_200_000_000),
            "2024-01-01T00:00:00Z"
        );
    }
}
