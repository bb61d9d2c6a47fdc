//! Delivery to the email provider, as values: the stored `OutboundEmail`, the HTTP request each
//! provider's published API wants, what a provider's answer means (sent, retry, fail) and the
//! backoff between attempts. `crate::delivery` does the I/O.

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::send::ValidatedSend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Sandbox,
    Postmark,
    Resend,
    Cloudflare,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "" | "sandbox" => Some(Provider::Sandbox),
            "postmark" => Some(Provider::Postmark),
            "resend" => Some(Provider::Resend),
            "cloudflare" => Some(Provider::Cloudflare),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Sandbox => "sandbox",
            Provider::Postmark => "postmark",
            Provider::Resend => "resend",
            Provider::Cloudflare => "cloudflare",
        }
    }

    /// Test keys never leave the sandbox, whatever the deployment configures.
    pub fn for_mode(configured: Provider, livemode: bool) -> Provider {
        if livemode { configured } else { Provider::Sandbox }
    }

    /// The largest message the provider takes, as sent (attachments in base64), when it is
    /// smaller than ours (`MAX_LARGE_MESSAGE_BYTES`): Postmark takes 10 MB with attachments.
    /// Resend takes 40 MB after base64, Cloudflare Email Service 25 MiB.
    pub fn max_message_bytes(self) -> Option<usize> {
        match self {
            Provider::Postmark => Some(10_000_000),
            Provider::Resend | Provider::Sandbox | Provider::Cloudflare => None,
        }
    }

    /// Providers that deduplicate a repeated request themselves (so a lost claim is safe to retry).
    pub fn deduplicates(self) -> bool {
        matches!(self, Provider::Resend | Provider::Sandbox)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundAttachment {
    pub filename: String,
    pub content_type: String,
    /// Empty when the content is in the attachments bucket (`stored`).
    pub content_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredContent>,
}

/// Where an outbound attachment's content waits in the attachments bucket (a message too large
/// for one D1 row), with its size and SHA-256 to check it by when it is read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    pub key: String,
    pub size: usize,
    pub sha256: String,
    /// The type its bytes show (`attachments::sniff`), for a download.
    #[serde(default)]
    pub detected_type: Option<String>,
}

impl OutboundAttachment {
    /// The decoded size.
    pub fn size(&self) -> usize {
        let b64 = self.content_base64.trim_end();
        let padding = b64.bytes().rev().take_while(|c| *c == b'=').count().min(2);
        self.stored.as_ref().map_or((b64.len() / 4 * 3).saturating_sub(padding), |s| s.size)
    }
}

/// What the delivery consumer needs to hand a message to an API-based provider; stored as JSON
/// beside the MIME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundEmail {
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    #[serde(default)]
    pub reply_to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub attachments: Vec<OutboundAttachment>,
}

impl OutboundEmail {
    /// `in_bucket`: the attachments' contents go to the attachments bucket (`outbound_key`) and
    /// only their place, size and hash are kept here.
    pub fn from_validated(v: &ValidatedSend, message_id: &str, message_id_header: &str, in_bucket: bool) -> Self {
        let mut headers = v.headers.clone();
        headers.push(("Message-ID".into(), format!("<{message_id_header}>")));
        headers.push(("X-MultiMail-Message-Id".into(), message_id.to_string()));
        OutboundEmail {
            message_id: message_id.to_string(),
            from: v.from.to_string(),
            to: v.to.iter().map(ToString::to_string).collect(),
            cc: v.cc.iter().map(ToString::to_string).collect(),
            bcc: v.bcc.iter().map(ToString::to_string).collect(),
            reply_to: v.reply_to.iter().map(ToString::to_string).collect(),
            subject: v.subject.clone(),
            text: v.text.clone(),
            html: v.html.clone(),
            headers,
            attachments: v
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| OutboundAttachment {
                    filename: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    content_base64: if in_bucket { String::new() } else { STANDARD.encode(a.content.as_slice()) },
                    stored: in_bucket.then(|| StoredContent {
                        key: super::attachments::outbound_key(message_id, i),
                        size: a.content.len(),
                        sha256: super::attachments::sha256_hex(&a.content),
                        detected_type: Some(super::attachments::sniff(&a.content, &a.content_type)),
                    }),
                })
                .collect(),
        }
    }

    /// Whether some attachment's content is in the attachments bucket, not here.
    pub fn has_stored(&self) -> bool {
        self.attachments.iter().any(|a| a.stored.is_some())
    }
}

/// `body` (a JSON object) with `field` set to the attachments, written straight into the
/// string: a 25 MB attachment's base64 is copied once, not through a `serde_json::Value`.
/// `names`: the provider's keys for the file name, the content and the type.
fn with_attachments(body: &Value, field: &str, attachments: &[OutboundAttachment], names: [&str; 3]) -> String {
    let mut out = body.to_string();
    if attachments.is_empty() {
        return out;
    }
    let extra: usize = attachments.iter().map(|a| a.content_base64.len() + a.filename.len() * 2 + a.content_type.len() + 64).sum();
    out.reserve(extra + field.len() + 8);
    out.pop(); // the object's closing brace
    if !out.ends_with('{') {
        out.push(',');
    }
    let key = |out: &mut String, k: &str| {
        out.push_str(&Value::from(k).to_string());
        out.push(':');
    };
    key(&mut out, field);
    out.push('[');
    for (i, a) in attachments.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        key(&mut out, names[0]);
        out.push_str(&Value::from(a.filename.as_str()).to_string());
        out.push(',');
        key(&mut out, names[1]);
        // Base64 needs no JSON escaping.
        out.push('"');
        out.push_str(&a.content_base64);
        out.push('"');
        out.push(',');
        key(&mut out, names[2]);
        out.push_str(&Value::from(a.content_type.as_str()).to_string());
        out.push('}');
    }
    out.push_str("]}");
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Postmark's `POST /email` (https://postmarkapp.com/developer/api/email-api).
pub fn postmark_request(base_url: &str, server_token: &str, m: &OutboundEmail) -> ProviderRequest {
    let mut body = json!({
        "From": m.from,
        "To": m.to.join(", "),
        "Subject": m.subject,
        "MessageStream": "outbound",
        "Headers": m.headers.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        "Metadata": {"multimail_message_id": m.message_id},
    });
    let obj = body.as_object_mut().expect("object literal");
    if !m.cc.is_empty() { obj.insert("Cc".into(), json!(m.cc.join(", "))); }
    if !m.bcc.is_empty() { obj.insert("Bcc".into(), json!(m.bcc.join(", "))); }
    if !m.reply_to.is_empty() { obj.insert("ReplyTo".into(), json!(m.reply_to.join(", "))); }
    if let Some(t) = &m.text { obj.insert("TextBody".into(), json!(t)); }
    if let Some(h) = &m.html { obj.insert("HtmlBody".into(), json!(h)); }
    ProviderRequest {
        url: format!("{}/email", base_url.trim_end_matches('/')),
        headers: vec![
            ("Accept".into(), "application/json".into()),
            ("Content-Type".into(), "application/json".into()),
            ("X-Postmark-Server-Token".into(), server_token.into()),
        ],
        body: with_attachments(&body, "Attachments", &m.attachments, ["Name", "Content", "ContentType"]),
    }
}

/// Resend's `POST /emails` (the schema in shared/specs/resend.yaml), with the message id as the
/// `Idempotency-Key` so a repeated attempt is deduplicated by Resend.
pub fn resend_request(base_url: &str, api_key: &str, m: &OutboundEmail) -> ProviderRequest {
    let mut body = json!({"from": m.from, "to": m.to, "subject": m.subject});
    let obj = body.as_object_mut().expect("object literal");
    if !m.cc.is_empty() { obj.insert("cc".into(), json!(m.cc)); }
    if !m.bcc.is_empty() { obj.insert("bcc".into(), json!(m.bcc)); }
    if !m.reply_to.is_empty() { obj.insert("reply_to".into(), json!(m.reply_to)); }
    if let Some(t) = &m.text { obj.insert("text".into(), json!(t)); }
    if let Some(h) = &m.html { obj.insert("html".into(), json!(h)); }
    let headers: serde_json::Map<String, Value> = m.headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
    obj.insert("headers".into(), Value::Object(headers));
    ProviderRequest {
        url: format!("{}/emails", base_url.trim_end_matches('/')),
        headers: vec![
            ("Authorization".into(), format!("Bearer {api_key}")),
            ("Content-Type".into(), "application/json".into()),
            ("Idempotency-Key".into(), m.message_id.clone()),
        ],
        body: with_attachments(&body, "attachments", &m.attachments, ["filename", "content", "content_type"]),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    Sent { provider_message_id: String },
    /// Try again after `delay_secs` (network error, 429, 5xx).
    Retry { delay_secs: u32, reason: String },
    /// The provider refused the message for good.
    Fail { reason: String },
}

const MAX_REASON: usize = 300;

fn reason_from_body(provider: Provider, status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let detail = parsed
        .as_ref()
        .and_then(|v| match provider {
            Provider::Postmark => v.get("Message").and_then(Value::as_str).map(str::to_string),
            _ => v.get("message").and_then(Value::as_str).map(str::to_string),
        })
        .unwrap_or_else(|| body.chars().take(MAX_REASON).collect());
    let mut reason = format!("{} answered {status}: {detail}", provider.as_str());
    reason.truncate(MAX_REASON);
    reason
}

/// What an HTTP answer from a provider means. `attempt` is 1 for the first try.
pub fn classify_response(
    provider: Provider,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    attempt: u32,
    backoff_base_secs: u32,
) -> ProviderOutcome {
    if (200..300).contains(&status) {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let id = match provider {
            Provider::Postmark => {
                if v.get("ErrorCode").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    return ProviderOutcome::Fail { reason: reason_from_body(provider, status, body) };
                }
                v.get("MessageID").and_then(Value::as_str)
            }
            _ => v.get("id").and_then(Value::as_str),
        };
        return ProviderOutcome::Sent { provider_message_id: id.unwrap_or_default().to_string() };
    }
    if status == 429 || status >= 500 || status == 408 {
        let delay = retry_after
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or_else(|| backoff_secs(attempt, backoff_base_secs));
        return ProviderOutcome::Retry { delay_secs: delay.min(MAX_DELAY_SECS), reason: reason_from_body(provider, status, body) };
    }
    ProviderOutcome::Fail { reason: reason_from_body(provider, status, body) }
}

/// A provider call that got no answer (a timeout, a reset connection): the request may or may
/// not have been accepted. Where the provider drops a repeat of the same idempotency key it is
/// tried again; otherwise it fails, so that one message is never delivered twice (at most once;
/// the window is the calls that outlive `PROVIDER_TIMEOUT_SECONDS` or lose their connection).
pub fn unanswered(provider: Provider, attempt: u32, backoff_base_secs: u32, error: &str) -> ProviderOutcome {
    if provider.deduplicates() {
        ProviderOutcome::Retry { delay_secs: backoff_secs(attempt, backoff_base_secs), reason: format!("{} could not be reached: {error}", provider.as_str()) }
    } else {
        let mut reason = format!(
            "outcome_unknown: {} did not answer ({error}); it may have accepted the message, which is not tried again so it is never sent twice",
            provider.as_str()
        );
        reason.truncate(MAX_REASON);
        ProviderOutcome::Fail { reason }
    }
}

/// Cloudflare Queues delay a message by at most 12 hours per hop.
pub const MAX_DELAY_SECS: u32 = super::time::MAX_QUEUE_DELAY_SECS;
const MAX_BACKOFF_SECS: u32 = 60 * 60;

/// Exponential backoff: base, 2·base, 4·base, … capped at an hour.
pub fn backoff_secs(attempt: u32, base_secs: u32) -> u32 {
    let exp = attempt.saturating_sub(1).min(20);
    base_secs.max(1).saturating_mul(1u32 << exp).min(MAX_BACKOFF_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_call_is_retried_only_where_the_provider_drops_repeats() {
        assert!(matches!(unanswered(Provider::Resend, 1, 5, "timeout"), ProviderOutcome::Retry { delay_secs: 5, .. }));
        assert!(matches!(unanswered(Provider::Sandbox, 2, 5, "reset"), ProviderOutcome::Retry { delay_secs: 10, .. }));
        let ProviderOutcome::Fail { reason } = unanswered(Provider::Postmark, 1, 5, "The operation was aborted") else { panic!() };
        assert!(reason.starts_with("outcome_unknown: postmark did not answer"), "{reason}");
    }

    fn email() -> OutboundEmail {
        OutboundEmail {
            message_id: "msg_1".into(),
            from: "Agent <a@acme.multimail.test>".into(),
            to: vec!["b@example.com".into(), "c@example.com".into()],
            cc: vec![],
            bcc: vec!["oversight@acme.test".into()],
            reply_to: vec![],
            subject: "Hi".into(),
            text: Some("Hello".into()),
            html: None,
            headers: vec![("Message-ID".into(), "<msg_1@acme.multimail.test>".into())],
            attachments: vec![
                OutboundAttachment { filename: "a.txt".into(), content_type: "text/plain".into(), content_base64: "aGk=".into(), stored: None },
                OutboundAttachment { filename: "q\"u\\o.bin".into(), content_type: "application/octet-stream".into(), content_base64: "AAEC".into(), stored: None },
            ],
        }
    }

    #[test]
    fn attachments_are_written_into_the_body_as_json_with_every_other_field() {
        for (r, names) in [
            (postmark_request("http://x", "t", &email()), ["Attachments", "Name", "Content", "ContentType"]),
            (resend_request("http://x", "k", &email()), ["attachments", "filename", "content", "content_type"]),
        ] {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            let [list, name, content, ctype] = names;
            assert_eq!(v[list], json!([{name: "a.txt", content: "aGk=", ctype: "text/plain"}, {name: "q\"u\\o.bin", content: "AAEC", ctype: "application/octet-stream"}]));
            assert!(v.get("subject").or(v.get("Subject")).is_some(), "{}", r.body);
        }
        let mut none = email();
        none.attachments.clear();
        let v: Value = serde_json::from_str(&resend_request("http://x", "k", &none).body).unwrap();
        assert!(v.get("attachments").is_none());
    }

    #[test]
    fn a_large_message_keeps_where_its_attachments_are_not_their_bytes() {
        let v: crate::domain::send::SendEmailRequest = serde_json::from_value(json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "s", "text": "t",
            "attachments": [{"filename": "a.txt", "content_base64": "aGk="}]})).unwrap();
        let v = v.validate(0).unwrap();
        let e = OutboundEmail::from_validated(&v, "msg_1", "msg_1@acme.multimail.test", true);
        let a = &e.attachments[0];
        assert_eq!(a.content_base64, "");
        assert_eq!(a.stored, Some(StoredContent { key: "outbound/msg_1/0".into(), size: 2, sha256: "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4".into(), detected_type: Some("text/plain".into()) }));
        assert_eq!(a.size(), 2);
        assert!(e.has_stored());
        let inline = OutboundEmail::from_validated(&v, "msg_1", "msg_1@acme.multimail.test", false);
        assert_eq!((inline.attachments[0].content_base64.as_str(), inline.attachments[0].size(), inline.has_stored()), ("aGk=", 2, false));
    }

    #[test]
    fn only_postmark_takes_less_than_our_25_mb() {
        assert_eq!(Provider::Postmark.max_message_bytes(), Some(10_000_000));
        for p in [Provider::Resend, Provider::Sandbox, Provider::Cloudflare] {
            assert_eq!(p.max_message_bytes(), None);
        }
    }

    #[test]
    fn test_keys_always_use_the_sandbox() {
        assert_eq!(Provider::for_mode(Provider::Resend, false), Provider::Sandbox);
        assert_eq!(Provider::for_mode(Provider::Resend, true), Provider::Resend);
    }

    #[test]
    fn postmark_request_has_token_header_and_pascal_case_fields() {
        let r = postmark_request("http://127.0.0.1:9/", "pm-token", &email());
        assert_eq!(r.url, "http://127.0.0.1:9/email");
        assert!(r.headers.contains(&("X-Postmark-Server-Token".into(), "pm-token".into())));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["To"], "b@example.com, c@example.com");
        assert_eq!(v["Bcc"], "oversight@acme.test");
        assert_eq!(v["TextBody"], "Hello");
        assert_eq!(v["Attachments"][0]["Name"], "a.txt");
        assert!(v.get("HtmlBody").is_none());
    }

    #[test]
    fn resend_request_carries_idempotency_key_and_arrays() {
        let r = resend_request("https://api.resend.com", "re_x", &email());
        assert_eq!(r.url, "https://api.resend.com/emails");
        assert!(r.headers.contains(&("Idempotency-Key".into(), "msg_1".into())));
        assert!(r.headers.contains(&("Authorization".into(), "Bearer re_x".into())));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["to"], json!(["b@example.com", "c@example.com"]));
        assert_eq!(v["attachments"][0]["content"], "aGk=");
        assert_eq!(v["headers"]["Message-ID"], "<msg_1@acme.multimail.test>");
    }

    #[test]
    fn two_hundreds_are_sent_with_the_provider_id() {
        assert_eq!(
            classify_response(Provider::Resend, 200, None, r#"{"id":"re_123"}"#, 1, 5),
            ProviderOutcome::Sent { provider_message_id: "re_123".into() }
        );
        assert_eq!(
            classify_response(Provider::Postmark, 200, None, r#"{"ErrorCode":0,"MessageID":"pm-1"}"#, 1, 5),
            ProviderOutcome::Sent { provider_message_id: "pm-1".into() }
        );
    }

    #[test]
    fn server_errors_and_429_retry_honouring_retry_after() {
        assert!(matches!(classify_response(Provider::Resend, 500, None, "", 1, 5), ProviderOutcome::Retry { delay_secs: 5, .. }));
        assert!(matches!(classify_response(Provider::Resend, 503, None, "", 3, 5), ProviderOutcome::Retry { delay_secs: 20, .. }));
        assert!(matches!(classify_response(Provider::Postmark, 429, Some("42"), "", 1, 5), ProviderOutcome::Retry { delay_secs: 42, .. }));
    }

    #[test]
    fn other_client_errors_fail_at_once_with_the_providers_reason() {
        let out = classify_response(Provider::Postmark, 422, None, r#"{"ErrorCode":300,"Message":"Invalid 'To' address"}"#, 1, 5);
        assert_eq!(out, ProviderOutcome::Fail { reason: "postmark answered 422: Invalid 'To' address".into() });
        assert!(matches!(classify_response(Provider::Resend, 403, None, r#"{"message":"domain not verified"}"#, 1, 5), ProviderOutcome::Fail { .. }));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_secs(1, 5), 5);
        assert_eq!(backoff_secs(2, 5), 10);
        assert_eq!(backoff_secs(30, 5), 3600);
    }
}
