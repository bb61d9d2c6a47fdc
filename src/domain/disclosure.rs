//! AI disclosure (EU AI Act article 50 transparency): a mailbox may tell every recipient that
//! its mail was written by an AI agent, in a header (`AI-Disclosure: mode=ai-originated`, the
//! shape of the IETF individual draft for an AI-Disclosure header; not yet a standard for
//! email) or also in a footer a person sees. Whether a human reviewed the message is in the
//! signed identity claims (`reviewed`), which a recipient's tools can check.

use super::message::string_enum;
use super::send::ValidatedSend;

string_enum! {
    AiDisclosure {
        /// Nothing is added.
        None = "none",
        /// The `AI-Disclosure` header.
        Header = "header",
        /// The header, and a line at the end of the text and HTML bodies.
        Footer = "footer",
    }
}

impl Default for AiDisclosure {
    fn default() -> Self {
        AiDisclosure::None
    }
}

pub const HEADER: &str = "AI-Disclosure";
pub const HEADER_VALUE: &str = "mode=ai-originated";
pub const FOOTER_TEXT: &str = "This message was written by an AI agent.";

impl AiDisclosure {
    /// Higher discloses more; disclosing less needs a human.
    pub fn strictness(self) -> u8 {
        match self {
            AiDisclosure::None => 0,
            AiDisclosure::Header => 1,
            AiDisclosure::Footer => 2,
        }
    }

    /// Adds the disclosure to a send (before its MIME is built, so both stored forms carry it).
    pub fn apply(self, v: &mut ValidatedSend) {
        if self == AiDisclosure::None {
            return;
        }
        if !v.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(HEADER)) {
            v.headers.push((HEADER.into(), HEADER_VALUE.into()));
        }
        if self == AiDisclosure::Footer {
            if let Some(t) = v.text.as_mut() {
                t.push_str(&format!("\n\n--\n{FOOTER_TEXT}\n"));
            }
            if let Some(h) = v.html.as_mut() {
                h.push_str(&format!("<hr><p style=\"font-size:small;color:#555\">{FOOTER_TEXT}</p>"));
            }
            if v.text.is_none() && v.html.is_none() {
                v.text = Some(FOOTER_TEXT.into());
            }
        }
    }
}

/// What the identity claims say about review: `edited` when a human changed the message
/// before approving it, `approved` when a human approved it as written, `none` when nothing
/// reviewed it.
pub fn reviewed(approved: bool, edited: bool) -> &'static str {
    match (approved, edited) {
        (true, true) => "edited",
        (true, false) => "approved",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::send::SendEmailRequest;

    fn send(text: Option<&str>, html: Option<&str>) -> ValidatedSend {
        let mut body = serde_json::json!({"from": "agent@acme.multimail.test", "to": "ada@example.com", "subject": "Hi"});
        if let Some(t) = text {
            body["text"] = serde_json::json!(t);
        }
        if let Some(h) = html {
            body["html"] = serde_json::json!(h);
        }
        let r: SendEmailRequest = serde_json::from_value(body).unwrap();
        r.validate(1_764_000_000_000).unwrap()
    }

    #[test]
    fn header_adds_only_the_header_and_footer_adds_both() {
        let mut v = send(Some("Hello"), Some("<p>Hello</p>"));
        AiDisclosure::Header.apply(&mut v);
        assert!(v.headers.contains(&(HEADER.to_string(), HEADER_VALUE.to_string())));
        assert_eq!(v.text.as_deref(), Some("Hello"));
        let mut f = send(Some("Hello"), Some("<p>Hello</p>"));
        AiDisclosure::Footer.apply(&mut f);
        assert!(f.text.as_deref().unwrap().ends_with(&format!("{FOOTER_TEXT}\n")));
        assert!(f.html.as_deref().unwrap().contains(FOOTER_TEXT));
        assert_eq!(f.headers.iter().filter(|(n, _)| n == HEADER).count(), 1);
        let mut n = send(Some("Hello"), None);
        AiDisclosure::None.apply(&mut n);
        assert!(n.headers.is_empty() && n.text.as_deref() == Some("Hello"));
    }

    #[test]
    fn strictness_orders_the_settings() {
        assert!(AiDisclosure::Footer.strictness() > AiDisclosure::Header.strictness());
        assert!(AiDisclosure::Header.strictness() > AiDisclosure::None.strictness());
        assert_eq!(reviewed(true, false), "approved");
        assert_eq!(reviewed(true, true), "edited");
        assert_eq!(reviewed(false, false), "none");
    }
}
