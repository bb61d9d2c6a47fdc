//! Changes that weaken oversight, other than a looser mode (`oversight::request_mode`): what
//! they are, as values. Whether one applies at once or waits for a human is
//! `authority::weakening`.

use super::message::string_enum;

string_enum! {
    ChangeKind {
        /// A mailbox's oversight address (where approval requests and `monitored` copies go).
        OversightEmail = "oversight_email",
        /// Taking an address off the suppression list.
        RemoveSuppression = "remove_suppression",
        /// Deleting a verified sending domain.
        DeleteDomain = "delete_domain",
        /// A looser pre-send scan on a mailbox (`hold` → `off`, `block` → `hold` or `off`).
        ScanPolicy = "scan_policy",
        /// Less AI disclosure on a mailbox (`footer` → `header` or `none`, `header` → `none`).
        AiDisclosure = "ai_disclosure",
        /// An allow rule for recipients (what a gated mailbox with `allowlist_bypass` sends unheld).
        AllowRule = "allow_rule",
        /// Removing a block rule for recipients.
        RemoveBlockRule = "remove_block_rule",
        /// Turning on a mailbox's `allowlist_bypass`.
        AllowlistBypass = "allowlist_bypass",
        /// An allow rule for senders (what a `gated_all` mailbox with `allowlist_bypass` lets in unheld).
        AllowReceiveRule = "allow_receive_rule",
    }
}

impl ChangeKind {
    /// What the change does, for the person who decides it.
    pub fn describe(self, subject: &str, value: Option<&str>) -> String {
        match self {
            ChangeKind::OversightEmail => format!("send approval requests for mailbox {subject} to {}", value.unwrap_or("the account owner")),
            ChangeKind::RemoveSuppression => format!("send to {subject} again (remove it from the suppression list)"),
            ChangeKind::DeleteDomain => format!("delete the verified sending domain {}", value.unwrap_or(subject)),
            ChangeKind::ScanPolicy => format!("set the pre-send scan of mailbox {subject} to {}", value.unwrap_or("hold")),
            ChangeKind::AiDisclosure => format!("set the AI disclosure of mailbox {subject} to {}", value.unwrap_or("none")),
            ChangeKind::AllowRule => format!("allow sending to {subject} ({})", value.map_or("every mailbox".to_string(), |m| format!("mailbox {m}"))),
            ChangeKind::RemoveBlockRule => format!("remove the block on {} (rule {subject})", value.unwrap_or("?")),
            ChangeKind::AllowlistBypass => format!("let mailbox {subject} send to allow-listed recipients, and receive from allow-listed senders, without a hold"),
            ChangeKind::AllowReceiveRule => format!("allow mail from {subject} ({})", value.map_or("every mailbox".to_string(), |m| format!("mailbox {m}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_as_their_wire_names_and_describe_themselves() {
        assert_eq!(ChangeKind::parse("oversight_email"), Some(ChangeKind::OversightEmail));
        assert!(ChangeKind::RemoveSuppression.describe("a@example.com", None).contains("a@example.com"));
        assert!(ChangeKind::OversightEmail.describe("mbx_1", Some("boss@example.com")).contains("boss@example.com"));
    }
}
