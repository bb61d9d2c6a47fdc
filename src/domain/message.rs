//! What a stored message is: its status, its direction and its kind, as values. D1 keeps them
//! as strings; they become these enums at the store boundary and nowhere compares strings.

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// Where a message is in its life. Outbound: `pending_approval` → `queued` | `scheduled` →
    /// `sending` → `sent` → `delivered` | `bounced` | `complained`, or one of the ends
    /// `rejected`, `expired`, `cancelled`, `failed`. Inbound: `pending_approval` (held in a
    /// `gated_all` mailbox) → `received`, or `rejected` | `expired`.
    MessageStatus {
        PendingApproval = "pending_approval",
        Queued = "queued",
        Scheduled = "scheduled",
        Sending = "sending",
        Sent = "sent",
        Delivered = "delivered",
        Bounced = "bounced",
        Complained = "complained",
        Received = "received",
        Rejected = "rejected",
        Expired = "expired",
        Cancelled = "cancelled",
        Failed = "failed",
        /// Waiting while its mailbox or account is paused; released by a resume.
        Paused = "paused",
    }
}

string_enum! {
    Direction {
        Inbound = "inbound",
        Outbound = "outbound",
    }
}

string_enum! {
    /// `message`: the user's mail. `notification`: an approval request we send to an oversight
    /// address (ours, not the user's: no events, not in the inbox). `sign_in`: a console
    /// sign-in link we send to an operator (never visible to any API key).
    MessageKind {
        Message = "message",
        Notification = "notification",
        SignIn = "sign_in",
    }
}

impl MessageStatus {
    /// Inbound mail an agent may read: received, not held.
    pub fn is_visible_inbound(self) -> bool {
        self == MessageStatus::Received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_and_write_as_their_wire_names() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
        assert_eq!(serde_json::from_str::<MessageStatus>("\"pending_approval\"").unwrap(), MessageStatus::PendingApproval);
        assert!(MessageStatus::parse("Queued").is_none());
    }

    #[test]
    fn directions_and_kinds_round_trip() {
        assert_eq!(Direction::parse("inbound"), Some(Direction::Inbound));
        assert_eq!(MessageKind::Notification.as_str(), "notification");
        assert_eq!(serde_json::from_str::<MessageKind>("\"message\"").unwrap(), MessageKind::Message);
    }
}
