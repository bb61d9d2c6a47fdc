//! Oversight modes, from most to least oversight: read_only > gated_all > gated_send >
//! monitored > autonomous. A request may ask for its mailbox's mode or a stricter one, never a
//! looser one. Held messages are decided through `approval` (the state machine) and its
//! Durable Object.

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::message::string_enum;

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

    /// Outbound mail in this mode waits for a human.
    pub fn holds_outbound(self) -> bool {
        matches!(self, OversightMode::GatedAll | OversightMode::GatedSend)
    }
}

/// The mode a send runs under: the request's, which may only be the mailbox's or stricter; a
/// `read_only` result cannot send at all.
pub fn effective_mode(mailbox: OversightMode, requested: Option<OversightMode>) -> Result<OversightMode, DomainError> {
    let mode = match requested {
        None => mailbox,
        Some(r) if r.is_at_least_as_strict_as(mailbox) => r,
        Some(r) => return Err(DomainError::OversightEscalation { mailbox: mailbox.as_str(), requested: r.as_str() }),
    };
    if mode == OversightMode::ReadOnly {
        return Err(DomainError::MailboxReadOnly);
    }
    Ok(mode)
}

/// What asking a mailbox for another mode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeRequest {
    /// The mode it already has: nothing changes (a waiting change stays waiting).
    Same,
    /// Stricter: applies at once, and retires any looser change still waiting.
    Tighten { from: OversightMode, to: OversightMode },
    /// Looser: a mode change that a human must approve; it supersedes one still waiting.
    Loosen { from: OversightMode, to: OversightMode },
}

pub fn request_mode(current: OversightMode, to: OversightMode) -> ModeRequest {
    if to == current {
        ModeRequest::Same
    } else if to.is_at_least_as_strict_as(current) {
        ModeRequest::Tighten { from: current, to }
    } else {
        ModeRequest::Loosen { from: current, to }
    }
}

/// The mode a new mailbox starts in, and the change a human must approve when it asked for a
/// looser one (it starts `gated_send` until then).
pub fn initial_mode(requested: OversightMode) -> (OversightMode, Option<OversightMode>) {
    if requested.settable_without_approval() {
        (requested, None)
    } else {
        (OversightMode::GatedSend, Some(requested))
    }
}

string_enum! {
    /// A mode change's life: `pending` → `approved` | `rejected`, or `superseded` by a newer
    /// request or a tightening.
    ChangeStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Superseded = "superseded",
    }
}

impl std::fmt::Display for OversightMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const MIN_TTL_SECS: i64 = 1;
const MAX_TTL_SECS: i64 = 30 * 24 * 3600;

/// `approval_ttl`: whole seconds, or a string such as `"90m"`, `"48h"`, `"7d"`.
pub fn parse_ttl(v: &serde_json::Value) -> Result<i64, String> {
    let secs = match v {
        // `5851.0` is a whole number too (JSON Schema's `integer` admits it).
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64))
            .ok_or("`approval_ttl` must be a whole number of seconds")?,
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: i64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 3600, \"90m\", \"48h\" or \"7d\""))?;
            let mult = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("`{s}` is not a duration like 3600, \"90m\", \"48h\" or \"7d\"")),
            };
            n.saturating_mul(mult)
        }
        _ => return Err("`approval_ttl` must be seconds or a duration string".into()),
    };
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) {
        return Err(format!("`approval_ttl` must be between {MIN_TTL_SECS} seconds and 30 days"));
    }
    Ok(secs)
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn a_whole_number_written_with_a_fraction_is_a_ttl() {
        assert_eq!(parse_ttl(&serde_json::json!(5851.0)), Ok(5851));
        assert!(parse_ttl(&serde_json::json!(5851.5)).is_err());
        assert_eq!(parse_ttl(&serde_json::json!("90m")), Ok(5400));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn rejects_send_looser_than_mailbox_mode() {
        assert_eq!(
            effective_mode(OversightMode::GatedSend, Some(OversightMode::Autonomous)),
            Err(DomainError::OversightEscalation { mailbox: "gated_send", requested: "autonomous" })
        );
    }

    #[test]
    fn allows_the_mailbox_mode_or_stricter() {
        assert_eq!(effective_mode(OversightMode::Autonomous, Some(OversightMode::GatedAll)), Ok(OversightMode::GatedAll));
        assert_eq!(effective_mode(OversightMode::Monitored, None), Ok(OversightMode::Monitored));
    }

    #[test]
    fn read_only_refuses_sends() {
        assert_eq!(effective_mode(OversightMode::ReadOnly, None), Err(DomainError::MailboxReadOnly));
        assert_eq!(effective_mode(OversightMode::Autonomous, Some(OversightMode::ReadOnly)), Err(DomainError::MailboxReadOnly));
    }

    #[test]
    fn stricter_modes_apply_at_once_and_looser_ones_wait_for_a_human() {
        use OversightMode::*;
        assert_eq!(request_mode(GatedSend, GatedSend), ModeRequest::Same);
        assert_eq!(request_mode(Autonomous, GatedAll), ModeRequest::Tighten { from: Autonomous, to: GatedAll });
        assert_eq!(request_mode(GatedAll, Monitored), ModeRequest::Loosen { from: GatedAll, to: Monitored });
        for from in OversightMode::ALL {
            for to in OversightMode::ALL {
                let loosens = matches!(request_mode(from, to), ModeRequest::Loosen { .. });
                assert_eq!(loosens, to.strictness() < from.strictness(), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn a_new_mailbox_asking_for_a_loose_mode_starts_gated_send() {
        assert_eq!(initial_mode(OversightMode::GatedAll), (OversightMode::GatedAll, None));
        assert_eq!(initial_mode(OversightMode::Autonomous), (OversightMode::GatedSend, Some(OversightMode::Autonomous)));
    }

    #[test]
    fn ttl_accepts_seconds_and_unit_strings() {
        assert_eq!(parse_ttl(&json!(3600)), Ok(3600));
        assert_eq!(parse_ttl(&json!("48h")), Ok(48 * 3600));
        assert_eq!(parse_ttl(&json!("90m")), Ok(5400));
        assert_eq!(parse_ttl(&json!("7d")), Ok(7 * 86400));
    }

    #[test]
    fn ttl_rejects_nonsense_and_out_of_range() {
        assert!(parse_ttl(&json!("soon")).is_err());
        assert!(parse_ttl(&json!(0)).is_err());
        assert!(parse_ttl(&json!("31d")).is_err());
        assert!(parse_ttl(&json!(1.5)).is_err());
        assert!(parse_ttl(&json!(true)).is_err());
    }
}
