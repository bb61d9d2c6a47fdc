//! Who may do what: the trust boundary between agents and humans. An agent holds API keys;
//! oversight belongs to humans — the operators of an account (signed in to the console) and
//! the deployment operator (`ADMIN_TOKEN`). No key may mint a key that can do more than it
//! can, no key may mint an `oversight` key, and whatever weakens oversight waits for a human.

use super::error::DomainError;
use super::keys::{Scope, Scopes};
use super::message::string_enum;

string_enum! {
    /// What an operator of an account may do: an `owner` everything (and invites operators);
    /// an `approver` decides held mail and changes; a `viewer` only looks.
    Role {
        Owner = "owner",
        Approver = "approver",
        Viewer = "viewer",
    }
}

impl Role {
    /// The API scopes a role acts with in the console. Never `send`: humans decide, agents send.
    pub fn scopes(self) -> Scopes {
        let names: &[&str] = match self {
            Role::Owner => &["admin", "read", "oversight"],
            Role::Approver => &["read", "oversight"],
            Role::Viewer => &["read"],
        };
        Scopes::parse(names).expect("valid scopes")
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An API key: what an agent holds.
    Key { scopes: &'a Scopes, live: bool },
    /// A human of the account, signed in to the console.
    Operator { role: Role },
    /// The deployment's operator (`ADMIN_TOKEN`).
    Deployment,
}

impl Actor<'_> {
    /// A human: an operator, or the deployment operator. An `oversight` key is a human's
    /// credential too (only humans can mint one), but it decides; it does not change settings.
    pub fn is_human(&self) -> bool {
        !matches!(self, Actor::Key { .. })
    }
}

/// Whether `actor` may create a key with `requested` scopes.
pub fn may_mint_key(actor: Actor<'_>, requested: &Scopes) -> Result<(), DomainError> {
    match actor {
        Actor::Key { scopes, .. } => {
            if requested.has(Scope::Oversight) {
                return Err(DomainError::OversightRequiresHuman);
            }
            match Scope::ALL.into_iter().find(|s| requested.has(*s) && !scopes.has(*s)) {
                Some(extra) => Err(DomainError::ScopeEscalation { scope: extra.as_str() }),
                None => Ok(()),
            }
        }
        Actor::Operator { role: Role::Owner } | Actor::Deployment => Ok(()),
        Actor::Operator { .. } => Err(DomainError::RoleForbidden { needs: "owner" }),
    }
}

/// What a change that weakens oversight does when `actor` asks for it: a human's applies at
/// once (an owner's; other roles may not), an agent's opens a change a human must decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakening {
    ApplyNow,
    WaitForHuman,
}

pub fn weakening(actor: Actor<'_>) -> Result<Weakening, DomainError> {
    match actor {
        Actor::Key { .. } => Ok(Weakening::WaitForHuman),
        Actor::Operator { role: Role::Owner } | Actor::Deployment => Ok(Weakening::ApplyNow),
        Actor::Operator { .. } => Err(DomainError::RoleForbidden { needs: "owner" }),
    }
}

/// Whether `actor` may decide a held message (of its own mode: the lookup is scoped).
pub fn may_decide_message(actor: Actor<'_>) -> Result<(), DomainError> {
    match actor {
        Actor::Key { scopes, .. } if scopes.has(Scope::Oversight) => Ok(()),
        Actor::Key { .. } => Err(DomainError::OversightRequiresHuman),
        Actor::Operator { role: Role::Owner | Role::Approver } | Actor::Deployment => Ok(()),
        Actor::Operator { .. } => Err(DomainError::RoleForbidden { needs: "approver" }),
    }
}

/// Whether `actor` may decide a change that weakens oversight. Mailboxes, suppressions and
/// domains serve both modes, so such a change weakens live oversight: a test credential may
/// not decide it.
/// Who may pause sending (a tightening, effective for both modes at once): an `oversight` key
/// of either mode, or an operator who may decide mail.
pub fn may_pause(actor: Actor<'_>) -> Result<(), DomainError> {
    match actor {
        Actor::Key { scopes, .. } if scopes.has(Scope::Oversight) => Ok(()),
        other => may_decide_message(other),
    }
}

/// Resuming releases mail of both modes: a human decides it, as a change that weakens
/// oversight (a live `oversight` key, or an operator who may decide).
pub fn may_resume(actor: Actor<'_>) -> Result<(), DomainError> {
    may_decide_change(actor)
}

pub fn may_decide_change(actor: Actor<'_>) -> Result<(), DomainError> {
    match actor {
        Actor::Key { scopes, live } if scopes.has(Scope::Oversight) => {
            if live {
                Ok(())
            } else {
                Err(DomainError::LiveOversightRequired)
            }
        }
        other => may_decide_message(other),
    }
}

/// Whether `actor` may manage operators (invite, remove).
pub fn may_manage_operators(actor: Actor<'_>) -> Result<(), DomainError> {
    match actor {
        Actor::Operator { role: Role::Owner } | Actor::Deployment => Ok(()),
        _ => Err(DomainError::RoleForbidden { needs: "owner" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Scopes {
        Scopes::parse(s).unwrap()
    }

    #[test]
    fn no_key_mints_an_oversight_key() {
        let admin = scopes(&["admin", "send", "read"]);
        let ov = scopes(&["oversight"]);
        assert_eq!(may_mint_key(Actor::Key { scopes: &admin, live: true }, &ov), Err(DomainError::OversightRequiresHuman));
        // Not even an oversight key: oversight keys come from humans only.
        let human_key = scopes(&["oversight", "admin"]);
        assert_eq!(may_mint_key(Actor::Key { scopes: &human_key, live: true }, &ov), Err(DomainError::OversightRequiresHuman));
        assert_eq!(may_mint_key(Actor::Operator { role: Role::Owner }, &ov), Ok(()));
        assert_eq!(may_mint_key(Actor::Deployment, &ov), Ok(()));
    }

    #[test]
    fn a_key_mints_only_a_subset_of_its_scopes() {
        let admin_read = scopes(&["admin", "read"]);
        assert_eq!(may_mint_key(Actor::Key { scopes: &admin_read, live: true }, &scopes(&["read"])), Ok(()));
        assert_eq!(may_mint_key(Actor::Key { scopes: &admin_read, live: true }, &scopes(&["admin", "read"])), Ok(()));
        assert_eq!(
            may_mint_key(Actor::Key { scopes: &admin_read, live: true }, &scopes(&["read", "send"])),
            Err(DomainError::ScopeEscalation { scope: "send" })
        );
    }

    #[test]
    fn only_owners_among_operators_mint_keys() {
        assert_eq!(may_mint_key(Actor::Operator { role: Role::Approver }, &scopes(&["read"])), Err(DomainError::RoleForbidden { needs: "owner" }));
        assert!(may_mint_key(Actor::Operator { role: Role::Viewer }, &scopes(&["read"])).is_err());
    }

    #[test]
    fn an_agent_weakening_oversight_waits_for_a_human() {
        let admin = scopes(&["admin"]);
        assert_eq!(weakening(Actor::Key { scopes: &admin, live: true }), Ok(Weakening::WaitForHuman));
        assert_eq!(weakening(Actor::Operator { role: Role::Owner }), Ok(Weakening::ApplyNow));
        assert!(weakening(Actor::Operator { role: Role::Viewer }).is_err());
    }

    #[test]
    fn test_oversight_cannot_decide_a_change_that_weakens_live_oversight() {
        let ov = scopes(&["oversight"]);
        assert_eq!(may_decide_change(Actor::Key { scopes: &ov, live: false }), Err(DomainError::LiveOversightRequired));
        assert_eq!(may_decide_change(Actor::Key { scopes: &ov, live: true }), Ok(()));
        assert_eq!(may_decide_message(Actor::Key { scopes: &ov, live: false }), Ok(()), "test messages are test oversight's to decide");
    }

    #[test]
    fn viewers_look_and_approvers_decide() {
        assert!(may_decide_message(Actor::Operator { role: Role::Viewer }).is_err());
        assert_eq!(may_decide_message(Actor::Operator { role: Role::Approver }), Ok(()));
        assert_eq!(may_decide_change(Actor::Operator { role: Role::Approver }), Ok(()));
        assert!(may_manage_operators(Actor::Operator { role: Role::Approver }).is_err());
        let admin = scopes(&["admin"]);
        assert!(may_manage_operators(Actor::Key { scopes: &admin, live: true }).is_err());
    }
}
