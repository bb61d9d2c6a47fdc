//! Oversight modes, from most to least oversight: read_only > gated_all > gated_send >
//! monitored > autonomous. A request may ask for its mailbox's mode or a stricter one, never a
//! looser one. (The full approval flow arrives with the oversight issue.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversightMode {
    ReadOnly,
    GatedAll,
    GatedSend,
    Monitored,
    Autonomous,
}

impl OversightMode {
    pub const ALL: [OversightMode; 5] = [
        OversightMode::ReadOnly,
        OversightMode::GatedAll,
        OversightMode::GatedSend,
        OversightMode::Monitored,
        OversightMode::Autonomous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OversightMode::ReadOnly => "read_only",
            OversightMode::GatedAll => "gated_all",
            OversightMode::GatedSend => "gated_send",
            OversightMode::Monitored => "monitored",
            OversightMode::Autonomous => "autonomous",
        }
    }

    pub fn parse(s: &str) -> Option<OversightMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Higher is stricter.
    pub fn strictness(self) -> u8 {
        match self {
            OversightMode::ReadOnly => 4,
            OversightMode::GatedAll => 3,
            OversightMode::GatedSend => 2,
            OversightMode::Monitored => 1,
            OversightMode::Autonomous => 0,
        }
    }

    pub fn is_at_least_as_strict_as(self, other: OversightMode) -> bool {
        self.strictness() >= other.strictness()
    }

    /// Modes `create_mailbox` may set at once; looser ones need a human's approval.
    pub fn settable_without_approval(self) -> bool {
        self.strictness() >= OversightMode::GatedSend.strictness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_ordered_from_most_to_least_oversight() {
        let all = OversightMode::ALL;
        for pair in all.windows(2) {
            assert!(pair[0].strictness() > pair[1].strictness());
        }
    }

    #[test]
    fn parses_every_mode_by_name() {
        for m in OversightMode::ALL {
            assert_eq!(OversightMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(OversightMode::parse("yolo"), None);
    }

    #[test]
    fn only_gated_or_stricter_modes_apply_without_approval() {
        assert!(OversightMode::GatedSend.settable_without_approval());
        assert!(OversightMode::ReadOnly.settable_without_approval());
        assert!(!OversightMode::Monitored.settable_without_approval());
        assert!(!OversightMode::Autonomous.settable_without_approval());
    }
}
