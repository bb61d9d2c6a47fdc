//! Attachments kept whole in the attachments bucket (R2): what type their bytes show (the
//! sender's declared type is not trusted), where each lives, and the headers a download is
//! served with, so a browser saves it rather than renders it.

/// An inbound attachment of message `message_id`, the `index`-th (its place in `attachments`).
pub fn r2_key(message_id: &str, index: usize) -> String {
    format!("inbound/{message_id}/{index}")
}

/// An outbound attachment of a message too large for D1, the `index`-th.
pub fn outbound_key(message_id: &str, index: usize) -> String {
    format!("outbound/{message_id}/{index}")
}

/// SHA-256 of an attachment's bytes, hex.
pub fn sha256_hex(content: &[u8]) -> String {
    use sha2::Digest;
    super::keys::hex(&sha2::Sha256::digest(content))
}

/// An attachment's id within its message: `att_` and its place in `attachments` (from 0).
pub fn attachment_id(index: usize) -> String {
    format!("att_{index}")
}

/// Why `attachment=` named no one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unselected {
    /// No attachment has that id or file name.
    Missing,
    /// Several attachments share that file name: their ids.
    Ambiguous(Vec<String>),
}

/// The `attachment` parameter as given: an attachment's id or file name, 1 to 255 bytes.
pub fn selector(given: Option<&str>) -> Result<&str, super::error::DomainError> {
    use super::error::DomainError;
    match given {
        Some(a) if !a.is_empty() && a.len() <= 255 => Ok(a),
        Some(_) => Err(DomainError::invalid("attachment", "`attachment` is an attachment's id (att_0, att_1, …) or its file name, at most 255 bytes")),
        None => Err(DomainError::invalid("attachment", "`attachment` is required: the attachment's id (att_0, …) or file name, as read_email lists them")),
    }
}

/// Which attachment `selector` names: its id (`att_N`), else its file name (exactly). A file
/// name several attachments share names none of them: the caller must use an id.
pub fn select(selector: &str, filenames: &[Option<&str>]) -> Result<usize, Unselected> {
    if let Some(i) = selector.strip_prefix("att_").and_then(|n| n.parse::<usize>().ok()).filter(|i| *i < filenames.len()) {
        if attachment_id(i) == selector {
            return Ok(i);
        }
    }
    let named: Vec<usize> = filenames.iter().enumerate().filter(|(_, f)| **f == Some(selector)).map(|(i, _)| i).collect();
    match named.as_slice() {
        [] => Err(Unselected::Missing),
        [one] => Ok(*one),
        many => Err(Unselected::Ambiguous(many.iter().map(|i| attachment_id(*i)).collect())),
    }
}

/// The type the content shows: by its magic bytes (`infer`); text that is valid UTF-8 without
/// control characters is `text/plain`; anything else `application/octet-stream`. `declared` is
/// what the sender said; it is used only to tell apart formats whose bytes look alike (a ZIP
/// that is an Office document).
pub fn sniff(content: &[u8], declared: &str) -> String {
    if let Some(kind) = infer::get(content) {
        let found = kind.mime_type();
        // Office documents are ZIP containers: keep the declared Office type when the bytes are a ZIP.
        if found == "application/zip" && declared.starts_with("application/vnd.openxmlformats-officedocument.") {
            return declared.to_string();
        }
        return found.to_string();
    }
    let head = &content[..content.len().min(8192)];
    // A UTF-8 sequence cut at the 8192nd byte is still text.
    let text = match std::str::from_utf8(head) {
        Ok(t) => Some(t),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match text {
        Some(t) if !content.is_empty() && !t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}')) => "text/plain".into(),
        _ => "application/octet-stream".into(),
    }
}

/// The `Content-Type` a download is served with: the detected type when a browser shows it
/// inertly, `application/octet-stream` otherwise (HTML, SVG, XML and scripts are never served
/// as themselves).
pub fn served_type(detected: &str) -> &str {
    const INERT: [&str; 10] =
        ["application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "application/zip", "audio/mpeg", "video/mp4", "text/csv"];
    if INERT.contains(&detected) || detected.starts_with("application/vnd.openxmlformats-officedocument.") {
        detected
    } else {
        "application/octet-stream"
    }
}

/// `Content-Disposition: attachment` with the file name (RFC 6266: an ASCII fallback and the
/// UTF-8 name percent-encoded).
pub fn content_disposition(filename: Option<&str>) -> String {
    let name = filename.filter(|n| !n.trim().is_empty()).unwrap_or("attachment");
    let ascii: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || " ._-()".contains(c) { c } else { '_' }).take(100).collect();
    let encoded: String = name
        .bytes()
        .take(300)
        .map(|b| if b.is_ascii_alphanumeric() || b".-_".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_is_named_by_its_id_or_its_unique_file_name() {
        let names = [Some("a.pdf"), None, Some("dup.txt"), Some("dup.txt"), Some("att_0")];
        assert_eq!(select("att_1", &names), Ok(1));
        assert_eq!(select("a.pdf", &names), Ok(0));
        // An id wins over a file name that looks like one.
        assert_eq!(select("att_0", &names), Ok(0));
        assert_eq!(select("dup.txt", &names), Err(Unselected::Ambiguous(vec!["att_2".into(), "att_3".into()])));
        assert_eq!(select("att_9", &names), Err(Unselected::Missing));
        assert_eq!(select("att_01", &names), Err(Unselected::Missing), "one spelling per id");
        assert_eq!(select("A.PDF", &names), Err(Unselected::Missing), "file names match exactly");
        assert_eq!(attachment_id(3), "att_3");
        assert_eq!(selector(Some("a.pdf")), Ok("a.pdf"));
        for bad in [None, Some(""), Some(&*"x".repeat(256))] {
            assert_eq!(selector(bad).unwrap_err().field(), Some("attachment"));
        }
    }

    #[test]
    fn the_bytes_decide_the_type_not_the_sender() {
        assert_eq!(sniff(b"%PDF-1.7\n...", "image/png"), "application/pdf");
        assert_eq!(sniff(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0], "application/pdf"), "image/png");
        assert_eq!(sniff(b"just some words\r\nand a line", "application/x-msdownload"), "text/plain");
        assert_eq!(sniff(&[0u8, 1, 2, 3, 0xff], "text/plain"), "application/octet-stream");
        assert_eq!(sniff(b"", "text/plain"), "application/octet-stream");
        assert_eq!(sniff(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff", "application/pdf"), "application/vnd.microsoft.portable-executable");
    }

    #[test]
    fn a_zip_keeps_its_declared_office_type_but_nothing_else() {
        let zip = [b'P', b'K', 3, 4, 20, 0, 0, 0, 0, 0];
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(sniff(&zip, docx), docx);
        assert_eq!(sniff(&zip, "text/html"), "application/zip");
    }

    #[test]
    fn only_inert_types_are_served_as_themselves() {
        assert_eq!(served_type("application/pdf"), "application/pdf");
        assert_eq!(served_type("text/html"), "application/octet-stream");
        assert_eq!(served_type("image/svg+xml"), "application/octet-stream");
        assert_eq!(served_type("application/vnd.microsoft.portable-executable"), "application/octet-stream");
    }

    #[test]
    fn the_file_name_is_quoted_safely() {
        assert_eq!(content_disposition(Some("report.pdf")), "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf");
        let d = content_disposition(Some("Ver\"trag\r\n€.pdf"));
        assert!(d.starts_with("attachment; filename=\"Ver_trag___.pdf\"; filename*=UTF-8''Ver%22trag%0D%0A%E2%82%AC.pdf"), "{d}");
        assert_eq!(content_disposition(None), "attachment; filename=\"attachment\"; filename*=UTF-8''attachment");
        assert_eq!(r2_key("msg_1", 2), "inbound/msg_1/2");
        assert_eq!(outbound_key("msg_1", 2), "outbound/msg_1/2");
    }
}
