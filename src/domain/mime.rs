//! Builds the RFC 5322 message once (with `mail-builder`): multipart/alternative for text and
//! HTML, multipart/mixed around attachments, encoded words and line lengths handled by the crate.
//! Bcc never appears in the headers; it is envelope only. Multipart boundaries are derived from
//! the message id here: mail-builder's own generator reads the system clock, which traps on wasm32.

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use super::address::Recipient;
use super::error::DomainError;
use super::send::{ValidatedSend, MAX_MESSAGE_BYTES};

fn addr(r: &Recipient) -> Address<'static> {
    Address::new_address(r.name.clone(), r.address.to_string())
}

fn list(rs: &[Recipient]) -> Address<'static> {
    Address::new_list(rs.iter().map(addr).collect())
}

/// `<msg_…@domain>` without the angle brackets, as mail-builder wants it.
pub fn message_id_header(message_id: &str, domain: &str) -> String {
    format!("{message_id}@{domain}")
}

fn multipart<'a>(kind: &str, message_id: &str, parts: Vec<MimePart<'a>>) -> MimePart<'a> {
    let boundary = format!("=_mm_{kind}_{message_id}");
    MimePart::new(ContentType::new(format!("multipart/{kind}")).attribute("boundary", boundary), BodyPart::Multipart(parts))
}

/// text | html | alternative(text, html), wrapped in mixed(…, attachments) when there are any.
fn body_tree<'a>(msg: &'a ValidatedSend, message_id: &str) -> MimePart<'a> {
    let text = msg.text.clone().map(|t| MimePart::new("text/plain", BodyPart::Text(t.into())));
    let html = msg.html.clone().map(|h| MimePart::new("text/html", BodyPart::Text(h.into())));
    let content = match (text, html) {
        (Some(t), Some(h)) => multipart("alternative", message_id, vec![t, h]),
        (Some(t), None) => t,
        (None, Some(h)) => h,
        (None, None) => MimePart::new("text/plain", BodyPart::Text("".into())),
    };
    if msg.attachments.is_empty() {
        return content;
    }
    let mut parts = vec![content];
    for a in &msg.attachments {
        parts.push(MimePart::new(ContentType::new(a.content_type.clone()), BodyPart::Binary(a.content.as_slice().into())).attachment(a.filename.clone()));
    }
    multipart("mixed", message_id, parts)
}

/// The message, at most `MAX_MESSAGE_BYTES` (what D1 stores whole).
pub fn build(msg: &ValidatedSend, message_id: &str, date_ms: i64) -> Result<Vec<u8>, DomainError> {
    build_at_most(msg, message_id, date_ms, MAX_MESSAGE_BYTES)
}

/// The message, at most `limit` bytes.
pub fn build_at_most(msg: &ValidatedSend, message_id: &str, date_ms: i64, limit: usize) -> Result<Vec<u8>, DomainError> {
    let mut b = MessageBuilder::new()
        .message_id(message_id_header(message_id, msg.from.address.domain()))
        .date(date_ms / 1000)
        .from(addr(&msg.from))
        .to(list(&msg.to))
        .subject(msg.subject.clone());
    if !msg.cc.is_empty() {
        b = b.cc(list(&msg.cc));
    }
    if !msg.reply_to.is_empty() {
        b = b.reply_to(list(&msg.reply_to));
    }
    for (name, value) in &msg.headers {
        b = b.header(name.clone(), Raw::new(value.clone()));
    }
    // Providers may rewrite Message-ID; this one survives for correlation.
    b = b.header("X-MultiMail-Message-Id", Raw::new(message_id.to_string()));
    b = b.body(body_tree(msg, message_id));
    let bytes = b.write_to_vec().map_err(|e| DomainError::invalid("text", format!("could not encode the message: {e}")))?;
    if bytes.len() > limit {
        return Err(DomainError::MessageTooLarge { limit_bytes: limit, actual_bytes: bytes.len() });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::send::SendEmailRequest;
    use serde_json::json;

    fn validated(v: serde_json::Value) -> ValidatedSend {
        serde_json::from_value::<SendEmailRequest>(v).unwrap().validate(0).unwrap()
    }

    fn text_of(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn writes_message_id_date_and_addresses() {
        let m = validated(json!({"from": "Agent <agent@acme.multimail.test>", "to": ["ada@example.com"], "cc": "c@example.com", "bcc": "secret@example.com", "subject": "Hi", "text": "Hello"}));
        let out = text_of(&build(&m, "msg_abc", 1_764_000_000_000).unwrap());
        assert!(out.contains("Message-ID: <msg_abc@acme.multimail.test>"), "{out}");
        assert!(out.contains("Date: "));
        assert!(out.contains("From: \"Agent\" <agent@acme.multimail.test>") || out.contains("From: Agent <agent@acme.multimail.test>"), "{out}");
        assert!(out.contains("<c@example.com>"));
        assert!(!out.contains("secret@example.com"), "bcc must not appear in headers");
        assert!(out.contains("MIME-Version: 1.0"));
        assert!(out.contains("X-MultiMail-Message-Id: msg_abc"));
    }

    #[test]
    fn text_and_html_make_multipart_alternative() {
        let m = validated(json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "Hi", "text": "plain", "html": "<p>rich</p>"}));
        let out = text_of(&build(&m, "msg_1", 0).unwrap());
        assert!(out.contains("multipart/alternative"), "{out}");
        assert!(out.contains("boundary=\"=_mm_alternative_msg_1\""), "{out}");
        assert!(out.contains("text/plain") && out.contains("text/html"));
    }

    #[test]
    fn attachments_make_multipart_mixed_in_base64() {
        let m = validated(json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "Hi", "text": "see attached",
            "attachments": [{"filename": "r.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}]}));
        let out = text_of(&build(&m, "msg_1", 0).unwrap());
        assert!(out.contains("multipart/mixed"), "{out}");
        assert!(out.contains("application/pdf") && out.contains("r.pdf"));
        assert!(out.contains("Content-Transfer-Encoding: base64"));
    }

    #[test]
    fn non_ascii_subjects_become_encoded_words_and_lines_stay_short() {
        let m = validated(json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "Grüße aus Köln", "text": "x".repeat(3000)}));
        let out = text_of(&build(&m, "msg_1", 0).unwrap());
        assert!(out.contains("=?utf-8?"), "{out}");
        assert!(out.split("\r\n").all(|l| l.len() <= 998), "no line over 998 octets");
    }

    #[test]
    fn custom_headers_are_written() {
        let m = validated(json!({"from": "a@acme.multimail.test", "to": "b@example.com", "subject": "Hi", "text": "x", "headers": {"X-Campaign": "q4"}}));
        assert!(text_of(&build(&m, "msg_1", 0).unwrap()).contains("X-Campaign: q4"));
    }
}
