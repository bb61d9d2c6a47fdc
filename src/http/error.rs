//! The one error type of the HTTP layer. Every failure becomes the contract's body
//! `{"error": {code, message, field, request_id}}`; anything unexpected becomes a logged 500
//! whose detail never reaches the client.

use serde_json::{json, Value};

use crate::domain::error::DomainError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u32>,
    /// Extra members of the error object (for example the winning decision of a race).
    pub extra: Option<Value>,
    /// The `Allow` header of a 405.
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after: None, extra: None, allow: None }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
    pub fn with_extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message).with_field(field)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "invalid_api_key", "the API key is missing, malformed, unknown or revoked")
    }
    pub fn forbidden_scope(scope: &str) -> Self {
        Self::new(403, "insufficient_scope", format!("this key lacks the `{scope}` scope"))
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("no such {what}"))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }
    pub fn internal() -> Self {
        Self::new(500, "internal_error", "something went wrong on our side; it has been logged")
    }

    /// 422 `recipient_suppressed`: `who` ("every recipient is") on the suppression list.
    pub fn recipient_suppressed(who: &str, suppressed: &[String], field: &str) -> Self {
        ApiError::unprocessable("recipient_suppressed", format!("{who} on this account's suppression list: {}", suppressed.join(", ")))
            .with_field(field)
            .with_extra(serde_json::json!({"suppressed": suppressed}))
    }

    /// 403 `recipient_blocked`: a recipient rule blocks these addresses.
    pub fn recipient_blocked(blocked: &[String], field: &str) -> Self {
        ApiError::new(403, "recipient_blocked", format!("a recipient rule blocks sending to {}", blocked.join(", ")))
            .with_field(field)
            .with_extra(serde_json::json!({"blocked": blocked}))
    }

    pub fn body(&self, request_id: &str) -> Value {
        let mut err = json!({
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "request_id": request_id,
        });
        if let (Some(Value::Object(extra)), Some(obj)) = (&self.extra, err.as_object_mut()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        json!({ "error": err })
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let field = e.field();
        let err = match &e {
            DomainError::Invalid { .. } | DomainError::Missing { .. } => ApiError::new(400, "invalid_request", e.to_string()),
            DomainError::MessageTooLarge { .. } => ApiError::new(413, "message_too_large", e.to_string()),
            DomainError::ConflictingScopes => ApiError::new(422, "conflicting_scopes", e.to_string()),
            DomainError::OversightEscalation { .. } => ApiError::new(403, "oversight_escalation", e.to_string()),
            DomainError::MailboxReadOnly => ApiError::new(403, "mailbox_read_only", e.to_string()),
            DomainError::ScopeEscalation { .. } => ApiError::new(403, "scope_escalation", e.to_string()),
            DomainError::OversightRequiresHuman => ApiError::new(403, "oversight_requires_human", e.to_string()),
            DomainError::LiveOversightRequired => ApiError::new(403, "live_oversight_required", e.to_string()),
            DomainError::RoleForbidden { .. } => ApiError::new(403, "role_forbidden", e.to_string()),
            DomainError::ImitatesSystem { .. } => ApiError::new(422, "imitates_system_notification", e.to_string()),
            DomainError::SendAtTooFar => ApiError::new(422, "send_at_too_far", e.to_string()),
            DomainError::RecipientAdded { added } => ApiError::new(403, "recipient_added", e.to_string()).with_extra(serde_json::json!({"added": added})),
        };
        match field {
            Some(f) => err.with_field(f),
            None => err,
        }
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        worker::console_error!("internal error: {e}");
        ApiError::internal()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
