//! Times on the wire are RFC 3339 UTC strings; inside they are milliseconds since the epoch.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp (any offset) into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// RFC 5322 `Date:` header value.
pub fn to_rfc2822(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_millis_and_z() {
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }

    #[test]
    fn parses_offsets_into_utc() {
        assert_eq!(parse_rfc3339("2025-11-24T17:00:00.123+01:00"), Some(1_764_000_000_123));
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
