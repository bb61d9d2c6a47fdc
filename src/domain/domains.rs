//! Custom sending domains: the DNS records a domain publishes before mail may leave from it
//! (SPF, two DKIM keys, a DMARC policy, and Postmark's return path where Postmark delivers), and
//! the verdict on what DNS answered, record by record and for the domain as a whole.

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::{Deserialize, Serialize};

use super::doh::{Answer, RrType};

pub const DKIM_ED25519_SELECTOR: &str = "mm1e";
pub const DKIM_RSA_SELECTOR: &str = "mm1r";
pub const DEFAULT_SPF_INCLUDE: &str = "_spf.mx.cloudflare.net";
pub const POSTMARK_RETURN_PATH_HOST: &str = "pm-bounces";
pub const POSTMARK_RETURN_PATH_TARGET: &str = "pm.mtasv.net";
/// A domain whose records are still missing this long after it was added is `failed`.
pub const PENDING_GRACE_MS: i64 = 72 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Spf,
    Dkim,
    Dmarc,
    ReturnPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Not looked up yet.
    Pending,
    Verified,
    /// No record of that type at that name.
    Missing,
    /// A record is there, but not the one asked for (see `found`).
    WrongValue,
    /// The resolver could not answer; the previous verdict stands.
    LookupFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    Pending,
    Verified,
    Failed,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainStatus::Pending => "pending",
            DomainStatus::Verified => "verified",
            DomainStatus::Failed => "failed",
        }
    }
}

/// One record to publish, with the verdict of its last lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `TXT` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The fully qualified name, without the final dot.
    pub name: String,
    pub value: String,
    pub purpose: Purpose,
    /// Whether the domain's verification waits for it (the return path is a recommendation).
    pub required: bool,
    pub status: RecordStatus,
    /// What DNS held at that name last time (the records of that type), for the person fixing it.
    #[serde(default)]
    pub found: Vec<String>,
}

impl DnsRecord {
    fn new(kind: RrType, name: String, value: String, purpose: Purpose, required: bool) -> Self {
        DnsRecord { kind: kind.as_str().into(), name, value, purpose, required, status: RecordStatus::Pending, found: vec![] }
    }

    pub fn rr_type(&self) -> RrType {
        if self.kind == "CNAME" { RrType::Cname } else { RrType::Txt }
    }
}

/// The deployment's side of the records.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// The host SPF includes (`SPF_INCLUDE`, by default Cloudflare Email Service's).
    pub spf_include: String,
    /// Whether Postmark delivers (it wants a return-path CNAME).
    pub postmark: bool,
}

/// The records `domain` (already normalised: lower-case ASCII) publishes, for its two DKIM
/// public keys: Ed25519 (32 raw bytes) and RSA (SubjectPublicKeyInfo DER).
pub fn records_for(domain: &str, ed25519_public: &[u8; 32], rsa_spki_der: &[u8], s: &RecordSettings) -> Vec<DnsRecord> {
    let mut records = vec![
        DnsRecord::new(RrType::Txt, domain.to_string(), format!("v=spf1 include:{} ~all", s.spf_include), Purpose::Spf, true),
        DnsRecord::new(
            RrType::Txt,
            format!("{DKIM_ED25519_SELECTOR}._domainkey.{domain}"),
            format!("v=DKIM1; k=ed25519; p={}", STANDARD.encode(ed25519_public)),
            Purpose::Dkim,
            true,
        ),
        DnsRecord::new(
            RrType::Txt,
            format!("{DKIM_RSA_SELECTOR}._domainkey.{domain}"),
            format!("v=DKIM1; k=rsa; p={}", STANDARD.encode(rsa_spki_der)),
            Purpose::Dkim,
            true,
        ),
        DnsRecord::new(RrType::Txt, format!("_dmarc.{domain}"), format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"), Purpose::Dmarc, true),
    ];
    if s.postmark {
        records.push(DnsRecord::new(
            RrType::Cname,
            format!("{POSTMARK_RETURN_PATH_HOST}.{domain}"),
            POSTMARK_RETURN_PATH_TARGET.into(),
            Purpose::ReturnPath,
            false,
        ));
    }
    records
}

/// `k=v; k=v` tags of a DKIM/DMARC record, names lower-cased, whitespace removed from values.
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.chars().filter(|c| !c.is_whitespace()).collect()))
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The verdict on one record given what the resolver answered at its name.
pub fn check_record(record: &DnsRecord, answer: &Answer) -> (RecordStatus, Vec<String>) {
    let found = match answer {
        Answer::Failed(_) => return (RecordStatus::LookupFailed, record.found.clone()),
        Answer::Records(r) => r.clone(),
    };
    let status = match record.purpose {
        Purpose::Spf => {
            let spf: Vec<&String> = found.iter().filter(|r| r.trim_start().to_ascii_lowercase().starts_with("v=spf1")).collect();
            let include = format!("include:{}", expected_include(&record.value));
            match spf.as_slice() {
                [] => RecordStatus::Missing,
                // Two SPF records make SPF fail for everyone (RFC 7208 §4.5).
                [one] if one.split_whitespace().any(|t| t.eq_ignore_ascii_case(&include) || t.eq_ignore_ascii_case(&format!("+{include}"))) => RecordStatus::Verified,
                _ => RecordStatus::WrongValue,
            }
        }
        Purpose::Dkim => {
            let want = tags(&record.value);
            let dkim: Vec<Vec<(String, String)>> = found.iter().map(|r| tags(r)).filter(|t| tag(t, "p").is_some()).collect();
            if dkim.is_empty() {
                RecordStatus::Missing
            } else if dkim.iter().any(|t| tag(t, "p") == tag(&want, "p") && tag(t, "k").unwrap_or("rsa").eq_ignore_ascii_case(tag(&want, "k").unwrap_or("rsa"))) {
                RecordStatus::Verified
            } else {
                RecordStatus::WrongValue
            }
        }
        Purpose::Dmarc => {
            // The suggested policy is p=none; any valid DMARC policy the owner chose will do.
            let dmarc: Vec<&String> = found.iter().filter(|r| r.trim_start().to_ascii_uppercase().starts_with("V=DMARC1")).collect();
            match dmarc.as_slice() {
                [] => RecordStatus::Missing,
                [one] if tag(&tags(one), "p").is_some_and(|p| ["none", "quarantine", "reject"].contains(&p.to_ascii_lowercase().as_str())) => RecordStatus::Verified,
                _ => RecordStatus::WrongValue,
            }
        }
        Purpose::ReturnPath => match found.as_slice() {
            [] => RecordStatus::Missing,
            f if f.iter().any(|t| t.trim_end_matches('.').eq_ignore_ascii_case(&record.value)) => RecordStatus::Verified,
            _ => RecordStatus::WrongValue,
        },
    };
    (status, found)
}

/// `v=spf1 include:X ~all` → `X`.
fn expected_include(spf_value: &str) -> &str {
    spf_value.split_whitespace().find_map(|t| t.strip_prefix("include:")).unwrap_or("")
}

/// The domain's status after a check: verified when every required record is; otherwise
/// pending while it is new and nothing contradicts it, failed when a record holds a wrong value,
/// when the grace period has passed, or when a verified domain lost a record. A lookup the
/// resolver could not answer changes nothing.
pub fn domain_status(records: &[DnsRecord], previous: DomainStatus, created_at: i64, now: i64) -> DomainStatus {
    let required: Vec<&DnsRecord> = records.iter().filter(|r| r.required).collect();
    if required.iter().any(|r| r.status == RecordStatus::LookupFailed) {
        return previous;
    }
    if required.iter().all(|r| r.status == RecordStatus::Verified) {
        return DomainStatus::Verified;
    }
    let contradicted = required.iter().any(|r| r.status == RecordStatus::WrongValue);
    if contradicted || previous == DomainStatus::Verified || now - created_at > PENDING_GRACE_MS {
        DomainStatus::Failed
    } else {
        DomainStatus::Pending
    }
}

/// Applies one round of answers (one per record, in order) and returns the new domain status.
pub fn apply_answers(records: &mut [DnsRecord], answers: &[Answer], previous: DomainStatus, created_at: i64, now: i64) -> DomainStatus {
    for (r, a) in records.iter_mut().zip(answers) {
        let (status, found) = check_record(r, a);
        if status == RecordStatus::LookupFailed && r.status != RecordStatus::Pending {
            continue; // keep the last real verdict
        }
        r.status = status;
        r.found = found;
    }
    domain_status(records, previous, created_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(postmark: bool) -> RecordSettings {
        RecordSettings { spf_include: DEFAULT_SPF_INCLUDE.into(), postmark }
    }

    fn recs(postmark: bool) -> Vec<DnsRecord> {
        records_for("example.com", &[1; 32], &[0x30, 0x82, 0x01, 0x22], &settings(postmark))
    }

    fn found(v: &[&str]) -> Answer {
        Answer::Records(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn names_spf_two_dkim_selectors_and_dmarc() {
        let r = recs(false);
        let rows: Vec<(&str, &str)> = r.iter().map(|r| (r.kind.as_str(), r.name.as_str())).collect();
        assert_eq!(rows, vec![
            ("TXT", "example.com"),
            ("TXT", "mm1e._domainkey.example.com"),
            ("TXT", "mm1r._domainkey.example.com"),
            ("TXT", "_dmarc.example.com"),
        ]);
        assert_eq!(r[0].value, "v=spf1 include:_spf.mx.cloudflare.net ~all");
        assert_eq!(r[1].value, format!("v=DKIM1; k=ed25519; p={}", STANDARD.encode([1u8; 32])));
        assert_eq!(r[2].value, "v=DKIM1; k=rsa; p=MIIBIg==");
        assert_eq!(r[3].value, "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com");
        assert!(r.iter().all(|r| r.required && r.status == RecordStatus::Pending));
    }

    #[test]
    fn postmark_adds_an_optional_return_path_cname() {
        let r = recs(true);
        let rp = r.last().unwrap();
        assert_eq!((rp.kind.as_str(), rp.name.as_str(), rp.value.as_str(), rp.required), ("CNAME", "pm-bounces.example.com", "pm.mtasv.net", false));
    }

    #[test]
    fn spf_needs_exactly_one_record_with_the_include() {
        let spf = &recs(false)[0];
        assert_eq!(check_record(spf, &found(&["v=spf1 include:_spf.mx.cloudflare.net ~all"])).0, RecordStatus::Verified);
        assert_eq!(check_record(spf, &found(&["google-site-verification=x", "v=spf1 ip4:1.2.3.4 include:_SPF.mx.cloudflare.net -all"])).0, RecordStatus::Verified);
        assert_eq!(check_record(spf, &found(&["google-site-verification=x"])).0, RecordStatus::Missing);
        assert_eq!(check_record(spf, &found(&["v=spf1 include:spf.other.net ~all"])).0, RecordStatus::WrongValue);
        let two = check_record(spf, &found(&["v=spf1 include:_spf.mx.cloudflare.net ~all", "v=spf1 -all"]));
        assert_eq!(two.0, RecordStatus::WrongValue, "two SPF records are a permerror");
        assert_eq!(two.1.len(), 2, "what was found is kept");
    }

    #[test]
    fn dkim_needs_our_public_key() {
        let ed = &recs(false)[1];
        let p = STANDARD.encode([1u8; 32]);
        assert_eq!(check_record(ed, &found(&[&format!("v=DKIM1; k=ed25519; p={p}")])).0, RecordStatus::Verified);
        // Long keys come split by whitespace in some control panels.
        let (a, b) = p.split_at(10);
        assert_eq!(check_record(ed, &found(&[&format!("v=DKIM1;k=ed25519;p={a} {b}")])).0, RecordStatus::Verified);
        assert_eq!(check_record(ed, &found(&[&format!("v=DKIM1; k=rsa; p={p}")])).0, RecordStatus::WrongValue);
        assert_eq!(check_record(ed, &found(&["v=DKIM1; k=ed25519; p=AAAA"])).0, RecordStatus::WrongValue);
        assert_eq!(check_record(ed, &found(&[])).0, RecordStatus::Missing);
        let rsa = &recs(false)[2];
        assert_eq!(check_record(rsa, &found(&["v=DKIM1; p=MIIBIg=="])).0, RecordStatus::Verified, "k defaults to rsa");
    }

    #[test]
    fn dmarc_accepts_any_valid_policy() {
        let d = &recs(false)[3];
        assert_eq!(check_record(d, &found(&["v=DMARC1; p=reject; rua=mailto:x@example.com"])).0, RecordStatus::Verified);
        assert_eq!(check_record(d, &found(&["v=DMARC1; rua=mailto:x@example.com"])).0, RecordStatus::WrongValue);
        assert_eq!(check_record(d, &found(&[])).0, RecordStatus::Missing);
    }

    #[test]
    fn return_path_compares_the_target() {
        let rp = recs(true).pop().unwrap();
        assert_eq!(check_record(&rp, &found(&["PM.mtasv.net."])).0, RecordStatus::Verified);
        assert_eq!(check_record(&rp, &found(&["elsewhere.example.net"])).0, RecordStatus::WrongValue);
    }

    fn all_published(r: &[DnsRecord]) -> Vec<Answer> {
        r.iter().map(|r| found(&[&r.value])).collect()
    }

    #[test]
    fn verified_when_every_required_record_is() {
        let mut r = recs(true);
        let mut answers = all_published(&r);
        *answers.last_mut().unwrap() = found(&[]); // the optional return path is missing
        assert_eq!(apply_answers(&mut r, &answers, DomainStatus::Pending, 0, 1000), DomainStatus::Verified);
        assert_eq!(r.last().unwrap().status, RecordStatus::Missing);
    }

    #[test]
    fn missing_records_stay_pending_during_the_grace_period_then_fail() {
        let mut r = recs(false);
        let none: Vec<Answer> = r.iter().map(|_| found(&[])).collect();
        assert_eq!(apply_answers(&mut r, &none, DomainStatus::Pending, 0, 1000), DomainStatus::Pending);
        assert!(r.iter().all(|r| r.status == RecordStatus::Missing));
        assert_eq!(apply_answers(&mut r, &none, DomainStatus::Pending, 0, PENDING_GRACE_MS + 1), DomainStatus::Failed);
    }

    #[test]
    fn a_wrong_value_fails_at_once() {
        let mut r = recs(false);
        let mut answers = all_published(&r);
        answers[0] = found(&["v=spf1 include:spf.other.net ~all"]);
        assert_eq!(apply_answers(&mut r, &answers, DomainStatus::Pending, 0, 1000), DomainStatus::Failed);
        assert_eq!(r[0].status, RecordStatus::WrongValue);
        assert_eq!(r[0].found, vec!["v=spf1 include:spf.other.net ~all".to_string()]);
    }

    #[test]
    fn a_verified_domain_that_loses_a_record_fails() {
        let mut r = recs(false);
        let mut answers = all_published(&r);
        assert_eq!(apply_answers(&mut r, &answers, DomainStatus::Pending, 0, 1000), DomainStatus::Verified);
        answers[2] = found(&[]);
        assert_eq!(apply_answers(&mut r, &answers, DomainStatus::Verified, 0, 2000), DomainStatus::Failed);
    }

    #[test]
    fn resolver_failures_change_nothing() {
        let mut r = recs(false);
        let answers = all_published(&r);
        apply_answers(&mut r, &answers, DomainStatus::Pending, 0, 1000);
        let mut broken = answers.clone();
        broken[1] = Answer::Failed("SERVFAIL".into());
        assert_eq!(apply_answers(&mut r, &broken, DomainStatus::Verified, 0, 2000), DomainStatus::Verified);
        assert_eq!(r[1].status, RecordStatus::Verified, "the last real verdict stays");
        let mut fresh = recs(false);
        assert_eq!(apply_answers(&mut fresh, &broken, DomainStatus::Pending, 0, 1000), DomainStatus::Pending);
        assert_eq!(fresh[1].status, RecordStatus::LookupFailed);
    }

    #[test]
    fn statuses_serialise_in_snake_case() {
        let r = &recs(false)[0];
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["type"], "TXT");
        assert_eq!(v["status"], "pending");
        assert_eq!(v["purpose"], "spf");
        assert_eq!(serde_json::to_value(RecordStatus::WrongValue).unwrap(), "wrong_value");
    }
}
