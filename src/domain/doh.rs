//! DNS over HTTPS, both dialects, as pure functions: the RFC 8484 wire format (`GET ?dns=…`,
//! `application/dns-message`, which every DoH server speaks) and the JSON API of Cloudflare and
//! Google (`GET ?name=…&type=…`, `application/dns-json`). Only what domain verification needs:
//! TXT and CNAME answers for one name.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wire,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wire" | "rfc8484" | "dns-message" => Some(Format::Wire),
            "json" | "dns-json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn accept(self) -> &'static str {
        match self {
            Format::Wire => "application/dns-message",
            Format::Json => "application/dns-json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrType {
    Txt,
    Cname,
    A,
    Aaaa,
}

impl RrType {
    pub fn code(self) -> u16 {
        match self {
            RrType::Txt => 16,
            RrType::Cname => 5,
            RrType::A => 1,
            RrType::Aaaa => 28,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RrType::Txt => "TXT",
            RrType::Cname => "CNAME",
            RrType::A => "A",
            RrType::Aaaa => "AAAA",
        }
    }
}

/// What the resolver said about one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR or NXDOMAIN: the records of that type (TXT strings joined per record, CNAME
    /// targets lower-cased without the final dot); empty when there are none.
    Records(Vec<String>),
    /// The lookup itself failed (SERVFAIL, REFUSED, a malformed answer): nothing is known.
    Failed(String),
}

/// The URL of one query. `base` is the resolver's endpoint (`https://cloudflare-dns.com/dns-query`).
pub fn query_url(base: &str, format: Format, name: &str, rr: RrType) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    match format {
        Format::Wire => format!("{base}{sep}dns={}", URL_SAFE_NO_PAD.encode(wire_query(name, rr))),
        Format::Json => format!("{base}{sep}name={name}&type={}", rr.as_str()),
    }
}

/// An RFC 1035 query with id 0 (RFC 8484 §4.1 asks for 0, which keeps GETs cacheable) and RD set.
pub fn wire_query(name: &str, rr: RrType) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        q.push(bytes.len() as u8);
        q.extend_from_slice(bytes);
    }
    q.push(0);
    q.extend_from_slice(&rr.code().to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

fn rcode_answer(rcode: u16, records: Vec<String>) -> Answer {
    match rcode {
        0 | 3 => Answer::Records(records),
        2 => Answer::Failed("the resolver answered SERVFAIL".into()),
        5 => Answer::Failed("the resolver refused the query".into()),
        n => Answer::Failed(format!("the resolver answered rcode {n}")),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("the DNS answer is truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("the DNS answer is truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// A possibly compressed name starting here; leaves the reader after it.
    fn name(&mut self) -> Result<String, String> {
        let (name, next) = read_name(self.buf, self.pos)?;
        self.pos = next;
        Ok(name)
    }
}

/// Reads a name at `pos` following compression pointers; returns it and the offset after the
/// name as written at `pos`.
fn read_name(buf: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = vec![];
    let mut after = None;
    for _ in 0..128 {
        let len = *buf.get(pos).ok_or("the DNS answer is truncated")?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Ok((labels.join("."), after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = buf.get(pos + 1..pos + 1 + len as usize).ok_or("the DNS answer is truncated")?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + len as usize;
            }
            0xC0 => {
                let lo = *buf.get(pos + 1).ok_or("the DNS answer is truncated")?;
                after.get_or_insert(pos + 2);
                pos = (usize::from(len & 0x3F) << 8) | usize::from(lo);
            }
            _ => return Err("the DNS answer uses an unknown label type".into()),
        }
    }
    Err("the DNS answer has a name compression loop".into())
}

/// Parses an RFC 1035 response: the answers of type `rr` (any owner: a CNAME chain's target
/// answers too).
pub fn parse_wire(buf: &[u8], rr: RrType) -> Answer {
    match parse_wire_inner(buf, rr) {
        Ok(a) => a,
        Err(e) => Answer::Failed(e),
    }
}

fn parse_wire_inner(buf: &[u8], rr: RrType) -> Result<Answer, String> {
    let mut r = Reader { buf, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("the DNS message is not a response".into());
    }
    if flags & 0x0200 != 0 {
        return Err("the DNS answer is truncated (TC)".into());
    }
    let (qd, an) = (r.u16()?, r.u16()?);
    let _ = (r.u16()?, r.u16()?);
    for _ in 0..qd {
        r.name()?;
        r.take(4)?;
    }
    let mut records = vec![];
    for _ in 0..an {
        r.name()?;
        let (ty, _class, _ttl, len) = (r.u16()?, r.u16()?, (r.u16()?, r.u16()?), r.u16()? as usize);
        let start = r.pos;
        let rdata = r.take(len)?;
        if ty != rr.code() {
            continue;
        }
        match rr {
            RrType::Txt => {
                let mut s = Vec::new();
                let mut i = 0;
                while i < rdata.len() {
                    let n = rdata[i] as usize;
                    s.extend_from_slice(rdata.get(i + 1..i + 1 + n).ok_or("a TXT string overruns its record")?);
                    i += 1 + n;
                }
                records.push(String::from_utf8_lossy(&s).into_owned());
            }
            RrType::Cname => records.push(read_name(buf, start)?.0),
            RrType::A => {
                let b: [u8; 4] = rdata.try_into().map_err(|_| "an A record is not 4 bytes")?;
                records.push(std::net::Ipv4Addr::from(b).to_string());
            }
            RrType::Aaaa => {
                let b: [u8; 16] = rdata.try_into().map_err(|_| "an AAAA record is not 16 bytes")?;
                records.push(std::net::Ipv6Addr::from(b).to_string());
            }
        }
    }
    Ok(rcode_answer(flags & 0x000F, records))
}

/// Parses a JSON API answer (`{"Status": 0, "Answer": [{"type": 16, "data": "\"v=spf1 …\""}]}`).
/// TXT data comes quoted (Cloudflare, possibly as several strings) or bare (Google).
pub fn parse_json(v: &Value, rr: RrType) -> Answer {
    let Some(status) = v.get("Status").and_then(Value::as_u64) else {
        return Answer::Failed("the resolver's JSON has no Status".into());
    };
    let mut records = vec![];
    for a in v.get("Answer").and_then(Value::as_array).into_iter().flatten() {
        if a.get("type").and_then(Value::as_u64) != Some(u64::from(rr.code())) {
            continue;
        }
        let Some(data) = a.get("data").and_then(Value::as_str) else { continue };
        records.push(match rr {
            RrType::Txt => unquote_txt(data),
            RrType::Cname => data.trim().trim_end_matches('.').to_ascii_lowercase(),
            RrType::A | RrType::Aaaa => data.trim().to_string(),
        });
    }
    rcode_answer(status.min(u64::from(u16::MAX)) as u16, records)
}

/// `"abc" "def"` → `abcdef` (with `\"` and `\\` escapes and `\DDD` decimal escapes); anything
/// not starting with a quote is taken as it is.
fn unquote_txt(data: &str) -> String {
    let data = data.trim();
    if !data.starts_with('"') {
        return data.to_string();
    }
    let mut out = Vec::new();
    let bytes = data.as_bytes();
    let (mut i, mut inside) = (0, false);
    while i < bytes.len() {
        let c = bytes[i];
        match (inside, c) {
            (false, b'"') => inside = true,
            (false, _) => {}
            (true, b'"') => inside = false,
            (true, b'\\') if i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit) => {
                let n = (bytes[i + 1] - b'0') as u32 * 100 + (bytes[i + 2] - b'0') as u32 * 10 + (bytes[i + 3] - b'0') as u32;
                out.push(n.min(255) as u8);
                i += 3;
            }
            (true, b'\\') if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 1;
            }
            (true, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A response to `wire_query(name, rr)` carrying these answers (raw rdata), the owner
    /// compressed to the question.
    fn response(name: &str, rr: RrType, rcode: u8, answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = wire_query(name, rr);
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = answers.len() as u8;
        for (ty, rdata) in answers {
            m.extend_from_slice(&[0xC0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    fn txt(strings: &[&str]) -> Vec<u8> {
        strings.iter().flat_map(|s| std::iter::once(s.len() as u8).chain(s.bytes())).collect()
    }

    #[test]
    fn builds_an_rfc8484_query_with_id_zero_and_recursion_desired() {
        let q = wire_query("_dmarc.Example.com.", RrType::Txt);
        assert_eq!(&q[..4], &[0, 0, 1, 0]);
        assert_eq!(&q[12..], b"\x06_dmarc\x07Example\x03com\x00\x00\x10\x00\x01");
        let url = query_url("https://cloudflare-dns.com/dns-query", Format::Wire, "example.com", RrType::Txt);
        assert!(url.starts_with("https://cloudflare-dns.com/dns-query?dns=AAABAAABAAAAAAAAB2V4YW1wbGUDY29tAAAQAAE"), "{url}");
        assert!(!url.contains('='.to_string().repeat(2).as_str()));
    }

    #[test]
    fn json_urls_name_the_type() {
        let url = query_url("https://dns.google/resolve", Format::Json, "mm1e._domainkey.example.com", RrType::Txt);
        assert_eq!(url, "https://dns.google/resolve?name=mm1e._domainkey.example.com&type=TXT");
    }

    #[test]
    fn joins_the_strings_of_one_txt_record_and_keeps_records_apart() {
        let m = response("example.com", RrType::Txt, 0, &[(16, txt(&["v=spf1 include:x ", "~all"])), (16, txt(&["google-site-verification=1"]))]);
        assert_eq!(parse_wire(&m, RrType::Txt), Answer::Records(vec!["v=spf1 include:x ~all".into(), "google-site-verification=1".into()]));
    }

    #[test]
    fn reads_compressed_cname_targets() {
        // pm-bounces.example.com CNAME pm.mtasv.net, the target written out, then one pointing
        // back into the question (mtasv.example.com).
        let mut target = b"\x02pm\x05mtasv\x03net\x00".to_vec();
        let m = response("pm-bounces.example.com", RrType::Cname, 0, &[(5, std::mem::take(&mut target))]);
        assert_eq!(parse_wire(&m, RrType::Cname), Answer::Records(vec!["pm.mtasv.net".into()]));
        let m = response("pm-bounces.example.com", RrType::Cname, 0, &[(5, vec![5, b'm', b't', b'a', b's', b'v', 0xC0, 12 + 11])]);
        assert_eq!(parse_wire(&m, RrType::Cname), Answer::Records(vec!["mtasv.example.com".into()]));
    }

    #[test]
    fn nxdomain_is_no_records_and_servfail_is_a_failed_lookup() {
        assert_eq!(parse_wire(&response("nope.example.com", RrType::Txt, 3, &[]), RrType::Txt), Answer::Records(vec![]));
        assert!(matches!(parse_wire(&response("x.example.com", RrType::Txt, 2, &[]), RrType::Txt), Answer::Failed(_)));
    }

    #[test]
    fn skips_answers_of_other_types() {
        let m = response("mm1r._domainkey.example.com", RrType::Txt, 0, &[(5, b"\x03key\x07example\x03net\x00".to_vec()), (16, txt(&["v=DKIM1; p=abc"]))]);
        assert_eq!(parse_wire(&m, RrType::Txt), Answer::Records(vec!["v=DKIM1; p=abc".into()]));
    }

    #[test]
    fn malformed_and_truncated_answers_fail_without_panicking() {
        let m = response("example.com", RrType::Txt, 0, &[(16, txt(&["v=spf1"]))]);
        for cut in 0..m.len() {
            let _ = parse_wire(&m[..cut], RrType::Txt);
        }
        assert!(matches!(parse_wire(&m[..m.len() - 2], RrType::Txt), Answer::Failed(_)));
        let mut looped = response("example.com", RrType::Cname, 0, &[(5, vec![0xC0, 0])]);
        let n = looped.len();
        looped[n - 2..].copy_from_slice(&[0xC0, (n - 2) as u8]);
        assert!(matches!(parse_wire(&looped, RrType::Cname), Answer::Failed(_)));
        assert!(matches!(parse_wire(&wire_query("example.com", RrType::Txt), RrType::Txt), Answer::Failed(_)), "a query is not an answer");
    }

    #[test]
    fn parses_cloudflare_and_google_json_answers() {
        let cf = json!({"Status": 0, "Answer": [
            {"name": "mm1r._domainkey.example.com.", "type": 16, "TTL": 300, "data": "\"v=DKIM1; k=rsa; p=MIIB\" \"IjAN\\\"x\""},
            {"name": "example.com.", "type": 5, "data": "other.example.net."}]});
        assert_eq!(parse_json(&cf, RrType::Txt), Answer::Records(vec!["v=DKIM1; k=rsa; p=MIIBIjAN\"x".into()]));
        let google = json!({"Status": 0, "Answer": [{"name": "pm-bounces.example.com.", "type": 5, "data": "PM.mtasv.net."}]});
        assert_eq!(parse_json(&google, RrType::Cname), Answer::Records(vec!["pm.mtasv.net".into()]));
        let bare = json!({"Status": 0, "Answer": [{"type": 16, "data": "v=spf1 -all"}]});
        assert_eq!(parse_json(&bare, RrType::Txt), Answer::Records(vec!["v=spf1 -all".into()]));
        assert_eq!(parse_json(&json!({"Status": 3}), RrType::Txt), Answer::Records(vec![]));
        assert!(matches!(parse_json(&json!({"Status": 2}), RrType::Txt), Answer::Failed(_)));
        assert!(matches!(parse_json(&json!({"nope": 1}), RrType::Txt), Answer::Failed(_)));
    }

    #[test]
    fn decimal_escapes_in_quoted_txt() {
        assert_eq!(unquote_txt("\"a\\059b\""), "a;b");
    }
}
