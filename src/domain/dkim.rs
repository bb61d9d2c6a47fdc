//! DKIM signatures (RFC 6376) with relaxed/relaxed canonicalisation, for `rsa-sha256` and
//! `ed25519-sha256` (RFC 8463). Signing is split in two so the private-key operation can happen
//! where the key lives: `prepare` canonicalises and returns the bytes to sign, `finish` writes
//! the `DKIM-Signature` header around the signature. Ed25519 is signed here (`sign_ed25519`);
//! RSA is signed by WebCrypto in the worker and by the `rsa` crate in the tests below.

use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// Headers signed when present, each instance. `from` is signed once more than it appears
/// ("over-signed"), so a second From cannot be added without breaking the signature.
/// `Message-ID` is left out: Cloudflare Email Service puts its own in place of ours (as
/// wrangler's local binding does), which would break every signature; `X-MultiMail-Message-Id`
/// carries ours, signed.
pub const SIGNED_HEADERS: &[&str] = &[
    "from", "to", "cc", "subject", "date", "reply-to", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe",
    "list-unsubscribe-post", "multimail-identity", "x-multimail-message-id",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// A signature waiting for its private-key operation.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `DKIM-Signature: …; b=` as it will be written, folded, without the signature.
    header: String,
    /// What the key signs: for rsa-sha256 these bytes with SHA-256 (PKCS#1 v1.5, as WebCrypto's
    /// RSASSA-PKCS1-v1_5 does); for ed25519-sha256 the SHA-256 of them is signed (RFC 8463 §3).
    pub data: Vec<u8>,
    pub algorithm: Algorithm,
}

/// The header block and the body, split at the first empty line (CRLF or bare LF).
fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    for i in 0..message.len() {
        if message[i..].starts_with(b"\r\n\r\n") {
            return (&message[..i + 2], &message[i + 4..]);
        }
        if message[i..].starts_with(b"\n\n") {
            return (&message[..i + 1], &message[i + 2..]);
        }
    }
    (message, b"")
}

/// The header fields in order: (name as written, the whole field as written, folding included).
fn header_fields(block: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = vec![];
    for line in block.split_inclusive(|b| *b == b'\n') {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        let name = line.iter().position(|b| *b == b':').map(|i| String::from_utf8_lossy(&line[..i]).trim().to_string());
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            fields.push((name, line.to_vec()));
        }
    }
    fields
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Relaxed header canonicalisation (RFC 6376 §3.4.2) of one whole field, without the final CRLF.
pub fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|b| *b == b':').unwrap_or(field.len());
    let name = String::from_utf8_lossy(&field[..colon]).trim().to_ascii_lowercase();
    let raw = field.get(colon + 1..).unwrap_or(b"");
    let mut value = Vec::with_capacity(raw.len());
    let mut pending_space = false;
    for &b in raw.iter().filter(|b| **b != b'\r' && **b != b'\n') {
        if is_wsp(b) {
            pending_space = true;
        } else {
            if pending_space && !value.is_empty() {
                value.push(b' ');
            }
            pending_space = false;
            value.push(b);
        }
    }
    let mut out = name.into_bytes();
    out.push(b':');
    out.extend_from_slice(&value);
    out
}

/// Relaxed body canonicalisation (RFC 6376 §3.4.4): runs of whitespace become one space,
/// whitespace at line ends and empty lines at the end go, and a non-empty body ends in CRLF.
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = vec![];
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut out = Vec::with_capacity(line.len());
        let mut pending_space = false;
        for &b in line {
            if is_wsp(b) {
                pending_space = true;
            } else {
                if pending_space {
                    out.push(b' ');
                }
                pending_space = false;
                out.push(b);
            }
        }
        lines.push(out);
    }
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut out = Vec::with_capacity(body.len());
    for l in &lines {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `h=`: the names of `SIGNED_HEADERS` present in the message, once per instance, with `from`
/// over-signed.
fn signed_names(fields: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut names = vec![];
    for want in SIGNED_HEADERS {
        let n = fields.iter().filter(|(name, _)| name.eq_ignore_ascii_case(want)).count();
        let n = if *want == "from" { n + 1 } else { n };
        names.extend(std::iter::repeat_n(want.to_string(), n));
    }
    names
}

/// The canonicalised fields named in `h=`, each instance taken from the bottom up (§5.4.2);
/// a name with no instance left contributes nothing.
fn signed_header_data(fields: &[(String, Vec<u8>)], names: &[String]) -> Vec<u8> {
    let mut used: Vec<usize> = vec![];
    let mut out = vec![];
    for want in names {
        let pick = fields.iter().enumerate().rev().find(|(i, (name, _))| name.eq_ignore_ascii_case(want) && !used.contains(i));
        if let Some((i, (_, field))) = pick {
            used.push(i);
            out.extend_from_slice(&relaxed_header(field));
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Canonicalises `message` and returns what to sign for `d=domain; s=selector; t=timestamp`.
pub fn prepare(message: &[u8], algorithm: Algorithm, domain: &str, selector: &str, timestamp: i64) -> Prepared {
    let (head, body) = split_message(message);
    let fields = header_fields(head);
    let names = signed_names(&fields);
    let bh = STANDARD.encode(Sha256::digest(relaxed_body(body)));
    let header = format!(
        "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={domain}; s={selector};\r\n\tt={timestamp}; h={};\r\n\tbh={bh};\r\n\tb=",
        algorithm.as_str(),
        names.join(":"),
    );
    let mut data = signed_header_data(&fields, &names);
    data.extend_from_slice(&relaxed_header(header.as_bytes()));
    Prepared { header, data, algorithm }
}

/// The complete `DKIM-Signature` field (ending in CRLF) with the signature folded in.
pub fn finish(prepared: &Prepared, signature: &[u8]) -> String {
    let b = STANDARD.encode(signature);
    let mut out = prepared.header.clone();
    for (i, chunk) in b.as_bytes().chunks(72).enumerate() {
        if i > 0 {
            out.push_str("\r\n\t ");
        }
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
    }
    out.push_str("\r\n");
    out
}

/// The Ed25519 private key of a 32-byte seed, and its public key (the DNS record's `p=`).
pub fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// Signs with Ed25519 (RFC 8463: the key signs the SHA-256 of the canonicalised data).
pub fn sign_ed25519(prepared: &Prepared, seed: &[u8; 32]) -> String {
    let digest = Sha256::digest(&prepared.data);
    let sig = SigningKey::from_bytes(seed).sign(&digest);
    finish(prepared, &sig.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    use rsa::pkcs1v15::{SigningKey as RsaSigningKey, VerifyingKey as RsaVerifyingKey};
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::SignatureEncoding;

    const MESSAGE: &str = "From: Agent <agent@example.com>\r\nTo: ada@example.net\r\nSubject: Hello\r\n  there\r\nDate: Mon, 24 Nov 2025 16:00:00 +0000\r\nMessage-ID: <msg_1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nX-Other: not signed\r\n\r\nHi  Ada,\r\n\r\nbye \r\n\r\n\r\n";

    /// The test's own verifier: take the DKIM-Signature off the top, canonicalise again, check.
    fn reverify(signed: &str) -> (String, Vec<u8>, Vec<u8>) {
        let (head, _) = split_message(signed.as_bytes());
        let fields = header_fields(head);
        let (_, sig_field) = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case("dkim-signature")).unwrap().clone();
        let sig_text = String::from_utf8(sig_field.clone()).unwrap();
        let unfolded: String = sig_text.replace("\r\n", "");
        let tag = |t: &str| unfolded.split(';').find_map(|p| p.trim().strip_prefix(&format!("{t}=")).map(|v| v.split_whitespace().collect::<String>())).unwrap();
        let b = STANDARD.decode(tag("b")).unwrap();
        let names: Vec<String> = tag("h").split(':').map(str::to_string).collect();
        let rest: Vec<(String, Vec<u8>)> = fields.into_iter().filter(|(n, _)| !n.eq_ignore_ascii_case("dkim-signature")).collect();
        let (_, body) = split_message(signed.as_bytes());
        assert_eq!(tag("bh"), STANDARD.encode(Sha256::digest(relaxed_body(body))), "body hash");
        let mut data = signed_header_data(&rest, &names);
        // The field as signed: everything up to and including the final `b=`, its value left out.
        let b_at = sig_text.rfind("\tb=").unwrap() + 3;
        data.extend_from_slice(&relaxed_header(sig_text[..b_at].as_bytes()));
        (tag("a"), data, b)
    }

    #[test]
    fn rfc6376_example_canonicalisation() {
        // RFC 6376 §3.4.6.
        let msg = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (head, body) = split_message(msg);
        let fields = header_fields(head);
        let canon: Vec<Vec<u8>> = fields.iter().map(|(_, f)| relaxed_header(f)).collect();
        assert_eq!(canon, vec![b"a:X".to_vec(), b"b:Y Z".to_vec()]);
        assert_eq!(relaxed_body(body), b" C\r\nD E\r\n");
    }

    #[test]
    fn an_empty_body_canonicalises_to_nothing() {
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
    }

    #[test]
    fn bare_newlines_are_read_as_crlf() {
        assert_eq!(relaxed_body(b"a \nb\n"), b"a\r\nb\r\n");
        let (head, body) = split_message(b"From: a\nTo: b\n\nhi\n");
        assert_eq!(header_fields(head).len(), 2);
        assert_eq!(body, b"hi\n");
    }

    #[test]
    fn signs_present_headers_bottom_up_and_over_signs_from() {
        let fields = header_fields(split_message(b"Received: x\r\nTo: a@x\r\nFrom: b@x\r\nTo: c@x\r\n\r\n").0);
        let names = signed_names(&fields);
        assert_eq!(names, vec!["from", "from", "to", "to"]);
        let data = String::from_utf8(signed_header_data(&fields, &names)).unwrap();
        assert_eq!(data, "from:b@x\r\nto:c@x\r\nto:a@x\r\n", "the second `from` has no instance left");
    }

    #[test]
    fn the_header_is_folded_and_carries_the_tags() {
        let p = prepare(MESSAGE.as_bytes(), Algorithm::Ed25519Sha256, "example.com", "mm1e", 1_764_000_000);
        let h = sign_ed25519(&p, &[9; 32]);
        assert!(h.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com; s=mm1e;\r\n\tt=1764000000; h=from:from:to:subject:date:mime-version:content-type;"), "{h}");
        assert!(h.ends_with("\r\n"));
        assert!(h.split("\r\n").all(|l| l.len() <= 100), "{h}");
        assert!(!h.contains("x-other"));
    }

    #[test]
    fn ed25519_signature_verifies_over_the_sha256_of_the_canonical_data() {
        let seed = [42u8; 32];
        let p = prepare(MESSAGE.as_bytes(), Algorithm::Ed25519Sha256, "example.com", "mm1e", 1_764_000_000);
        let signed = format!("{}{MESSAGE}", sign_ed25519(&p, &seed));
        let (a, data, b) = reverify(&signed);
        assert_eq!(a, "ed25519-sha256");
        let key = VerifyingKey::from_bytes(&ed25519_public(&seed)).unwrap();
        let sig = Signature::from_slice(&b).unwrap();
        key.verify(&Sha256::digest(&data), &sig).expect("verifies");
        // Relaxed canonicalisation tolerates re-folding and whitespace changes…
        let refolded = signed.replace("Subject: Hello\r\n  there", "Subject:   Hello there").replace("Hi  Ada,", "Hi Ada,  ");
        let (_, data2, _) = reverify(&refolded);
        key.verify(&Sha256::digest(&data2), &sig).expect("relaxed survives whitespace changes");
        // …but not a changed word in a signed header.
        let (_, data3, _) = reverify(&signed.replace("Subject: Hello", "Subject: Jello"));
        assert!(key.verify(&Sha256::digest(&data3), &sig).is_err());
    }

    #[test]
    fn a_relay_replacing_message_id_does_not_break_the_signature() {
        let seed = [5u8; 32];
        let p = prepare(MESSAGE.as_bytes(), Algorithm::Ed25519Sha256, "example.com", "mm1e", 0);
        let signed = format!("{}{MESSAGE}", sign_ed25519(&p, &seed)).replace("<msg_1@example.com>", "<relay-chosen@example.com>");
        let (_, data, b) = reverify(&signed);
        let key = VerifyingKey::from_bytes(&ed25519_public(&seed)).unwrap();
        key.verify(&Sha256::digest(&data), &Signature::from_slice(&b).unwrap()).expect("verifies");
    }

    #[test]
    #[should_panic(expected = "body hash")]
    fn a_changed_body_breaks_the_body_hash() {
        let p = prepare(MESSAGE.as_bytes(), Algorithm::Ed25519Sha256, "example.com", "mm1e", 0);
        let signed = format!("{}{MESSAGE}", sign_ed25519(&p, &[1; 32]));
        reverify(&signed.replace("bye", "BYE"));
    }

    // A 2048-bit test key (PKCS#8), made with `openssl genpkey -algorithm RSA`; only for tests.
    const RSA_TEST_KEY: &str = include_str!("../../tests/fixtures/dkim/rsa2048.pk8.pem");

    #[test]
    fn rsa_sha256_signature_as_webcrypto_makes_it_verifies() {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_TEST_KEY).unwrap();
        let signer = RsaSigningKey::<Sha256>::new(key.clone());
        let p = prepare(MESSAGE.as_bytes(), Algorithm::RsaSha256, "example.com", "mm1r", 1_764_000_000);
        let sig = signer.sign(&p.data).to_vec();
        assert_eq!(sig.len(), 256);
        let signed = format!("{}{MESSAGE}", finish(&p, &sig));
        let (a, data, b) = reverify(&signed);
        assert_eq!(a, "rsa-sha256");
        let verifier = RsaVerifyingKey::<Sha256>::new(key.to_public_key());
        verifier.verify(&data, &rsa::pkcs1v15::Signature::try_from(b.as_slice()).unwrap()).expect("verifies");
    }

    #[test]
    fn two_signatures_on_one_message_do_not_sign_each_other() {
        let e = prepare(MESSAGE.as_bytes(), Algorithm::Ed25519Sha256, "example.com", "mm1e", 0);
        let r = prepare(MESSAGE.as_bytes(), Algorithm::RsaSha256, "example.com", "mm1r", 0);
        let signed_part = |d: &[u8]| String::from_utf8_lossy(d).split("dkim-signature:").next().unwrap().to_string();
        assert_eq!(signed_part(&e.data), signed_part(&r.data), "the same headers, and neither signature");
        assert!(!String::from_utf8_lossy(&r.data).contains("a=ed25519"));
    }
}
