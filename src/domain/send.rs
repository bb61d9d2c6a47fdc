//! `send_email`'s request, parsed once into a `ValidatedSend` that cannot hold a header
//! injection, an invalid address, too many recipients or an empty body.

use std::sync::Arc;

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::address::{AddressError, Recipient};
use super::error::DomainError;
use super::oversight::OversightMode;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_HEADER_VALUE: usize = 998;
pub const MAX_HEADERS: usize = 50;
pub const MAX_ATTACHMENTS: usize = 20;
/// Encoded MIME kept within what one D1 row holds (2 MB), with room for the rest of the row:
/// the most a message may be when it is stored whole in D1, and the most its bodies may be.
pub const MAX_MESSAGE_BYTES: usize = 1_500_000;
/// The most a message may be as it is sent: its bodies and its attachments in base64, as
/// receiving servers count it (Gmail takes 25 MB so counted). Past `MAX_MESSAGE_BYTES` the
/// attachments live in the attachments bucket (R2), not in D1.
pub const MAX_LARGE_MESSAGE_BYTES: usize = 25_000_000;
pub const MAX_METADATA_BYTES: usize = 4_096;
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A string or a list of strings, as the seed and Resend both accept for recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: String,
    pub content_type: Option<String>,
    pub content_base64: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEmailRequest {
    pub from: Option<String>,
    pub to: Option<OneOrMany>,
    pub cc: Option<OneOrMany>,
    pub bcc: Option<OneOrMany>,
    pub reply_to: Option<OneOrMany>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub markdown: Option<String>,
    pub headers: Option<Map<String, Value>>,
    pub attachments: Option<Vec<AttachmentInput>>,
    pub oversight_mode: Option<String>,
    pub metadata: Option<Value>,
    pub send_at: Option<String>,
    pub approval_ttl: Option<Value>,
    /// `transactional` (default) or `marketing` (carries List-Unsubscribe; one recipient).
    pub category: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// Shared: a send is cloned on its way (suppressions, disclosure), its 25 MB are not.
    pub content: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSend {
    pub from: Recipient,
    pub to: Vec<Recipient>,
    pub cc: Vec<Recipient>,
    pub bcc: Vec<Recipient>,
    pub reply_to: Vec<Recipient>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    pub oversight_mode: Option<OversightMode>,
    pub metadata: Value,
    pub send_at: Option<i64>,
    /// How long a held message waits for a decision, in seconds (else the mailbox's).
    pub approval_ttl_secs: Option<i64>,
    pub marketing: bool,
}

fn recipients(field: &'static str, v: &Option<OneOrMany>) -> Result<Vec<Recipient>, DomainError> {
    let Some(v) = v else { return Ok(vec![]) };
    v.items()
        .into_iter()
        .map(|s| Recipient::parse(s).map_err(|AddressError(m)| DomainError::invalid(field, m)))
        .collect()
}

/// Headers a caller may set. Everything that names, routes, dates, identifies or signs the
/// message is ours to write.
pub fn header_allowed(name: &str) -> bool {
    const ALLOWED: &[&str] = &[
        "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post", "list-id",
        "precedence", "auto-submitted", "importance", "priority", "keywords", "comments",
    ];
    let lower = name.to_ascii_lowercase();
    let well_formed = !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    well_formed
        && (ALLOWED.contains(&lower.as_str())
            || (lower.starts_with("x-") && !lower.starts_with("x-multimail")))
}

fn validate_headers(headers: &Option<Map<String, Value>>) -> Result<Vec<(String, String)>, DomainError> {
    let Some(map) = headers else { return Ok(vec![]) };
    if map.len() > MAX_HEADERS {
        return Err(DomainError::invalid("headers", format!("at most {MAX_HEADERS} custom headers")));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        if !header_allowed(name) {
            return Err(DomainError::invalid(
                "headers",
                format!("`{name}` may not be set: custom headers are X-… (not X-MultiMail-…) or List-Unsubscribe, List-Id, References, In-Reply-To and a few others"),
            ));
        }
        let Value::String(value) = value else {
            return Err(DomainError::invalid("headers", format!("the value of `{name}` must be a string")));
        };
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(DomainError::invalid("headers", format!("the value of `{name}` may not contain CR, LF or other control characters")));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(DomainError::invalid("headers", format!("the value of `{name}` is longer than {MAX_HEADER_VALUE} characters")));
        }
        out.push((name.clone(), value.clone()));
    }
    Ok(out)
}

/// A send's JSON body without its attachments' contents (each `content_base64` left empty), and
/// those contents, borrowed in order: a 25 MB body is then parsed into a request without copying
/// its attachments, which `SendEmailRequest::validate_with` decodes straight from the body.
pub fn split_contents(body: &Value) -> (Value, Vec<&str>) {
    let Some(obj) = body.as_object() else { return (body.clone(), vec![]) };
    let mut light = Map::with_capacity(obj.len());
    let mut contents = vec![];
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("attachments", Value::Array(items)) => {
                let items = items
                    .iter()
                    .map(|item| match item.as_object() {
                        Some(a) => {
                            let mut a2 = Map::with_capacity(a.len());
                            for (ak, av) in a {
                                match (ak.as_str(), av) {
                                    ("content_base64", Value::String(c)) => {
                                        contents.push(c.as_str());
                                        a2.insert(ak.clone(), Value::String(String::new()));
                                    }
                                    _ => {
                                        a2.insert(ak.clone(), av.clone());
                                    }
                                }
                            }
                            Value::Object(a2)
                        }
                        None => item.clone(),
                    })
                    .collect();
                light.insert(k.clone(), Value::Array(items));
            }
            _ => {
                light.insert(k.clone(), v.clone());
            }
        }
    }
    (Value::Object(light), contents)
}

fn validate_attachments(items: &Option<Vec<AttachmentInput>>, contents: Option<&[&str]>) -> Result<Vec<Attachment>, DomainError> {
    let Some(items) = items else { return Ok(vec![]) };
    if items.len() > MAX_ATTACHMENTS {
        return Err(DomainError::invalid("attachments", format!("at most {MAX_ATTACHMENTS} attachments")));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(items.len());
    for (i, a) in items.iter().enumerate() {
        let content_base64 = contents.and_then(|c| c.get(i).copied()).unwrap_or(a.content_base64.as_str());
        if a.filename.is_empty() || a.filename.chars().count() > 255 || a.filename.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
            return Err(DomainError::invalid("attachments", "each attachment needs a filename of 1 to 255 characters, with no control characters or slashes"));
        }
        let content_type = match &a.content_type {
            None => "application/octet-stream".to_string(),
            Some(ct) => {
                let ok = ct.len() <= 127
                    && ct.split_once('/').is_some_and(|(t, s)| {
                        let tok = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
                        tok(t) && tok(s)
                    });
                if !ok {
                    return Err(DomainError::invalid("attachments", format!("`{ct}` is not a media type like application/pdf")));
                }
                ct.to_ascii_lowercase()
            }
        };
        // The encoded size is known before decoding: bail out early on an oversized upload.
        total += content_base64.len();
        if total > MAX_LARGE_MESSAGE_BYTES {
            return Err(DomainError::MessageTooLarge { limit_bytes: MAX_LARGE_MESSAGE_BYTES, actual_bytes: total });
        }
        let content = STANDARD.decode(content_base64.as_bytes()).map_err(|_| {
            DomainError::invalid("attachments", format!("the content of `{}` is not valid base64", a.filename))
        })?;
        out.push(Attachment { filename: a.filename.clone(), content_type, content: Arc::new(content) });
    }
    Ok(out)
}

/// Markdown to HTML (CommonMark with tables and strikethrough); raw HTML in the source is escaped.
pub fn render_markdown(md: &str) -> String {
    use pulldown_cmark::{html, Event, Options, Parser};
    let parser = Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|e| match e {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        other => other,
    });
    let mut out = String::with_capacity(md.len() * 3 / 2);
    html::push_html(&mut out, parser);
    out
}

/// Whether a send looks like one of the deployment's own notifications (an approval request
/// from "MultiMail oversight"): an agent must not be able to send a human a look-alike approval
/// request. The field that imitates, if any.
pub fn imitates_system(display_name: Option<&str>, subject: &str) -> Option<&'static str> {
    let squash = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    if display_name.is_some_and(|n| squash(n).contains("multimail")) {
        return Some("from");
    }
    let mut s = subject.trim();
    while let Some(rest) = s.get(..3).filter(|p| p.eq_ignore_ascii_case("re:") || p.eq_ignore_ascii_case("fw:")).map(|_| s[3..].trim_start()) {
        s = rest;
    }
    if squash(s).starts_with("approvalneeded") {
        return Some("subject");
    }
    None
}

impl SendEmailRequest {
    pub fn validate(&self, now_ms: i64) -> Result<ValidatedSend, DomainError> {
        self.validate_with(now_ms, None)
    }

    /// `validate`, with the attachments' base64 contents given apart (`split_contents`).
    pub fn validate_with(&self, now_ms: i64, contents: Option<&[&str]>) -> Result<ValidatedSend, DomainError> {
        let from_raw = self.from.as_deref().ok_or(DomainError::Missing { field: "from" })?;
        let from = Recipient::parse(from_raw).map_err(|AddressError(m)| DomainError::invalid("from", m))?;
        if self.to.is_none() {
            return Err(DomainError::Missing { field: "to" });
        }
        let to = recipients("to", &self.to)?;
        if to.is_empty() {
            return Err(DomainError::invalid("to", "at least one recipient is required"));
        }
        let cc = recipients("cc", &self.cc)?;
        let bcc = recipients("bcc", &self.bcc)?;
        let reply_to = recipients("reply_to", &self.reply_to)?;
        let count = to.len() + cc.len() + bcc.len();
        if count > MAX_RECIPIENTS {
            return Err(DomainError::invalid("to", format!("{count} recipients in to, cc and bcc; the limit is {MAX_RECIPIENTS}")));
        }

        let subject = self.subject.clone().ok_or(DomainError::Missing { field: "subject" })?;
        if subject.contains(['\r', '\n']) || subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(DomainError::invalid("subject", "the subject may not contain CR, LF or other control characters"));
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(DomainError::invalid("subject", format!("the subject may be at most {MAX_SUBJECT_CHARS} characters")));
        }
        if let Some(field) = imitates_system(from.name.as_deref(), &subject) {
            return Err(DomainError::ImitatesSystem { field });
        }

        if self.html.is_some() && self.markdown.is_some() {
            return Err(DomainError::invalid("markdown", "give `html` or `markdown`, not both"));
        }
        let html = match (&self.html, &self.markdown) {
            (Some(h), _) => Some(h.clone()),
            (None, Some(md)) => Some(render_markdown(md)),
            (None, None) => None,
        };
        // Markdown reads well as it is, so it doubles as the plain-text alternative.
        let text = self.text.clone().or_else(|| self.markdown.clone());
        if text.as_deref().unwrap_or("").is_empty() && html.as_deref().unwrap_or("").is_empty() {
            return Err(DomainError::invalid("text", "a message needs a body: one or more of `text`, `html`, `markdown`"));
        }
        let body_len = text.as_ref().map_or(0, String::len) + html.as_ref().map_or(0, String::len);
        if body_len > MAX_MESSAGE_BYTES {
            return Err(DomainError::MessageTooLarge { limit_bytes: MAX_MESSAGE_BYTES, actual_bytes: body_len });
        }

        let headers = validate_headers(&self.headers)?;
        let attachments = validate_attachments(&self.attachments, contents)?;

        let oversight_mode = match &self.oversight_mode {
            None => None,
            Some(m) => Some(OversightMode::parse(m).ok_or_else(|| {
                DomainError::invalid("oversight_mode", format!("`{m}` is not a mode (read_only, gated_all, gated_send, monitored, autonomous)"))
            })?),
        };

        let metadata = match &self.metadata {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(m)) => {
                let size = serde_json::to_string(m).map_or(usize::MAX, |s| s.len());
                if size > MAX_METADATA_BYTES {
                    return Err(DomainError::invalid("metadata", format!("metadata may be at most {MAX_METADATA_BYTES} bytes of JSON")));
                }
                Value::Object(m.clone())
            }
            Some(_) => return Err(DomainError::invalid("metadata", "metadata must be a JSON object")),
        };

        let send_at = match &self.send_at {
            None => None,
            Some(s) => {
                let at = super::time::parse_rfc3339(s)
                    .ok_or_else(|| DomainError::invalid("send_at", format!("`{s}` is not an RFC 3339 time such as 2026-12-01T09:00:00Z")))?;
                if at - now_ms > MAX_SCHEDULE_AHEAD_MS {
                    return Err(DomainError::SendAtTooFar);
                }
                // A time in the past means "now".
                (at > now_ms).then_some(at)
            }
        };

        let approval_ttl_secs = match &self.approval_ttl {
            None | Some(Value::Null) => None,
            Some(v) => Some(super::oversight::parse_ttl(v).map_err(|m| DomainError::invalid("approval_ttl", m))?),
        };

        let marketing = match self.category.as_deref() {
            None | Some("transactional") => false,
            Some("marketing") => true,
            Some(other) => return Err(DomainError::invalid("category", format!("`{other}` is not a category (transactional, marketing)"))),
        };
        if marketing && count != 1 {
            return Err(DomainError::invalid("to", "a marketing message goes to exactly one recipient, so its unsubscribe link can name who unsubscribes"));
        }
        if marketing && headers.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with("list-unsubscribe")) {
            return Err(DomainError::invalid("headers", "marketing messages get their List-Unsubscribe headers from us"));
        }

        let v = ValidatedSend {
            from, to, cc, bcc, reply_to, subject, text, html, headers, attachments,
            oversight_mode, metadata, send_at, approval_ttl_secs, marketing,
        };
        if v.encoded_size() > MAX_LARGE_MESSAGE_BYTES {
            return Err(DomainError::MessageTooLarge { limit_bytes: MAX_LARGE_MESSAGE_BYTES, actual_bytes: v.encoded_size() });
        }
        Ok(v)
    }
}

impl ValidatedSend {
    /// Whether the message, encoded, may be stored whole in D1 (`MAX_MESSAGE_BYTES`): its
    /// bodies and its attachments in base64 with room for headers. Larger messages keep their
    /// attachments in the attachments bucket.
    pub fn fits_inline(&self) -> bool {
        self.encoded_size() <= MAX_MESSAGE_BYTES
    }

    /// About its size as sent: the bodies, the attachments in base64 with line breaks and part
    /// headers, and room for the message's headers.
    pub fn encoded_size(&self) -> usize {
        let bodies = self.text.as_ref().map_or(0, String::len) + self.html.as_ref().map_or(0, String::len);
        let attachments: usize = self.attachments.iter().map(|a| a.content.len().div_ceil(3) * 4 * 78 / 76 + 512).sum();
        bodies + attachments + 16 * 1024
    }

    /// Every envelope recipient (to, cc and bcc).
    pub fn all_recipients(&self) -> impl Iterator<Item = &Recipient> {
        self.to.iter().chain(&self.cc).chain(&self.bcc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_look_alikes_of_system_notifications() {
        assert_eq!(imitates_system(Some("MultiMail oversight"), "Hello"), Some("from"));
        assert_eq!(imitates_system(Some("Multi-Mail Oversight"), "Hello"), Some("from"));
        assert_eq!(imitates_system(None, "Approval needed: wire transfer"), Some("subject"));
        assert_eq!(imitates_system(None, "RE: approval  needed: x"), Some("subject"));
        assert_eq!(imitates_system(Some("Ada"), "Your approval is needed"), None);
        assert_eq!(imitates_system(None, "Hello"), None);
    }
    use serde_json::json;

    const NOW: i64 = 1_764_000_000_000;

    fn req(v: Value) -> SendEmailRequest {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({"from": "agent@acme.multimail.test", "to": "ada@example.com", "subject": "Hi", "text": "Hello"})
    }

    fn with(field: &str, value: Value) -> SendEmailRequest {
        let mut b = base();
        b[field] = value;
        req(b)
    }

    fn field_of(r: SendEmailRequest) -> Option<&'static str> {
        r.validate(NOW).unwrap_err().field()
    }

    #[test]
    fn accepts_the_seed_shape() {
        let v = req(base()).validate(NOW).unwrap();
        assert_eq!(v.to[0].address.to_string(), "ada@example.com");
        assert_eq!(v.metadata, json!({}));
        assert_eq!(v.send_at, None);
    }

    #[test]
    fn accepts_lists_and_display_names() {
        let v = with("to", json!(["Ada <ada@example.com>", "bob@example.com"])).validate(NOW).unwrap();
        assert_eq!(v.to.len(), 2);
        assert_eq!(v.to[0].name.as_deref(), Some("Ada"));
    }

    #[test]
    fn rejects_crlf_in_the_subject() {
        assert_eq!(field_of(with("subject", json!("Hi\r\nBcc: victim@example.com"))), Some("subject"));
    }

    #[test]
    fn rejects_overlong_subjects() {
        assert_eq!(field_of(with("subject", json!("s".repeat(999)))), Some("subject"));
        assert!(with("subject", json!("s".repeat(998))).validate(NOW).is_ok());
    }

    #[test]
    fn rejects_51_recipients() {
        let many: Vec<String> = (0..51).map(|i| format!("r{i}@example.com")).collect();
        assert_eq!(field_of(with("to", json!(many))), Some("to"));
        let mut b = base();
        b["to"] = json!((0..30).map(|i| format!("t{i}@example.com")).collect::<Vec<_>>());
        b["bcc"] = json!((0..21).map(|i| format!("b{i}@example.com")).collect::<Vec<_>>());
        assert_eq!(field_of(req(b)), Some("to"));
    }

    #[test]
    fn rejects_malformed_recipients_naming_the_field() {
        assert_eq!(field_of(with("to", json!("not-an-address"))), Some("to"));
        assert_eq!(field_of(with("cc", json!(["ok@example.com", "bad@"]))), Some("cc"));
        assert_eq!(field_of(with("from", json!("nobody"))), Some("from"));
        assert_eq!(field_of(with("to", json!([]))), Some("to"));
    }

    #[test]
    fn requires_a_body() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("text");
        assert_eq!(field_of(req(b)), Some("text"));
    }

    #[test]
    fn renders_markdown_with_a_text_alternative() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("text");
        b["markdown"] = json!("# Hello\n\n**bold** <script>x</script>");
        let v = req(b).validate(NOW).unwrap();
        let html = v.html.unwrap();
        assert!(html.contains("<h1>Hello</h1>") && html.contains("<strong>bold</strong>"));
        assert!(!html.contains("<script>"), "raw HTML is escaped: {html}");
        assert!(v.text.unwrap().starts_with("# Hello"));
    }

    #[test]
    fn refuses_headers_that_override_ours() {
        for name in ["From", "to", "Subject", "Date", "Message-ID", "DKIM-Signature", "MultiMail-Identity", "X-MultiMail-Account", "Bcc", "Content-Type", "Bad Name"] {
            assert_eq!(field_of(with("headers", json!({ name: "x" }))), Some("headers"), "{name}");
        }
        let ok = with("headers", json!({"X-Campaign": "q4", "List-Unsubscribe": "<mailto:u@example.com>"})).validate(NOW).unwrap();
        assert_eq!(ok.headers.len(), 2);
    }

    #[test]
    fn refuses_header_injection_in_header_values() {
        assert_eq!(field_of(with("headers", json!({"X-A": "1\r\nBcc: x@evil.com"}))), Some("headers"));
    }

    #[test]
    fn decodes_attachments_and_checks_their_shape() {
        let v = with("attachments", json!([{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}])).validate(NOW).unwrap();
        assert_eq!(&*v.attachments[0].content, b"hi");
        assert_eq!(field_of(with("attachments", json!([{"filename": "a.txt", "content_base64": "***"}]))), Some("attachments"));
        assert_eq!(field_of(with("attachments", json!([{"filename": "../a", "content_base64": "aGk="}]))), Some("attachments"));
        assert_eq!(field_of(with("attachments", json!([{"filename": "a", "content_type": "nope", "content_base64": "aGk="}]))), Some("attachments"));
    }

    #[test]
    fn oversize_attachments_are_message_too_large() {
        let big = "A".repeat(MAX_LARGE_MESSAGE_BYTES + 4);
        let e = with("attachments", json!([{"filename": "big.bin", "content_base64": big}])).validate(NOW).unwrap_err();
        assert!(matches!(e, DomainError::MessageTooLarge { limit_bytes: MAX_LARGE_MESSAGE_BYTES, .. }));
    }

    #[test]
    fn the_limit_is_the_size_as_sent() {
        // 18.6 MB of attachment is 24.8 MB in base64, with its line breaks 25.2 MB: too large.
        let e = with("attachments", json!([{"filename": "a.bin", "content_base64": "A".repeat(24_800_000)}])).validate(NOW).unwrap_err();
        assert!(matches!(e, DomainError::MessageTooLarge { limit_bytes: MAX_LARGE_MESSAGE_BYTES, actual_bytes } if actual_bytes > MAX_LARGE_MESSAGE_BYTES), "{e:?}");
        let ok = with("attachments", json!([{"filename": "a.bin", "content_base64": "A".repeat(24_000_000)}])).validate(NOW).unwrap();
        assert!(ok.encoded_size() <= MAX_LARGE_MESSAGE_BYTES && !ok.fits_inline());
    }

    #[test]
    fn a_message_past_the_d1_row_keeps_its_attachments_apart() {
        let small = with("attachments", json!([{"filename": "a.bin", "content_base64": "A".repeat(800_000)}])).validate(NOW).unwrap();
        assert!(small.fits_inline(), "600 kB of attachment stays in D1");
        let large = with("attachments", json!([{"filename": "a.bin", "content_base64": "A".repeat(1_480_000)}])).validate(NOW).unwrap();
        assert!(!large.fits_inline(), "1.11 MB, over 1.5 MB in base64 with its line breaks and headers, does not");
        assert!(with("text", json!("x".repeat(1_400_000))).validate(NOW).unwrap().fits_inline());
    }

    #[test]
    fn contents_given_apart_are_the_contents_validated() {
        let body = json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "s", "text": "t",
            "attachments": [{"filename": "a.txt", "content_base64": "aGk="}, {"filename": "b.txt", "content_base64": "aG8="}]});
        let (light, contents) = split_contents(&body);
        assert_eq!(contents, vec!["aGk=", "aG8="]);
        assert_eq!(light["attachments"][1], json!({"filename": "b.txt", "content_base64": ""}));
        assert_eq!(light["subject"], "s");
        let v = req(light.clone()).validate_with(NOW, Some(&contents)).unwrap();
        assert_eq!(v, req(body).validate(NOW).unwrap());
        assert_eq!(field_of_with(req(light), &["***", "aG8="]), Some("attachments"));
    }

    fn field_of_with(r: SendEmailRequest, contents: &[&str]) -> Option<&'static str> {
        r.validate_with(NOW, Some(contents)).unwrap_err().field()
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert_eq!(field_of(with("metadata", json!([1, 2]))), Some("metadata"));
        assert_eq!(field_of(with("metadata", json!({"k": "v".repeat(5000)}))), Some("metadata"));
        assert_eq!(with("metadata", json!({"runId": "r1"})).validate(NOW).unwrap().metadata, json!({"runId": "r1"}));
    }

    #[test]
    fn send_at_is_rfc3339_and_at_most_30_days_ahead() {
        assert_eq!(field_of(with("send_at", json!("next tuesday"))), Some("send_at"));
        assert_eq!(field_of(with("send_at", json!("2026-01-30T00:00:00Z"))), Some("send_at"));
        let v = with("send_at", json!("2025-11-25T16:00:00Z")).validate(NOW).unwrap();
        assert_eq!(v.send_at, Some(NOW + 24 * 3600 * 1000));
        let past = with("send_at", json!("2020-01-01T00:00:00Z")).validate(NOW).unwrap();
        assert_eq!(past.send_at, None, "a past time sends now");
    }

    #[test]
    fn marketing_messages_have_exactly_one_recipient() {
        assert!(with("category", json!("marketing")).validate(NOW).unwrap().marketing);
        assert_eq!(field_of(with("category", json!("spam"))), Some("category"));
        let mut b = base();
        b["category"] = json!("marketing");
        b["cc"] = json!("c@example.com");
        assert_eq!(field_of(req(b)), Some("to"));
    }

    #[test]
    fn unknown_oversight_modes_are_rejected() {
        assert_eq!(field_of(with("oversight_mode", json!("yolo"))), Some("oversight_mode"));
        assert_eq!(with("oversight_mode", json!("gated_all")).validate(NOW).unwrap().oversight_mode, Some(OversightMode::GatedAll));
    }
}
