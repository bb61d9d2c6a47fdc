//! `send_batch`: many sends in one call. What is pure about it: its limits, its two modes, and
//! how rows are cut into statements that fit D1's limits.

use std::ops::Range;

use serde::Deserialize;

/// The most emails one batch may carry (Postmark's batch limit).
pub const MAX_ITEMS: usize = 500;
/// Distinct `from` addresses one batch may use (each costs three reads in its one round trip).
pub const MAX_SENDERS: usize = 50;
/// Messages per queue `sendBatch` (Cloudflare Queues takes at most 100).
pub const QUEUE_CHUNK: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// One refused item refuses the whole batch; nothing is stored.
    #[default]
    Strict,
    /// The acceptable items are sent; each refused one is reported with its error.
    Permissive,
}

impl BatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchMode::Strict => "strict",
            BatchMode::Permissive => "permissive",
        }
    }
}

/// Consecutive ranges of `sizes` with at most `max_items` items and at most `max_bytes` bytes
/// each (an item larger than `max_bytes` alone in its range). Empty input, no ranges.
pub fn chunks(sizes: &[usize], max_items: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = vec![];
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start >= max_items.max(1) || (i > start && bytes + size > max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_item_and_byte_limits() {
        assert_eq!(chunks(&[], 100, 10), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[1; 250], 100, 1_000), vec![0..100, 100..200, 200..250]);
        assert_eq!(chunks(&[4, 4, 4, 4], 100, 10), vec![0..2, 2..4], "two of 4 bytes fit in 10, three do not");
        assert_eq!(chunks(&[3, 50, 3], 100, 10), vec![0..1, 1..2, 2..3], "a big item goes alone");
        assert_eq!(chunks(&[50], 100, 10), vec![0..1]);
        let sizes: Vec<usize> = (0..500).map(|i| 1 + i % 7).collect();
        let got = chunks(&sizes, 100, 200);
        assert_eq!(got.first().unwrap().start, 0);
        assert_eq!(got.last().unwrap().end, 500);
        for w in got.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous");
        }
        for r in &got {
            assert!(r.len() <= 100 && sizes[r.clone()].iter().sum::<usize>() <= 200);
        }
    }

    #[test]
    fn the_mode_is_strict_unless_asked() {
        assert_eq!(BatchMode::default(), BatchMode::Strict);
        assert_eq!(serde_json::from_str::<BatchMode>("\"permissive\"").unwrap(), BatchMode::Permissive);
        assert!(serde_json::from_str::<BatchMode>("\"lenient\"").is_err());
    }
}
