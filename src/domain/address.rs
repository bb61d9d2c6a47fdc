//! Email addresses, parsed once at the edge into types that cannot hold an invalid value.
//! `EmailAddress` is an addr-spec with a dot-atom local part and a lower-cased ASCII (punycode)
//! domain; `Recipient` adds an optional display name (`Ada <ada@example.com>`).

use std::fmt;

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_ADDRESS: usize = 254;
const MAX_DISPLAY_NAME: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    local: String,
    domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> AddressError {
    AddressError(msg.into())
}

/// RFC 5322 `atext`.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if has_control(input) {
            return Err(err("an address may not contain control characters (CR, LF, NUL…)"));
        }
        let s = input.trim();
        let at = s.rfind('@').ok_or_else(|| err(format!("`{s}` has no @")))?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        Self::check_local(local)?;
        let domain = normalize_domain(domain)?;
        let addr = EmailAddress { local: local.to_string(), domain };
        if addr.to_string().len() > MAX_ADDRESS {
            return Err(err(format!("an address may be at most {MAX_ADDRESS} characters")));
        }
        Ok(addr)
    }

    fn check_local(local: &str) -> Result<(), AddressError> {
        if local.is_empty() {
            return Err(err("the part before @ is empty"));
        }
        if local.len() > MAX_LOCAL {
            return Err(err(format!("the part before @ may be at most {MAX_LOCAL} characters")));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(err("the part before @ may not start or end with a dot or hold two in a row"));
        }
        if let Some(c) = local.chars().find(|c| *c != '.' && !is_atext(*c)) {
            return Err(err(format!("`{c}` is not allowed before the @")));
        }
        Ok(())
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The local part without a `+tag` (plus-addressing routes `name+tag@` to `name@`).
    pub fn without_plus_tag(&self) -> EmailAddress {
        match self.local.split_once('+') {
            Some((base, _)) if !base.is_empty() => {
                EmailAddress { local: base.to_string(), domain: self.domain.clone() }
            }
            _ => self.clone(),
        }
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Lower-cases a domain and turns an internationalised one into punycode (`bücher.de` →
/// `xn--bcher-kva.de`), then checks the label rules.
pub fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(err("the domain is empty"));
    }
    if has_control(domain) {
        return Err(err("a domain may not contain control characters"));
    }
    let ascii = idna::domain_to_ascii(domain.trim_end_matches('.'))
        .map_err(|_| err(format!("`{domain}` is not a valid domain")))?;
    if ascii.len() > MAX_DOMAIN {
        return Err(err(format!("a domain may be at most {MAX_DOMAIN} characters")));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(err(format!("`{domain}` needs a dot (example.com)")));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(err(format!("`{domain}` is not a valid domain")));
        }
    }
    Ok(ascii)
}

/// A recipient or sender as written in a request: an address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Recipient {
    /// Accepts `ada@example.com`, `Ada Lovelace <ada@example.com>` and
    /// `"Lovelace, Ada" <ada@example.com>`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if has_control(input) {
            return Err(err("an address may not contain control characters (CR, LF, NUL…)"));
        }
        let s = input.trim();
        let Some(open) = s.rfind('<') else {
            return Ok(Recipient { name: None, address: EmailAddress::parse(s)? });
        };
        if !s.ends_with('>') {
            return Err(err(format!("`{s}` opens < without closing it at the end")));
        }
        let address = EmailAddress::parse(&s[open + 1..s.len() - 1])?;
        let raw_name = s[..open].trim();
        let name = if raw_name.is_empty() {
            None
        } else if raw_name.len() >= 2 && raw_name.starts_with('"') && raw_name.ends_with('"') {
            let inner = &raw_name[1..raw_name.len() - 1];
            Some(unquote(inner)?)
        } else {
            if raw_name.contains(['"', '<', '>']) {
                return Err(err("a display name with quotes or angle brackets must be quoted"));
            }
            Some(raw_name.to_string())
        };
        if let Some(n) = &name {
            if n.chars().count() > MAX_DISPLAY_NAME {
                return Err(err(format!("a display name may be at most {MAX_DISPLAY_NAME} characters")));
            }
        }
        Ok(Recipient { name, address })
    }
}

fn unquote(inner: &str) -> Result<String, AddressError> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or_else(|| err("a display name ends in a lone backslash"))?),
            '"' => return Err(err("an unescaped quote inside a quoted display name")),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "{}", self.address),
            Some(n) if n.chars().all(|c| is_atext(c) || c == ' ') => write!(f, "{n} <{}>", self.address),
            Some(n) => write!(f, "\"{}\" <{}>", n.replace('\\', "\\\\").replace('"', "\\\""), self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_the_domain_but_keeps_the_local_part() {
        let a = EmailAddress::parse("Ada.Lovelace@Example.COM").unwrap();
        assert_eq!(a.to_string(), "Ada.Lovelace@example.com");
    }

    #[test]
    fn turns_idn_domains_into_punycode() {
        let a = EmailAddress::parse("info@Bücher.de").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.de");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "", "plain", "@example.com", "a@", "a@b", "a..b@example.com", ".a@example.com",
            "a.@example.com", "a b@example.com", "a@-example.com", "a@exa_mple.com",
            "a(b)@example.com", "a@example..com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_header_injection() {
        assert!(EmailAddress::parse("a@example.com\r\nBcc: x@evil.com").is_err());
        assert!(Recipient::parse("Ada\n <a@example.com>").is_err());
    }

    #[test]
    fn rejects_overlong_parts() {
        let local = "a".repeat(65);
        assert!(EmailAddress::parse(&format!("{local}@example.com")).is_err());
        let label = "b".repeat(64);
        assert!(EmailAddress::parse(&format!("a@{label}.com")).is_err());
    }

    #[test]
    fn parses_display_names() {
        let r = Recipient::parse("Ada Lovelace <ada@example.com>").unwrap();
        assert_eq!(r.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(r.address.to_string(), "ada@example.com");
        let q = Recipient::parse("\"Lovelace, Ada\" <ada@example.com>").unwrap();
        assert_eq!(q.name.as_deref(), Some("Lovelace, Ada"));
        assert_eq!(q.to_string(), "\"Lovelace, Ada\" <ada@example.com>");
        let bare = Recipient::parse("<ada@example.com>").unwrap();
        assert_eq!(bare.name, None);
    }

    #[test]
    fn rejects_unbalanced_display_names() {
        assert!(Recipient::parse("Ada <ada@example.com").is_err());
        assert!(Recipient::parse("Ad\"a <ada@example.com>").is_err());
    }

    #[test]
    fn strips_plus_tags_for_routing() {
        let a = EmailAddress::parse("support+billing@example.com").unwrap();
        assert_eq!(a.without_plus_tag().to_string(), "support@example.com");
        let b = EmailAddress::parse("+x@example.com").unwrap();
        assert_eq!(b.without_plus_tag(), b);
    }
}
