//! Domain errors: what went wrong in the product's own words, with no HTTP in them.
//! `crate::http::error` maps each variant to a status and a stable `code`. This module uses
//! nothing else of the domain (every other domain module may use it).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// A field is present but not acceptable (`field`, human message).
    Invalid { field: &'static str, message: String },
    /// A required field is missing.
    Missing { field: &'static str },
    /// The message would exceed what can be stored or delivered.
    MessageTooLarge { limit_bytes: usize, actual_bytes: usize },
    /// A key may not hold both `send` and `oversight`.
    ConflictingScopes,
    /// A send asked for a looser oversight mode than its mailbox has (the modes' names).
    OversightEscalation { mailbox: &'static str, requested: &'static str },
    /// The mailbox (or the request) is `read_only`: it cannot send.
    MailboxReadOnly,
    /// A key asked for a key with a scope it does not hold itself.
    ScopeEscalation { scope: &'static str },
    /// Only a human may do this (an `oversight` key, for one).
    OversightRequiresHuman,
    /// The change weakens live oversight: a test credential may not decide it.
    LiveOversightRequired,
    /// The operator's role does not allow this.
    RoleForbidden { needs: &'static str },
    /// A send that looks like the deployment's own approval request.
    ImitatesSystem { field: &'static str },
    /// `send_at` is more than 30 days ahead (a rule about the current time, which a schema
    /// cannot state: 422, not 400).
    SendAtTooFar,
    /// A reviewer's edits add recipients the message did not have (only an `owner` may).
    RecipientAdded { added: Vec<String> },
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid { field, message: message.into() }
    }

    pub fn field(&self) -> Option<&'static str> {
        match self {
            DomainError::Invalid { field, .. } | DomainError::Missing { field } => Some(field),
            DomainError::MessageTooLarge { .. } => None,
            DomainError::ConflictingScopes => Some("scopes"),
            DomainError::OversightEscalation { .. } => Some("oversight_mode"),
            DomainError::MailboxReadOnly | DomainError::LiveOversightRequired | DomainError::RoleForbidden { .. } => None,
            DomainError::ScopeEscalation { .. } | DomainError::OversightRequiresHuman => Some("scopes"),
            DomainError::ImitatesSystem { field } => Some(field),
            DomainError::RecipientAdded { .. } => Some("edits.to"),
            DomainError::SendAtTooFar => Some("send_at"),
        }
    }
}

impl std::fmt::Display for DomainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainError::Invalid { message, .. } => f.write_str(message),
            DomainError::Missing { field } => write!(f, "`{field}` is required"),
            DomainError::MessageTooLarge { limit_bytes, actual_bytes } => write!(
                f,
                "the message is {actual_bytes} bytes once encoded; the limit is {limit_bytes} bytes"
            ),
            DomainError::ConflictingScopes => f.write_str(
                "a key may not hold both `send` and `oversight`: an agent must not approve its own mail",
            ),
            DomainError::OversightEscalation { mailbox, requested } => write!(
                f,
                "this mailbox is `{mailbox}`; a request may ask for that or stricter, not `{requested}`"
            ),
            DomainError::MailboxReadOnly => f.write_str("this mailbox is read_only: it cannot send"),
            DomainError::ScopeEscalation { scope } => {
                write!(f, "a key may only create keys with scopes it holds itself; this key does not hold `{scope}`")
            }
            DomainError::OversightRequiresHuman => f.write_str(
                "oversight belongs to humans: an API key cannot create an oversight key; an operator creates one in the console, or the deployment operator with POST /admin/create_api_key",
            ),
            DomainError::LiveOversightRequired => f.write_str(
                "this change weakens oversight of live mail too: it must be decided with a live oversight key or in the console",
            ),
            DomainError::RoleForbidden { needs } => write!(f, "this needs an operator with the `{needs}` role"),
            DomainError::ImitatesSystem { .. } => f.write_str(
                "this message imitates MultiMail's own approval requests (its sender name or subject); choose another",
            ),
            DomainError::SendAtTooFar => f.write_str("send_at may be at most 30 days ahead"),
            DomainError::RecipientAdded { added } => write!(
                f,
                "edits may remove recipients, not add them (only an owner may): {} was not on the message",
                added.join(", ")
            ),
        }
    }
}
