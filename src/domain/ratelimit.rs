//! Per-key rate limits as fixed one-minute windows: the counter lives in D1
//! (`store::keys::count_request`), the decision lives here.

pub const WINDOW_MS: i64 = 60_000;

pub fn window_start(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(WINDOW_MS)
}

#[derive(Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allow,
    /// 429 with `Retry-After` in whole seconds (at least 1).
    Limit { retry_after_secs: u32 },
}

pub fn decide(count_in_window: i64, limit_per_minute: i64, now_ms: i64) -> RateDecision {
    if limit_per_minute <= 0 || count_in_window <= limit_per_minute {
        return RateDecision::Allow;
    }
    let remaining_ms = window_start(now_ms) + WINDOW_MS - now_ms;
    RateDecision::Limit { retry_after_secs: ((remaining_ms + 999) / 1000).max(1) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit() {
        assert_eq!(decide(10, 10, 5_000), RateDecision::Allow);
    }

    #[test]
    fn limits_past_it_until_the_window_ends() {
        assert_eq!(decide(11, 10, 59_500), RateDecision::Limit { retry_after_secs: 1 });
        assert_eq!(decide(11, 10, 60_000 + 15_000), RateDecision::Limit { retry_after_secs: 45 });
    }

    #[test]
    fn zero_means_unlimited() {
        assert_eq!(decide(1_000_000, 0, 0), RateDecision::Allow);
    }
}
