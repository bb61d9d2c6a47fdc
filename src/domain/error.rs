//! Domain errors: what went wrong in the product's own words, with no HTTP in them.
//! `crate::http::error` maps each variant to a status and a stable `code`.

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
        }
    }
}
