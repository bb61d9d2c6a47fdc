//! Recipient rules: allow and block lists of addresses and domains, per mailbox or for the
//! whole account, for sending and for receiving. A send to a blocked recipient is refused; in a
//! gated mode, a send whose every recipient is allowed goes without a hold when the mailbox opts
//! in (`allowlist_bypass`). Inbound mail from a blocked sender is quarantined (held for a human
//! whatever the mode); in `gated_all`, mail from an allowed sender is let in unheld when the
//! mailbox opts in. Values in, verdicts out.

use super::address::EmailAddress;
use super::message::string_enum;

string_enum! {
    RuleAction {
        Allow = "allow",
        Block = "block",
    }
}

string_enum! {
    RuleDirection {
        Send = "send",
        Receive = "receive",
    }
}

/// A rule's pattern, normalised: an address (`ada@example.com`) or a domain (`example.com`,
/// which also covers its subdomains). `@example.com` is read as the domain.
pub fn normalize_pattern(raw: &str) -> Result<String, String> {
    let t = raw.trim().to_ascii_lowercase();
    let bad = || format!("`{raw}` is neither an email address nor a domain");
    if t.is_empty() || t.len() > 254 {
        return Err(bad());
    }
    if let Some(domain) = t.strip_prefix('@') {
        return domain_pattern(domain).ok_or_else(bad);
    }
    if t.contains('@') {
        return EmailAddress::parse(&t).map(|a| a.to_string().to_ascii_lowercase()).map_err(|_| bad());
    }
    domain_pattern(&t).ok_or_else(bad)
}

fn domain_pattern(d: &str) -> Option<String> {
    let ok = d.contains('.')
        && d.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-'));
    ok.then(|| d.to_string())
}

/// Whether a (normalised) pattern covers an address.
pub fn matches(pattern: &str, address: &str) -> bool {
    let a = address.trim().to_ascii_lowercase();
    if pattern.contains('@') {
        return a == pattern;
    }
    let domain = a.rsplit_once('@').map_or("", |(_, d)| d);
    domain == pattern || domain.ends_with(&format!(".{pattern}"))
}

/// What the rules say about one send's recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Recipients a block rule covers (an allow rule does not lift a block).
    pub blocked: Vec<String>,
    /// Every recipient is covered by an allow rule (and there is at least one).
    pub all_allowed: bool,
}

pub fn judge(rules: &[(RuleAction, String)], recipients: &[String]) -> Verdict {
    let covered = |action: RuleAction, r: &str| rules.iter().any(|(a, p)| *a == action && matches(p, r));
    let blocked: Vec<String> = recipients.iter().filter(|r| covered(RuleAction::Block, r)).cloned().collect();
    let all_allowed = !recipients.is_empty() && recipients.iter().all(|r| covered(RuleAction::Allow, r));
    Verdict { blocked, all_allowed }
}

/// What the receive rules say about inbound mail from `sender`: quarantine it (a block covers
/// the sender, or there is no sender to check against a block list), or let it in unheld in
/// `gated_all` (`bypass`: the mailbox opted in and an allow rule covers the sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Quarantine,
    Unheld,
    AsTheModeSays,
}

pub fn judge_inbound(rules: &[(RuleAction, String)], sender: Option<&str>, bypass: bool) -> Inbound {
    let Some(sender) = sender.filter(|s| !s.is_empty()) else {
        let has_block = rules.iter().any(|(a, _)| *a == RuleAction::Block);
        return if has_block { Inbound::Quarantine } else { Inbound::AsTheModeSays };
    };
    let v = judge(rules, &[sender.to_string()]);
    if !v.blocked.is_empty() {
        Inbound::Quarantine
    } else if bypass && v.all_allowed {
        Inbound::Unheld
    } else {
        Inbound::AsTheModeSays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_mail_from_a_blocked_sender_is_quarantined_and_an_allowed_one_passes_only_with_the_bypass() {
        let rules = vec![(RuleAction::Block, "spam.example".to_string()), (RuleAction::Allow, "partner.example".to_string())];
        assert_eq!(judge_inbound(&rules, Some("x@mail.spam.example"), true), Inbound::Quarantine);
        assert_eq!(judge_inbound(&rules, Some("ann@partner.example"), true), Inbound::Unheld);
        assert_eq!(judge_inbound(&rules, Some("ann@partner.example"), false), Inbound::AsTheModeSays);
        assert_eq!(judge_inbound(&rules, Some("bob@other.example"), true), Inbound::AsTheModeSays);
        // No sender to check: with a block list, quarantine; without one, the mode decides.
        assert_eq!(judge_inbound(&rules, None, true), Inbound::Quarantine);
        assert_eq!(judge_inbound(&rules[1..], None, true), Inbound::AsTheModeSays);
    }

    #[test]
    fn patterns_normalise_to_an_address_or_a_domain() {
        assert_eq!(normalize_pattern(" Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(normalize_pattern("@example.com").unwrap(), "example.com");
        assert_eq!(normalize_pattern("Partner.example").unwrap(), "partner.example");
        for bad in ["", "not a thing", "example", "-bad.example", "a@", "@", "x@y@z.com"] {
            assert!(normalize_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_cover_their_subdomains_and_addresses_only_themselves() {
        assert!(matches("example.com", "ada@example.com"));
        assert!(matches("example.com", "ada@mail.example.com"));
        assert!(!matches("example.com", "ada@badexample.com"));
        assert!(matches("ada@example.com", "ADA@example.com"));
        assert!(!matches("ada@example.com", "bob@example.com"));
    }

    #[test]
    fn a_block_wins_and_bypass_needs_every_recipient_allowed() {
        let rules = vec![(RuleAction::Allow, "partner.example".to_string()), (RuleAction::Block, "eve@partner.example".to_string())];
        let v = judge(&rules, &["ada@partner.example".into(), "eve@partner.example".into()]);
        assert_eq!(v.blocked, vec!["eve@partner.example".to_string()]);
        assert!(v.all_allowed, "allowed, yet blocked: the block refuses the send first");
        let v = judge(&rules, &["ada@partner.example".into(), "bob@other.example".into()]);
        assert!(v.blocked.is_empty() && !v.all_allowed);
        assert!(!judge(&rules, &[]).all_allowed);
    }
}
