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

/// Cloudflare Queues delay a message by at most 12 hours per hop; longer waits chain hops.
pub const MAX_QUEUE_DELAY_SECS: u32 = 12 * 3600;

/// The queue delay for the next hop toward `due_ms` (0 when due), at most `max_secs`: a
/// scheduled send or a retry further out than one hop is re-enqueued until it is due.
pub fn hop_delay_secs(due_ms: i64, now_ms: i64, max_secs: u32) -> u32 {
    let secs = ((due_ms - now_ms).max(0) + 999) / 1000;
    secs.min(i64::from(max_secs.min(MAX_QUEUE_DELAY_SECS))) as u32
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

    #[test]
    fn waits_hop_at_most_twelve_hours_or_a_shorter_hop() {
        let twelve = MAX_QUEUE_DELAY_SECS;
        assert_eq!(hop_delay_secs(10_000, 0, twelve), 10);
        assert_eq!(hop_delay_secs(30 * 24 * 3600 * 1000, 0, twelve), crate::domain::delivery::MAX_DELAY_SECS);
        assert_eq!(hop_delay_secs(20 * 3600 * 1000, 0, twelve), crate::domain::webhooks::MAX_HOP_SECS);
        assert_eq!(hop_delay_secs(0, 10_000, twelve), 0, "due: no delay");
        assert_eq!(hop_delay_secs(10_000, 0, 3), 3, "a shorter hop (tests)");
        assert_eq!(hop_delay_secs(20 * 3600 * 1000, 0, u32::MAX), twelve, "never past the queue's limit");
    }
}
