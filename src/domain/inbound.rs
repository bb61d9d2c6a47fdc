//! Inbound mail as values: a raw RFC 5322 message (from Email Routing, Postmark's inbound
//! webhook or a mail server's pipe) parsed once with `mail-parser` into one stored form —
//! headers, decoded text and HTML, attachments within the caps (metadata only beyond them),
//! the threading ids and the Authentication-Results verdicts.

use base64::{engine::general_purpose::STANDARD, Engine};
use sha2::Digest;
use mail_parser::{MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

use super::address::EmailAddress;

/// Raw messages above this are refused (413).
pub const MAX_RAW_BYTES: usize = 30 * 1024 * 1024;
/// Raw MIME above this is not kept (a D1 row holds 2 MB); the parsed form still is.
pub const MAX_STORED_RAW: usize = 1_000_000;
/// Attachment bytes kept per message; the rest are listed with the reason.
pub const MAX_STORED_ATTACHMENTS: usize = 600_000;
/// Text and HTML bodies are cut to this many bytes each.
pub const MAX_BODY_CHARS: usize = 200_000;
pub const SNIPPET_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    /// Present when the attachment fits the stored-attachment cap.
    pub content_base64: Option<String>,
    /// Why the content was not kept.
    pub omitted: Option<String>,
    /// SHA-256 of the content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The type its bytes show (`domain::attachments::sniff`), whatever the sender declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_type: Option<String>,
    /// The whole content is in the attachments bucket (`download_attachment`).
    #[serde(default)]
    pub stored: bool,
}

impl InboundAttachment {
    fn of(filename: Option<String>, content_type: String, content: &[u8], inline: bool) -> Self {
        InboundAttachment {
            filename,
            detected_type: Some(super::attachments::sniff(content, &content_type)),
            content_type,
            size: content.len(),
            content_base64: inline.then(|| STANDARD.encode(content)),
            omitted: (!inline).then(|| format!("over the {MAX_STORED_ATTACHMENTS}-byte inline cap")),
            sha256: Some(super::keys::hex(&sha2::Sha256::digest(content))),
            stored: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedEmail {
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Option<String>,
    pub from_address: Option<String>,
    pub reply_to: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub date: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<InboundAttachment>,
    pub authentication_results: Vec<String>,
    pub truncated: bool,
    /// The decoded bytes of each attachment, in order (for the attachments bucket; never part
    /// of the stored JSON).
    #[serde(skip)]
    pub parts: Vec<Vec<u8>>,
}

fn addr_list(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    let Some(a) = a else { return vec![] };
    a.iter()
        .filter_map(|x| {
            let address = x.address()?;
            Some(match x.name() {
                Some(n) if !n.is_empty() => format!("{n} <{address}>"),
                _ => address.to_string(),
            })
        })
        .collect()
}

fn ids(v: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    match v {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => vec![],
    }
}

fn cut(s: String, max: usize, truncated: &mut bool) -> String {
    if s.len() <= max {
        return s;
    }
    *truncated = true;
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    TooLarge { limit: usize },
    NotAMessage,
}

/// Parses a raw message. Fails only for input that is not a message at all (no headers).
pub fn parse(raw: &[u8]) -> Result<ParsedEmail, ParseError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(ParseError::TooLarge { limit: MAX_RAW_BYTES });
    }
    let msg = MessageParser::default().parse(raw).ok_or(ParseError::NotAMessage)?;
    if msg.headers().is_empty() {
        return Err(ParseError::NotAMessage);
    }
    let mut truncated = false;
    let text = msg.body_text(0).map(|t| cut(t.into_owned(), MAX_BODY_CHARS, &mut truncated));
    // mail-parser offers a text part converted to HTML when there is no HTML part; keep only real HTML.
    let has_html = msg.html_part(0).is_some_and(|p| p.is_content_type("text", "html"));
    let html = msg.body_html(0).filter(|_| has_html).map(|h| cut(h.into_owned(), MAX_BODY_CHARS, &mut truncated));
    let mut kept = 0usize;
    let mut parts = vec![];
    let attachments = msg
        .attachments()
        .map(|part| {
            let content = part.contents();
            let ct = part
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase();
            let fits = kept + content.len() <= MAX_STORED_ATTACHMENTS;
            if fits {
                kept += content.len();
            }
            parts.push(content.to_vec());
            InboundAttachment::of(part.attachment_name().map(str::to_string), ct, content, fits)
        })
        .collect();
    let headers = msg
        .headers_raw()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("received") && !name.eq_ignore_ascii_case("dkim-signature"))
        .take(100)
        .map(|(n, v)| (n.to_string(), v.trim().chars().take(2000).collect()))
        .collect();
    let from_addr = msg.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_string);
    Ok(ParsedEmail {
        message_id: msg.message_id().map(str::to_string),
        in_reply_to: ids(msg.in_reply_to()),
        references: ids(msg.references()),
        from: addr_list(msg.from()).into_iter().next(),
        from_address: from_addr,
        reply_to: addr_list(msg.reply_to()).into_iter().next(),
        to: addr_list(msg.to()),
        cc: addr_list(msg.cc()),
        subject: msg.subject().unwrap_or("").chars().filter(|c| !c.is_control()).take(998).collect(),
        date: msg.date().map(|d| d.to_rfc3339()),
        text,
        html,
        headers,
        attachments,
        authentication_results: msg
            .header_values("Authentication-Results")
            .filter_map(|v| v.as_text().map(str::to_string))
            .collect(),
        truncated,
        parts,
    })
}

/// What the receiving side said about a message's authentication (RFC 8601). Only the topmost
/// `Authentication-Results` header, and only when its authserv-id is one of the deployment's
/// receivers (`TRUSTED_AUTHSERV_IDS`), is a verdict: a receiver prepends its header, and every
/// header below it could have been written by the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authentication {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`, … as the receiver
    /// said; `none` when no trusted receiver said anything.
    pub spf: String,
    pub dkim: String,
    pub dmarc: String,
    /// Whether a trusted receiver's header was found at the top.
    pub trusted: bool,
    pub authserv_id: Option<String>,
}

/// The verdict, the trusted header (at most one) and the untrusted rest.
pub fn authentication(results: &[String], trusted_ids: &[String]) -> (Authentication, Vec<String>, Vec<String>) {
    let id_of = |h: &str| h.split(';').next().unwrap_or("").split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    let top = results.first().filter(|h| {
        let id = id_of(h);
        !id.is_empty() && trusted_ids.iter().any(|t| t.eq_ignore_ascii_case(&id))
    });
    let Some(top) = top else {
        let none = Authentication { spf: "none".into(), dkim: "none".into(), dmarc: "none".into(), trusted: false, authserv_id: None };
        return (none, vec![], results.to_vec());
    };
    let result_of = |method: &str| {
        top.split(';')
            .skip(1)
            .flat_map(|part| part.split_whitespace())
            .find_map(|tok| tok.split_once('=').filter(|(k, _)| k.eq_ignore_ascii_case(method)).map(|(_, v)| v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_ascii_lowercase()))
            .unwrap_or_else(|| "none".into())
    };
    let verdict = Authentication { spf: result_of("spf"), dkim: result_of("dkim"), dmarc: result_of("dmarc"), trusted: true, authserv_id: Some(id_of(top)) };
    (verdict, vec![top.clone()], results[1..].to_vec())
}

impl ParsedEmail {
    /// A short preview for lists and events.
    pub fn snippet(&self) -> String {
        let src = self.text.clone().unwrap_or_else(|| strip_tags(self.html.as_deref().unwrap_or("")));
        let mut s: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > SNIPPET_CHARS {
            s = s.chars().take(SNIPPET_CHARS - 1).collect::<String>() + "…";
        }
        s
    }

    /// Every Message-ID this message refers to, nearest first (for threading).
    pub fn referenced_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = self.in_reply_to.clone();
        for r in self.references.iter().rev() {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The mailbox addresses a recipient list can be routed to: each address, and without its
/// `+tag` (`support+billing@` → `support@`), lower-cased.
pub fn routing_candidates(recipients: &[String]) -> Vec<String> {
    // Linear in the recipients (a set, not a scan per address), and bounded: a message listing
    // thousands of addresses is routed on its first MAX_ROUTED.
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    for r in recipients.iter().take(MAX_ROUTED) {
        let Ok(rc) = super::address::Recipient::parse(r) else { continue };
        let a = EmailAddress::parse(&rc.address.to_string().to_ascii_lowercase()).unwrap_or(rc.address);
        for cand in [a.to_string(), a.without_plus_tag().to_string()] {
            if seen.insert(cand.clone()) {
                out.push(cand);
            }
        }
    }
    out
}

/// Recipients of one inbound message considered for routing.
pub const MAX_ROUTED: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_candidates_are_deduplicated_and_bounded() {
        let many: Vec<String> = (0..5000).map(|i| format!("user{}+tag@acme.test", i % 300)).collect();
        let c = routing_candidates(&many);
        assert_eq!(c.len(), 600, "300 distinct addresses, each with its base: {}", c.len());
        assert_eq!(&c[..2], &["user0+tag@acme.test".to_string(), "user0@acme.test".to_string()]);
        let distinct: Vec<String> = (0..5000).map(|i| format!("u{i}@acme.test")).collect();
        assert_eq!(routing_candidates(&distinct).len(), MAX_ROUTED, "bounded");
    }

    #[test]
    fn only_the_receivers_own_authentication_results_are_a_verdict() {
        let trusted = vec!["mx.cloudflare.net".to_string()];
        let forged = vec!["evil.example; spf=pass; dkim=pass; dmarc=pass".to_string()];
        let (v, t, u) = authentication(&forged, &trusted);
        assert_eq!((v.spf.as_str(), v.dkim.as_str(), v.dmarc.as_str(), v.trusted), ("none", "none", "none", false));
        assert!(t.is_empty());
        assert_eq!(u, forged);
        // The receiver's header on top decides; a sender's copy of the same id below does not.
        let both = vec![
            "mx.cloudflare.net; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com; dmarc=fail".to_string(),
            "mx.cloudflare.net; dmarc=pass".to_string(),
        ];
        let (v, t, u) = authentication(&both, &trusted);
        assert_eq!((v.spf.as_str(), v.dkim.as_str(), v.dmarc.as_str(), v.trusted), ("pass", "pass", "fail", true));
        assert_eq!(t.len(), 1);
        assert_eq!(u, vec!["mx.cloudflare.net; dmarc=pass".to_string()]);
        // A trusted id anywhere but the top is not trusted.
        let below = vec!["evil.example; spf=pass".to_string(), "mx.cloudflare.net; spf=pass".to_string()];
        assert!(!authentication(&below, &trusted).0.trusted);
    }

    const SIMPLE: &[u8] = b"From: Ada <ada@example.com>\r\nTo: support+billing@acme.multimail.test\r\nCc: bob@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <m1@example.com>\r\nIn-Reply-To: <msg_1@acme.multimail.test>\r\nReferences: <root@example.com> <msg_1@acme.multimail.test>\r\nAuthentication-Results: mx.example; spf=pass; dkim=pass\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nHello there,\r\nplease help.\r\n";

    #[test]
    fn parses_addresses_ids_and_encoded_subjects() {
        let p = parse(SIMPLE).unwrap();
        assert_eq!(p.subject, "Grüße");
        assert_eq!(p.from.as_deref(), Some("Ada <ada@example.com>"));
        assert_eq!(p.from_address.as_deref(), Some("ada@example.com"));
        assert_eq!(p.to, vec!["support+billing@acme.multimail.test"]);
        assert_eq!(p.message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(p.referenced_ids(), vec!["msg_1@acme.multimail.test", "root@example.com"]);
        assert_eq!(p.authentication_results, vec!["mx.example; spf=pass; dkim=pass"]);
        assert_eq!(p.snippet(), "Hello there, please help.");
        assert_eq!(p.html, None, "no HTML part, no HTML");
    }

    #[test]
    fn decodes_iso_8859_1_and_shift_jis_bodies() {
        let mut latin = b"From: a@example.com\r\nTo: b@acme.test\r\nSubject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf".to_vec();
        latin.push(0xE9);
        assert_eq!(parse(&latin).unwrap().text.unwrap().trim(), "Café");
        let mut sjis = b"From: a@example.com\r\nTo: b@acme.test\r\nSubject: x\r\nContent-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
        sjis.extend_from_slice(&[0x82, 0xB1, 0x82, 0xF1, 0x82, 0xC9, 0x82, 0xBF, 0x82, 0xCD]);
        assert_eq!(parse(&sjis).unwrap().text.unwrap().trim(), "こんにちは");
    }

    #[test]
    fn keeps_attachments_within_the_cap_and_lists_the_rest() {
        let big = STANDARD.encode(vec![7u8; MAX_STORED_ATTACHMENTS + 10]);
        let raw = format!("From: a@example.com\r\nTo: b@acme.test\r\nSubject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=small.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{big}\r\n--XX--\r\n");
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.text.as_deref().map(str::trim), Some("see attached"));
        assert_eq!(p.attachments.len(), 2);
        assert_eq!(p.attachments[0].filename.as_deref(), Some("small.pdf"));
        assert_eq!(p.attachments[0].content_base64.as_deref(), Some("JVBERi0="));
        assert_eq!(p.attachments[1].size, MAX_STORED_ATTACHMENTS + 10);
        assert!(p.attachments[1].content_base64.is_none());
        assert!(p.attachments[1].omitted.as_deref().unwrap().contains("cap"));
    }

    #[test]
    fn refuses_what_is_not_a_message_and_what_is_too_large() {
        assert_eq!(parse(b""), Err(ParseError::NotAMessage));
        assert_eq!(parse(&vec![b'a'; MAX_RAW_BYTES + 1]), Err(ParseError::TooLarge { limit: MAX_RAW_BYTES }));
    }

    #[test]
    fn routes_plus_addressed_recipients_to_the_base_mailbox() {
        let c = routing_candidates(&["Support <Support+Billing@Acme.test>".into(), "nonsense".into()]);
        assert_eq!(c, vec!["support+billing@acme.test", "support@acme.test"]);
    }
}

/// Postmark's inbound webhook JSON (https://postmarkapp.com/developer/webhooks/inbound-webhook),
/// already parsed by Postmark, into the same stored form as a raw message.
pub fn from_postmark(v: &serde_json::Value) -> Result<ParsedEmail, String> {
    use serde_json::Value;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let full = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        let email = x.get("Email")?.as_str()?;
                        Some(match x.get("Name").and_then(Value::as_str) {
                            Some(n) if !n.is_empty() => format!("{n} <{email}>"),
                            _ => email.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let headers: Vec<(String, String)> = v
        .get("Headers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| Some((h.get("Name")?.as_str()?.to_string(), h.get("Value")?.as_str()?.chars().take(2000).collect())))
                .take(100)
                .collect()
        })
        .unwrap_or_default();
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let strip = |id: &str| id.trim().trim_start_matches('<').trim_end_matches('>').to_string();
    let id_list = |raw: Option<String>| -> Vec<String> { raw.map(|r| r.split_whitespace().map(strip).filter(|x| !x.is_empty()).collect()).unwrap_or_default() };
    let from_email = v.get("FromFull").and_then(|f| f.get("Email")).and_then(Value::as_str).map(str::to_string).or_else(|| s("From"));
    let from_name = v.get("FromFull").and_then(|f| f.get("Name")).and_then(Value::as_str).filter(|n| !n.is_empty());
    if from_email.is_none() && v.get("ToFull").is_none() && v.get("To").is_none() {
        return Err("not a Postmark inbound message: From and To are missing".into());
    }
    let mut truncated = false;
    let mut kept = 0usize;
    let mut parts = vec![];
    let attachments = v
        .get("Attachments")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    let encoded = x.get("Content").and_then(Value::as_str).unwrap_or("");
                    // Content that is not base64 is kept as the bytes it is.
                    let content = STANDARD.decode(encoded.trim()).unwrap_or_else(|_| encoded.as_bytes().to_vec());
                    let fits = kept + content.len() <= MAX_STORED_ATTACHMENTS;
                    if fits {
                        kept += content.len();
                    }
                    let ct = x.get("ContentType").and_then(Value::as_str).unwrap_or("application/octet-stream").to_ascii_lowercase();
                    let a = InboundAttachment::of(x.get("Name").and_then(Value::as_str).map(str::to_string), ct, &content, fits);
                    parts.push(content);
                    a
                })
                .collect()
        })
        .unwrap_or_default();
    let mut to = full("ToFull");
    if to.is_empty() {
        to = s("To").map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()).unwrap_or_default();
    }
    Ok(ParsedEmail {
        message_id: header("Message-ID").map(|m| strip(&m)).or_else(|| s("MessageID")),
        in_reply_to: id_list(header("In-Reply-To")),
        references: id_list(header("References")),
        from: from_email.as_ref().map(|e| match from_name {
            Some(n) => format!("{n} <{e}>"),
            None => e.clone(),
        }),
        from_address: from_email,
        reply_to: s("ReplyTo").filter(|r| !r.is_empty()),
        to,
        cc: full("CcFull"),
        subject: s("Subject").unwrap_or_default().chars().filter(|c| !c.is_control()).take(998).collect(),
        date: s("Date"),
        text: s("TextBody").map(|t| cut(t, MAX_BODY_CHARS, &mut truncated)),
        html: s("HtmlBody").filter(|h| !h.is_empty()).map(|h| cut(h, MAX_BODY_CHARS, &mut truncated)),
        authentication_results: headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results")).map(|(_, v)| v.clone()).collect(),
        headers,
        attachments,
        truncated,
        parts,
    })
}

#[cfg(test)]
mod postmark_tests {
    use super::*;

    #[test]
    fn reads_postmarks_inbound_json() {
        let v = serde_json::json!({
            "FromName": "Ada", "From": "ada@example.com", "FromFull": {"Email": "ada@example.com", "Name": "Ada"},
            "To": "support@acme.test", "ToFull": [{"Email": "support@acme.test", "Name": "", "MailboxHash": ""}],
            "CcFull": [], "Subject": "Help", "MessageID": "pm-uuid", "Date": "Tue, 24 Nov 2026 10:00:00 +0000",
            "TextBody": "Body", "HtmlBody": "<p>Body</p>",
            "Headers": [{"Name": "Message-ID", "Value": "<orig@example.com>"}, {"Name": "In-Reply-To", "Value": "<msg_1@acme.test>"}],
            "Attachments": [{"Name": "a.txt", "Content": "aGk=", "ContentType": "text/plain", "ContentLength": 2}]
        });
        let p = from_postmark(&v).unwrap();
        assert_eq!(p.message_id.as_deref(), Some("orig@example.com"));
        assert_eq!(p.in_reply_to, vec!["msg_1@acme.test"]);
        assert_eq!(p.from.as_deref(), Some("Ada <ada@example.com>"));
        assert_eq!(p.to, vec!["support@acme.test"]);
        assert_eq!(p.attachments[0].content_base64.as_deref(), Some("aGk="));
        assert!(from_postmark(&serde_json::json!({"Subject": "x"})).is_err());
    }
}
