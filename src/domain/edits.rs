//! Approve with edits: a reviewer fixes a held draft and sends their version in one decision.
//! `apply` checks the reviewer's edits against the held message and gives the `Edit` the
//! `Approval` object stores with the decision: the final values of the fields that changed,
//! which fields, and the SHA-256 of the original and of the version sent. `applied` puts an
//! `Edit` onto the stored message (setting values, so applying it twice changes nothing), and
//! `to_send` turns the stored message back into a send, so its MIME is rebuilt from it.
//!
//! Recipients: a reviewer may only remove them (or move one between To and Cc); adding an
//! address that was not on the message needs an `owner` (`may_add_recipients`).

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::address::{AddressError, Recipient};
use super::delivery::OutboundEmail;
use super::disclosure::FOOTER_TEXT;
use super::error::DomainError;
use super::keys::hex;
use super::send::{render_markdown, Attachment, OneOrMany, ValidatedSend, MAX_MESSAGE_BYTES, MAX_RECIPIENTS, MAX_SUBJECT_CHARS};

/// `decide_email`'s `edits`: any of these fields; each replaces the held message's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditsInput {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub markdown: Option<String>,
    pub to: Option<OneOrMany>,
    pub cc: Option<OneOrMany>,
}

/// What the `Approval` object stores with an approval that edits: the message as the reviewer
/// left it (the editable fields' final values) and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The fields that changed, in a fixed order (`subject`, `text`, `html`, `to`, `cc`).
    pub fields: Vec<String>,
    pub original_sha256: String,
    pub sent_sha256: String,
}

/// SHA-256 (hex) of what a recipient reads and who receives it: subject, To, Cc, Bcc, text and
/// HTML, as one JSON array.
pub fn content_sha256(e: &OutboundEmail) -> String {
    let canonical = serde_json::json!([e.subject, e.to, e.cc, e.bcc, e.text, e.html]).to_string();
    hex(&Sha256::digest(canonical.as_bytes()))
}

fn recipients(field: &'static str, v: &OneOrMany) -> Result<Vec<String>, DomainError> {
    let items = match v {
        OneOrMany::One(s) => vec![s.as_str()],
        OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
    };
    items
        .into_iter()
        .map(|s| Recipient::parse(s).map(|r| r.to_string()).map_err(|AddressError(m)| DomainError::invalid(field, m)))
        .collect()
}

fn address_of(r: &str) -> String {
    Recipient::parse(r).map(|x| x.address.to_string()).unwrap_or_else(|_| r.to_string()).to_ascii_lowercase()
}

/// The footer the mailbox's AI disclosure adds, on a body the reviewer wrote without it.
fn with_footer(text: Option<String>, html: Option<String>) -> (Option<String>, Option<String>) {
    let text = text.map(|t| if t.contains(FOOTER_TEXT) { t } else { format!("{t}\n\n--\n{FOOTER_TEXT}\n") });
    let html = html.map(|h| if h.contains(FOOTER_TEXT) { h } else { format!("{h}<hr><p style=\"font-size:small;color:#555\">{FOOTER_TEXT}</p>") });
    (text, html)
}

/// Checks a reviewer's edits against the held message. `footer`: the mailbox adds the AI
/// disclosure footer (kept on an edited body). `None` when nothing would change (a plain
/// approval).
pub fn apply(original: &OutboundEmail, input: &EditsInput, may_add_recipients: bool, footer: bool) -> Result<Option<Edit>, DomainError> {
    let e = input;
    if e.subject.is_none() && e.text.is_none() && e.html.is_none() && e.markdown.is_none() && e.to.is_none() && e.cc.is_none() {
        return Err(DomainError::invalid("edits", "`edits` names no field: give one or more of subject, text, html, markdown, to, cc"));
    }
    if e.html.is_some() && e.markdown.is_some() {
        return Err(DomainError::invalid("edits.markdown", "give `html` or `markdown`, not both"));
    }
    let subject = match &e.subject {
        Some(s) if s.contains(['\r', '\n']) || s.chars().any(|c| c.is_control() && c != '\t') => {
            return Err(DomainError::invalid("edits.subject", "the subject may not contain CR, LF or other control characters"));
        }
        Some(s) if s.chars().count() > MAX_SUBJECT_CHARS => {
            return Err(DomainError::invalid("edits.subject", format!("the subject may be at most {MAX_SUBJECT_CHARS} characters")));
        }
        Some(s) => s.clone(),
        None => original.subject.clone(),
    };
    let (mut text, mut html) = (original.text.clone(), original.html.clone());
    if e.text.is_some() || e.html.is_some() || e.markdown.is_some() {
        let new_html = e.html.clone().or_else(|| e.markdown.as_deref().map(render_markdown));
        let new_text = e.text.clone().or_else(|| e.markdown.clone());
        // A field not given keeps its value; an empty string removes that part.
        let keep = |new: Option<String>, old: Option<String>| match new {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
            None => old,
        };
        text = keep(new_text, text);
        html = keep(new_html, html);
        if footer {
            // The mailbox's AI disclosure footer stays on a body the reviewer rewrote.
            if e.text.is_some() || e.markdown.is_some() {
                text = with_footer(text.take(), None).0;
            }
            if e.html.is_some() || e.markdown.is_some() {
                html = with_footer(None, html.take()).1;
            }
        }
        if text.as_deref().unwrap_or("").is_empty() && html.as_deref().unwrap_or("").is_empty() {
            return Err(DomainError::invalid("edits.text", "the edited message needs a body: text, html or markdown"));
        }
        let len = text.as_ref().map_or(0, String::len) + html.as_ref().map_or(0, String::len);
        if len > MAX_MESSAGE_BYTES {
            return Err(DomainError::MessageTooLarge { limit_bytes: MAX_MESSAGE_BYTES, actual_bytes: len });
        }
    }
    let to = match &e.to {
        Some(v) => recipients("edits.to", v)?,
        None => original.to.clone(),
    };
    let cc = match &e.cc {
        Some(v) => recipients("edits.cc", v)?,
        None => original.cc.clone(),
    };
    if to.is_empty() {
        return Err(DomainError::invalid("edits.to", "the edited message needs at least one To recipient"));
    }
    if to.len() + cc.len() + original.bcc.len() > MAX_RECIPIENTS {
        return Err(DomainError::invalid("edits.to", format!("the limit is {MAX_RECIPIENTS} recipients in to, cc and bcc")));
    }
    let added = added_to(original, &to, &cc);
    if !added.is_empty() && !may_add_recipients {
        return Err(DomainError::RecipientAdded { added });
    }
    let mut fields = vec![];
    for (name, changed) in [
        ("subject", subject != original.subject),
        ("text", text != original.text),
        ("html", html != original.html),
        ("to", to != original.to),
        ("cc", cc != original.cc),
    ] {
        if changed {
            fields.push(name.to_string());
        }
    }
    if fields.is_empty() {
        return Ok(None);
    }
    let mut edit = Edit { subject, text, html, to, cc, fields, original_sha256: content_sha256(original), sent_sha256: String::new() };
    edit.sent_sha256 = content_sha256(&applied(original, &edit));
    Ok(Some(edit))
}

/// The addresses (lower-cased) in `to` and `cc` that were not on the message.
fn added_to(original: &OutboundEmail, to: &[String], cc: &[String]) -> Vec<String> {
    let before: std::collections::HashSet<String> = original.to.iter().chain(&original.cc).chain(&original.bcc).map(|r| address_of(r)).collect();
    let mut added: Vec<String> = to.iter().chain(cc).map(|r| address_of(r)).filter(|a| !before.contains(a)).collect();
    added.sort();
    added.dedup();
    added
}

/// The recipients an edit adds (an owner's): they must pass the suppression list and the
/// block rules like any send's.
pub fn added(original: &OutboundEmail, edit: &Edit) -> Vec<String> {
    added_to(original, &edit.to, &edit.cc)
}

/// The stored message with an edit on it.
pub fn applied(original: &OutboundEmail, edit: &Edit) -> OutboundEmail {
    OutboundEmail {
        subject: edit.subject.clone(),
        text: edit.text.clone(),
        html: edit.html.clone(),
        to: edit.to.clone(),
        cc: edit.cc.clone(),
        ..original.clone()
    }
}

/// The stored message as a send again, to build its MIME from (the headers we write ourselves
/// are left to `mime::build`).
pub fn to_send(e: &OutboundEmail) -> Result<ValidatedSend, DomainError> {
    let parse = |field: &'static str, v: &[String]| -> Result<Vec<Recipient>, DomainError> {
        v.iter().map(|s| Recipient::parse(s).map_err(|AddressError(m)| DomainError::invalid(field, m))).collect()
    };
    let from = Recipient::parse(&e.from).map_err(|AddressError(m)| DomainError::invalid("from", m))?;
    let attachments = e
        .attachments
        .iter()
        .map(|a| {
            let content = STANDARD.decode(&a.content_base64).map_err(|_| DomainError::invalid("attachments", "a stored attachment is not base64"))?;
            Ok(Attachment { filename: a.filename.clone(), content_type: a.content_type.clone(), content: content.into() })
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    Ok(ValidatedSend {
        from,
        to: parse("to", &e.to)?,
        cc: parse("cc", &e.cc)?,
        bcc: parse("bcc", &e.bcc)?,
        reply_to: parse("reply_to", &e.reply_to)?,
        subject: e.subject.clone(),
        text: e.text.clone(),
        html: e.html.clone(),
        headers: e.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("message-id") && !n.eq_ignore_ascii_case("x-multimail-message-id")).cloned().collect(),
        attachments,
        oversight_mode: None,
        metadata: serde_json::Value::Null,
        send_at: None,
        approval_ttl_secs: None,
        marketing: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> OutboundEmail {
        OutboundEmail {
            message_id: "msg_1".into(),
            from: "Agent <agent@example.com>".into(),
            to: vec!["Ann <ann@example.org>".into(), "bob@example.org".into()],
            cc: vec!["cat@example.org".into()],
            bcc: vec!["audit@example.net".into()],
            reply_to: vec![],
            subject: "Draft".into(),
            text: Some("helo".into()),
            html: None,
            headers: vec![("Message-ID".into(), "<m@example.com>".into()), ("X-Tag".into(), "a".into())],
            attachments: vec![],
        }
    }

    fn input(v: serde_json::Value) -> EditsInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_edit_keeps_what_it_does_not_name_and_lists_what_changed() {
        let e = apply(&held(), &input(serde_json::json!({"text": "hello", "to": "bob@example.org"})), false, false).unwrap().unwrap();
        assert_eq!(e.fields, ["text", "to"]);
        assert_eq!(e.subject, "Draft");
        assert_eq!(e.cc, ["cat@example.org"]);
        let sent = applied(&held(), &e);
        assert_eq!(sent.text.as_deref(), Some("hello"));
        assert_eq!(sent.bcc, ["audit@example.net"]);
        assert_eq!(e.original_sha256, content_sha256(&held()));
        assert_eq!(e.sent_sha256, content_sha256(&sent));
        assert_ne!(e.original_sha256, e.sent_sha256);
        // Applying the same edit to the edited message changes nothing.
        assert_eq!(applied(&sent, &e), sent);
    }

    #[test]
    fn a_reviewer_may_remove_or_move_recipients_but_only_an_owner_may_add() {
        // Moving Cc to To, and the same address with another name, add nobody.
        let moved = apply(&held(), &input(serde_json::json!({"to": ["ann@example.org", "CAT@example.org"], "cc": []})), false, false).unwrap().unwrap();
        assert_eq!(moved.fields, ["to", "cc"]);
        let refused = apply(&held(), &input(serde_json::json!({"cc": ["cat@example.org", "eve@evil.example"]})), false, false);
        assert_eq!(refused, Err(DomainError::RecipientAdded { added: vec!["eve@evil.example".into()] }));
        // Bcc is not editable, but an address already in it is not new.
        assert!(apply(&held(), &input(serde_json::json!({"cc": "audit@example.net"})), false, false).is_ok());
        let owners = apply(&held(), &input(serde_json::json!({"cc": ["Eve <EVE@evil.example>", "cat@example.org"]})), true, false).unwrap().unwrap();
        assert_eq!(added(&held(), &owners), ["eve@evil.example"]);
    }

    #[test]
    fn bad_edits_are_refused() {
        let bad = |v: serde_json::Value| apply(&held(), &input(v), true, false).unwrap_err();
        assert!(matches!(bad(serde_json::json!({})), DomainError::Invalid { field: "edits", .. }));
        assert!(matches!(bad(serde_json::json!({"subject": "a\r\nBcc: x@y.z"})), DomainError::Invalid { field: "edits.subject", .. }));
        assert!(matches!(bad(serde_json::json!({"to": []})), DomainError::Invalid { field: "edits.to", .. }));
        assert!(matches!(bad(serde_json::json!({"to": "not an address"})), DomainError::Invalid { field: "edits.to", .. }));
        assert!(matches!(bad(serde_json::json!({"text": ""})), DomainError::Invalid { field: "edits.text", .. }));
        assert!(matches!(bad(serde_json::json!({"html": "<p>x</p>", "markdown": "x"})), DomainError::Invalid { field: "edits.markdown", .. }));
        assert!(serde_json::from_value::<EditsInput>(serde_json::json!({"bcc": "x@y.z"})).is_err());
    }

    #[test]
    fn an_edit_that_changes_nothing_is_a_plain_approval() {
        assert_eq!(apply(&held(), &input(serde_json::json!({"subject": "Draft", "to": ["Ann <ann@example.org>", "bob@example.org"]})), false, false), Ok(None));
    }

    #[test]
    fn markdown_sets_both_bodies_and_the_disclosure_footer_stays() {
        let e = apply(&held(), &input(serde_json::json!({"markdown": "**Hi**"})), false, true).unwrap().unwrap();
        assert!(e.html.as_deref().unwrap().contains("<strong>Hi</strong>") && e.html.as_deref().unwrap().contains(FOOTER_TEXT));
        assert!(e.text.as_deref().unwrap().starts_with("**Hi**") && e.text.as_deref().unwrap().contains(FOOTER_TEXT));
        // A reviewer who kept the footer in the text does not get it twice.
        let kept = apply(&held(), &input(serde_json::json!({"text": format!("fixed\n\n--\n{FOOTER_TEXT}\n")})), false, true).unwrap().unwrap();
        assert_eq!(kept.text.as_deref().unwrap().matches(FOOTER_TEXT).count(), 1);
    }

    #[test]
    fn the_stored_message_becomes_a_send_without_our_own_headers() {
        let v = to_send(&held()).unwrap();
        assert_eq!(v.to.len(), 2);
        assert_eq!(v.headers, [("X-Tag".to_string(), "a".to_string())]);
        let mime = String::from_utf8(super::super::mime::build(&v, "msg_1", 0).unwrap()).unwrap();
        assert!(mime.contains("X-Tag: a") && !mime.contains("audit@example.net"));
    }
}
