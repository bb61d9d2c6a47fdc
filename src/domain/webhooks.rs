//! Webhook endpoints as values: who may be called (the SSRF rule), what they want (event types,
//! a mailbox), what they are sent (Standard Webhooks signatures, or an Inngest event), and what
//! their answer means (success, retry on the schedule, give up, disable). `crate::events` does
//! the I/O around these decisions.

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use url::{Host, Url};

use super::error::DomainError;

/// Every event type a user can subscribe to (the contract's Events table).
pub const EVENT_TYPES: &[&str] = &[
    "email.pending",
    "email.decided",
    "email.sent",
    "email.delivered",
    "email.bounced",
    "email.complained",
    "email.failed",
    "email.received",
    "mailbox.mode_changed",
    "sending.paused",
    "sending.resumed",
];

/// Subscribes to every type, including ones added later.
pub const ALL_EVENTS: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Standard Webhooks: the flat payload, signed in `webhook-*` headers.
    Standard,
    /// An Inngest Event API URL (`…/e/{event_key}`): `{name, data, id}`, no signature.
    Inngest,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Format, DomainError> {
        match s {
            None | Some("standard") => Ok(Format::Standard),
            Some("inngest") => Ok(Format::Inngest),
            Some(_) => Err(DomainError::invalid("format", "`format` is `standard` or `inngest`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Inngest => "inngest",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Which endpoints may be called

const MAX_URL_LEN: usize = 2048;

/// Parses and checks an endpoint URL; answers its normalised form. Hosts are judged as the
/// WHATWG URL parser (the one `fetch` uses) reads them, so `http://0x7f.1/` is 127.0.0.1 here
/// too. `allow_http_loopback` (the deployment's `ALLOW_HTTP_LOOPBACK_WEBHOOKS`, for local
/// development and tests) admits loopback IP literals, over http or https; nothing else private.
pub fn validate_url(raw: &str, format: Format, allow_http_loopback: bool) -> Result<String, DomainError> {
    let bad = |m: &str| DomainError::invalid("url", m.to_string());
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(bad("`url` is required"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(bad("`url` may be at most 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|e| bad(&format!("`url` is not a valid absolute URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("`url` may not carry credentials (user:password@); put a token in the path or query instead"));
    }
    let host = url.host().ok_or_else(|| bad("`url` needs a host"))?;
    let loopback_literal = match &host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(_) => false,
    };
    let dev_loopback = allow_http_loopback && loopback_literal;
    match url.scheme() {
        "https" => {}
        "http" if dev_loopback => {}
        "http" => return Err(bad("`url` must use https")),
        _ => return Err(bad("`url` must be an https URL")),
    }
    // Only the web's ports: anything else is an internal service by another door.
    if !dev_loopback && !matches!(url.port(), None | Some(443) | Some(80)) {
        return Err(bad("`url` may use port 443 (or 80) only"));
    }
    if !dev_loopback {
        match &host {
            Host::Ipv4(ip) if !is_public_v4(*ip) => {
                return Err(bad("`url` points at a loopback, private, link-local or reserved address; webhooks go to public hosts only"));
            }
            Host::Ipv6(ip) if !is_public_v6(*ip) => {
                return Err(bad("`url` points at a loopback, private, link-local or reserved address; webhooks go to public hosts only"));
            }
            Host::Domain(name) if !is_public_name(name) => {
                return Err(bad("`url` names a local host; webhooks go to public hosts only"));
            }
            _ => {}
        }
    }
    if format == Format::Inngest && inngest_event_key(&url).is_none() {
        return Err(bad("an `inngest` endpoint is an Inngest Event API URL ending in /e/{event_key}"));
    }
    let mut url = url;
    url.set_fragment(None);
    Ok(url.into())
}

/// Judges what an endpoint's host name resolved to, just before a delivery: every address must
/// be public (loopback too when `allow_loopback`, the development setting). A name that
/// resolves to a private, loopback, link-local, CGNAT or other non-global address is refused
/// before any connection is made.
pub fn judge_resolved(addresses: &[std::net::IpAddr], allow_loopback: bool) -> Result<(), String> {
    if addresses.is_empty() {
        return Err("the host name does not resolve to any address".into());
    }
    for ip in addresses {
        let ok = match ip {
            std::net::IpAddr::V4(v4) => is_public_v4(*v4) || (allow_loopback && v4.is_loopback()),
            std::net::IpAddr::V6(v6) => is_public_v6(*v6) || (allow_loopback && v6.is_loopback()),
        };
        if !ok {
            return Err(format!("the host name resolves to a non-public address ({ip}); webhooks go to public hosts only"));
        }
    }
    Ok(())
}

/// An endpoint's URL as lists show it: an Inngest event key (it is the endpoint's credential)
/// cut to its last four characters, and every query value (where receivers put tokens) hidden.
/// Only the answer that creates the endpoint shows the whole URL.
pub fn masked_url(raw: &str, format: Format) -> String {
    let Ok(mut url) = Url::parse(raw) else { return "…".into() };
    if format == Format::Inngest {
        if let Some(key) = inngest_event_key(&url).map(str::to_string) {
            let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let path = url.path().to_string();
            let cut = path.rfind(&key).map(|i| format!("{}…{tail}{}", &path[..i], &path[i + key.len()..])).unwrap_or(path);
            url.set_path(&cut);
        }
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, _)| (k.into_owned(), "…".to_string())).collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string().replace("%E2%80%A6", "…")
}

fn inngest_event_key(url: &Url) -> Option<&str> {
    let mut segments: Vec<&str> = url.path_segments()?.collect();
    if segments.last() == Some(&"") {
        segments.pop();
    }
    match segments.as_slice() {
        [.., "e", key] if !key.is_empty() => Some(key),
        _ => None,
    }
}

/// Names that resolve to this machine or its local network by convention (RFC 6761, 6762,
/// 8375), and single labels (which a resolver may complete with a local search domain).
fn is_public_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let local_suffixes = [".localhost", ".local", ".internal", ".home.arpa", ".localdomain"];
    !(name == "localhost" || !name.contains('.') || local_suffixes.iter().any(|s| name.ends_with(s)))
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0                                  // "this network"
        || (a == 100 && (64..128).contains(&b))    // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0)          // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))      // benchmarking
        || a >= 240)                               // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judge that.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00                 // unique local (fc00::/7)
        || (s[0] & 0xffc0) == 0xfe80                 // link-local (fe80::/10)
        || (s[0] & 0xffc0) == 0xfec0                 // site-local, deprecated (fec0::/10)
        || (s[0] == 0x2001 && s[1] == 0x0db8)        // documentation
        || (s[0] == 0x2001 && s[1] == 0x0000)        // Teredo (2001::/32): tunnels to any IPv4
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // NAT64 local use (64:ff9b:1::/48)
        || s[0..6] == [0, 0, 0, 0, 0, 0])            // IPv4-compatible (::a.b.c.d), deprecated
}

// ---------------------------------------------------------------------------------------------
// Which events an endpoint wants

/// `events`: a non-empty list of known types, or `["*"]` for all. Duplicates are dropped.
pub fn parse_event_types(list: &[String]) -> Result<Vec<String>, DomainError> {
    if list.is_empty() {
        return Err(DomainError::invalid("events", "`events` lists at least one event type, or \"*\" for all"));
    }
    let mut out: Vec<String> = vec![];
    for t in list {
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t.as_str()) {
            return Err(DomainError::invalid("events", format!("`{t}` is not an event type; known types: {}, or \"*\"", EVENT_TYPES.join(", "))));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if out.iter().any(|t| t == ALL_EVENTS) {
        return Ok(vec![ALL_EVENTS.to_string()]);
    }
    Ok(out)
}

/// What fan-out knows about an endpoint when matching an event to it.
#[derive(Debug, Clone)]
pub struct Subscription<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub events: &'a [String],
    pub mailbox_id: Option<&'a str>,
    pub created_at: i64,
}

/// What fan-out knows about an event.
#[derive(Debug, Clone)]
pub struct EventFacts<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub event_type: &'a str,
    pub mailbox_id: Option<&'a str>,
    pub created_at: i64,
}

/// Same account, same mode, a subscribed type, the endpoint's mailbox when it names one, and an
/// event no older than the endpoint (a new endpoint does not receive history).
pub fn wants(sub: &Subscription<'_>, ev: &EventFacts<'_>) -> bool {
    sub.account_id == ev.account_id
        && sub.livemode == ev.livemode
        && sub.events.iter().any(|t| t == ALL_EVENTS || t == ev.event_type)
        && sub.mailbox_id.is_none_or(|m| ev.mailbox_id == Some(m))
        && ev.created_at >= sub.created_at
}

// ---------------------------------------------------------------------------------------------
// What an endpoint is sent

/// `whsec_` + base64 of 32 random bytes, as Standard Webhooks libraries expect.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate(random: [u8; 32]) -> Self {
        WebhookSecret(format!("whsec_{}", STANDARD.encode(random)))
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

/// The HMAC key of a `whsec_…` secret: the base64-decoded part after the prefix.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_")?).ok().filter(|k| !k.is_empty())
}

/// One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], msg_id: &str, timestamp_secs: i64, body: impl AsRef<[u8]>) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("{msg_id}.{timestamp_secs}.").as_bytes());
    m.update(body.as_ref());
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// The Inngest Event API body: `data` is the flat payload unchanged, `id` the event id (Inngest
/// drops a second event with the same id within 24 h, so our retries never run a function twice).
pub fn inngest_body(payload: &Value) -> Value {
    let ty = payload.get("type").and_then(Value::as_str).unwrap_or("unknown");
    json!({
        "name": format!("multimail/{ty}"),
        "data": payload,
        "id": payload.get("event_id").cloned().unwrap_or(Value::Null),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The request for one attempt. `secrets`: every `whsec_` secret that signs now (the current
/// one and, for 24 h after a rotation, the previous one); each adds a `v1,` signature.
pub fn outgoing(format: Format, payload: &Value, secrets: &[&str], now_secs: i64) -> Outgoing {
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("User-Agent".to_string(), "MultiMail-Webhooks/1".to_string()),
    ];
    match format {
        Format::Inngest => Outgoing { headers, body: inngest_body(payload).to_string() },
        Format::Standard => {
            let body = payload.to_string();
            let id = payload.get("event_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let signatures: Vec<String> = secrets.iter().filter_map(|s| secret_key(s)).map(|k| signature(&k, &id, now_secs, &body)).collect();
            headers.push(("webhook-id".into(), id));
            headers.push(("webhook-timestamp".into(), now_secs.to_string()));
            headers.push(("webhook-signature".into(), signatures.join(" ")));
            Outgoing { headers, body }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What an answer means

crate::domain::message::string_enum! {
    /// One attempt of one delivery: `pending` while it runs, then `succeeded`, `retrying` (a
    /// next attempt is scheduled) or `failed`.
    AttemptStatus {
        Pending = "pending",
        Retrying = "retrying",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// Seconds to wait after failed attempt n (index n-1). After the last, the delivery has failed.
pub const RETRY_SCHEDULE_SECS: [u32; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
/// The first attempt and one per step of the schedule.
pub const MAX_ATTEMPTS: u32 = RETRY_SCHEDULE_SECS.len() as u32 + 1;
/// A receiver's `Retry-After` is honoured up to a day.
pub const MAX_RETRY_AFTER_SECS: u32 = 24 * 3600;
/// Cloudflare Queues delay a message by at most 12 hours per hop; longer waits chain hops.
pub const MAX_HOP_SECS: u32 = super::time::MAX_QUEUE_DELAY_SECS;
/// How long an attempt may take before it counts as failed.
pub const TIMEOUT_SECS: u32 = 15;

/// What happened when we called the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<'a> {
    Status { code: u16, retry_after: Option<&'a str> },
    TimedOut,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// 410 Gone: the receiver asks us to stop; the endpoint is disabled.
    Disable,
    /// Try attempt `attempt + 1` after this many seconds.
    Retry { delay_secs: u32 },
    /// The schedule is spent.
    GiveUp,
}

/// `attempt` is 1 for the first try; `scale` divides the schedule (tests use it to make retries
/// quick; 1 in production). A receiver's `Retry-After` is taken as given, not scaled.
pub fn judge(attempt: u32, answer: &Answer<'_>, now_ms: i64, scale: u32) -> Verdict {
    if let Answer::Status { code, .. } = answer {
        if (200..300).contains(code) {
            return Verdict::Succeeded;
        }
        if *code == 410 {
            return Verdict::Disable;
        }
    }
    if attempt >= MAX_ATTEMPTS {
        return Verdict::GiveUp;
    }
    let scheduled = RETRY_SCHEDULE_SECS[(attempt.max(1) - 1) as usize] / scale.max(1);
    let asked = match answer {
        Answer::Status { retry_after: Some(h), .. } => parse_retry_after(h, now_ms),
        _ => None,
    };
    Verdict::Retry { delay_secs: asked.unwrap_or(scheduled).clamp(1, MAX_RETRY_AFTER_SECS) }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<u32> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.min(u64::from(MAX_RETRY_AFTER_SECS)) as u32);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?.timestamp_millis();
    let secs = ((at - now_ms).max(0) + 999) / 1000;
    Some(secs.min(i64::from(MAX_RETRY_AFTER_SECS)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_addresses_must_all_be_public() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(judge_resolved(&[ip("93.184.216.34")], false).is_ok());
        for bad in ["10.0.0.5", "127.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "fd00::1", "64:ff9b:1::a00:1", "2001:0:4136:e378::1", "64:ff9b::a00:1"] {
            assert!(judge_resolved(&[ip("93.184.216.34"), ip(bad)], false).is_err(), "{bad}");
        }
        assert!(judge_resolved(&[], false).is_err());
        assert!(judge_resolved(&[ip("127.0.0.1")], true).is_ok(), "the development setting admits loopback");
    }

    #[test]
    fn lists_show_no_event_key_and_no_query_token() {
        assert_eq!(masked_url("https://inn.gs/e/abcdefghijklmnop", Format::Inngest), "https://inn.gs/e/…mnop");
        assert_eq!(masked_url("https://hooks.example.com/in?token=s3cret&x=1", Format::Standard), "https://hooks.example.com/in?token=…&x=…");
        assert_eq!(masked_url("https://hooks.example.com/in", Format::Standard), "https://hooks.example.com/in");
    }

    #[test]
    fn only_web_ports() {
        assert!(validate_url("https://hooks.example.com:8443/x", Format::Standard, false).is_err());
        assert!(validate_url("https://hooks.example.com:443/x", Format::Standard, false).is_ok());
        assert!(validate_url("http://127.0.0.1:9999/x", Format::Standard, true).is_ok(), "dev loopback keeps its port");
    }

    fn url_ok(u: &str) -> Result<String, DomainError> {
        validate_url(u, Format::Standard, false)
    }

    #[test]
    fn accepts_public_https_urls_and_normalises_them() {
        assert_eq!(url_ok("HTTPS://Hooks.Example.COM/in?x=1#frag").unwrap(), "https://hooks.example.com/in?x=1");
        assert!(url_ok("https://93.184.216.34/x").is_ok());
        assert!(url_ok("https://93.184.216.34:8443/x").is_err(), "ports other than 443 and 80 are refused (issue 18)");
        assert!(url_ok("https://[2606:4700::1111]/x").is_ok());
    }

    #[test]
    fn refuses_plain_http_and_other_schemes() {
        assert_eq!(url_ok("http://hooks.example.com/x").unwrap_err().field(), Some("url"));
        assert!(url_ok("ftp://hooks.example.com/x").is_err());
        assert!(url_ok("file:///etc/passwd").is_err());
        assert!(url_ok("hooks.example.com/x").is_err());
        assert!(url_ok("").is_err());
    }

    #[test]
    fn refuses_loopback_private_link_local_and_reserved_literals() {
        for u in [
            "https://127.0.0.1/x",
            "https://10.0.0.1/x",
            "https://172.16.5.4/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://0.0.0.0/x",
            "https://100.64.0.1/x",
            "https://255.255.255.255/x",
            "https://224.0.0.1/x",
            "https://[::1]/x",
            "https://[::]/x",
            "https://[fd00::1]/x",
            "https://[fc12::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[64:ff9b::a00:1]/x",
            "https://[2002:7f00:1::]/x",
        ] {
            assert!(url_ok(u).is_err(), "{u} should be refused");
        }
    }

    #[test]
    fn refuses_obfuscated_ipv4_forms_as_fetch_would_read_them() {
        for u in ["https://2130706433/", "https://0x7f.1/", "https://0177.0.0.1/", "https://127.1/", "https://10.1/"] {
            assert!(url_ok(u).is_err(), "{u} should be refused");
        }
    }

    #[test]
    fn refuses_local_names() {
        for u in ["https://localhost/x", "https://LOCALHOST./x", "https://api.localhost/x", "https://printer.local/x", "https://metadata/x", "https://db.internal/x"] {
            assert!(url_ok(u).is_err(), "{u} should be refused");
        }
    }

    #[test]
    fn refuses_credentials_in_the_url() {
        assert!(url_ok("https://user:pw@hooks.example.com/x").is_err());
    }

    #[test]
    fn the_dev_setting_admits_loopback_literals_only() {
        assert!(validate_url("http://127.0.0.1:9999/hook", Format::Standard, true).is_ok());
        assert!(validate_url("http://[::1]:9999/hook", Format::Standard, true).is_ok());
        assert!(validate_url("http://127.0.0.1:9999/hook", Format::Standard, false).is_err());
        assert!(validate_url("http://localhost:9999/hook", Format::Standard, true).is_err());
        assert!(validate_url("http://10.0.0.1/hook", Format::Standard, true).is_err());
        assert!(validate_url("https://10.0.0.1/hook", Format::Standard, true).is_err());
        assert!(validate_url("http://hooks.example.com/hook", Format::Standard, true).is_err());
    }

    #[test]
    fn inngest_endpoints_must_be_event_api_urls() {
        assert!(validate_url("https://inn.gs/e/abc123", Format::Inngest, false).is_ok());
        assert!(validate_url("https://inn.gs/e/abc123/", Format::Inngest, false).is_ok());
        assert!(validate_url("http://127.0.0.1:8288/e/dev", Format::Inngest, true).is_ok());
        assert!(validate_url("https://inn.gs/e/", Format::Inngest, false).is_err());
        assert!(validate_url("https://example.com/api/inngest", Format::Inngest, false).is_err());
    }

    #[test]
    fn formats_parse_with_standard_as_the_default() {
        assert_eq!(Format::parse(None).unwrap(), Format::Standard);
        assert_eq!(Format::parse(Some("inngest")).unwrap(), Format::Inngest);
        assert_eq!(Format::parse(Some("svix")).unwrap_err().field(), Some("format"));
    }

    #[test]
    fn event_type_lists_are_known_types_or_star() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_event_types(&s(&["email.decided", "email.decided", "email.received"])).unwrap(), s(&["email.decided", "email.received"]));
        assert_eq!(parse_event_types(&s(&["email.sent", "*"])).unwrap(), s(&["*"]));
        assert_eq!(parse_event_types(&s(&["email.opened"])).unwrap_err().field(), Some("events"));
        assert!(parse_event_types(&[]).is_err());
    }

    fn sub<'a>(events: &'a [String], mailbox: Option<&'a str>) -> Subscription<'a> {
        Subscription { account_id: "acct_a", livemode: true, events, mailbox_id: mailbox, created_at: 100 }
    }
    fn ev(ty: &str) -> EventFacts<'_> {
        EventFacts { account_id: "acct_a", livemode: true, event_type: ty, mailbox_id: Some("mbx_1"), created_at: 200 }
    }

    #[test]
    fn endpoints_want_their_types_in_their_account_and_mode() {
        let all = vec!["*".to_string()];
        let decided = vec!["email.decided".to_string()];
        assert!(wants(&sub(&all, None), &ev("email.sent")));
        assert!(wants(&sub(&decided, None), &ev("email.decided")));
        assert!(!wants(&sub(&decided, None), &ev("email.sent")));
        assert!(!wants(&sub(&all, None), &EventFacts { account_id: "acct_b", ..ev("email.sent") }), "another account");
        assert!(!wants(&sub(&all, None), &EventFacts { livemode: false, ..ev("email.sent") }), "the other mode");
    }

    #[test]
    fn a_mailbox_endpoint_wants_only_that_mailboxs_events() {
        let all = vec!["*".to_string()];
        assert!(wants(&sub(&all, Some("mbx_1")), &ev("email.sent")));
        assert!(!wants(&sub(&all, Some("mbx_2")), &ev("email.sent")));
        assert!(!wants(&sub(&all, Some("mbx_1")), &EventFacts { mailbox_id: None, ..ev("email.sent") }));
    }

    #[test]
    fn a_new_endpoint_does_not_receive_older_events() {
        let all = vec!["*".to_string()];
        assert!(!wants(&sub(&all, None), &EventFacts { created_at: 99, ..ev("email.sent") }));
    }

    #[test]
    fn secrets_are_whsec_base64_of_32_bytes_and_do_not_debug_print() {
        let s = WebhookSecret::generate([7; 32]);
        assert!(s.reveal().starts_with("whsec_"));
        assert_eq!(secret_key(s.reveal()).unwrap(), vec![7; 32]);
        assert!(!format!("{s:?}").contains(&s.reveal()[6..]));
        assert_eq!(secret_key("sk_nope"), None);
        assert_eq!(secret_key("whsec_!!"), None);
    }

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        // The test vector of the standard-webhooks reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_requests_carry_one_signature_per_signing_secret() {
        let (a, b) = (WebhookSecret::generate([1; 32]), WebhookSecret::generate([2; 32]));
        let payload = json!({"type": "email.sent", "event_id": "evt_1"});
        let out = outgoing(Format::Standard, &payload, &[a.reveal(), b.reveal()], 1_700_000_000);
        let h = |n: &str| out.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(h("webhook-id"), "evt_1");
        assert_eq!(h("webhook-timestamp"), "1700000000");
        let sigs: Vec<String> = h("webhook-signature").split(' ').map(str::to_string).collect();
        assert_eq!(sigs, vec![
            signature(&[1; 32], "evt_1", 1_700_000_000, &out.body),
            signature(&[2; 32], "evt_1", 1_700_000_000, &out.body),
        ]);
        assert_eq!(serde_json::from_str::<Value>(&out.body).unwrap(), payload);
    }

    #[test]
    fn inngest_requests_wrap_the_flat_payload_as_data_with_the_event_id() {
        let payload = json!({"type": "email.decided", "event_id": "evt_9", "message_id": "msg_1", "decision": "approved"});
        let out = outgoing(Format::Inngest, &payload, &[], 1);
        let body: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(body, json!({"name": "multimail/email.decided", "data": payload, "id": "evt_9"}));
        assert!(!out.headers.iter().any(|(k, _)| k == "webhook-signature"));
    }

    fn status(code: u16) -> Answer<'static> {
        Answer::Status { code, retry_after: None }
    }

    #[test]
    fn two_hundreds_succeed_and_410_disables() {
        assert_eq!(judge(1, &status(200), 0, 1), Verdict::Succeeded);
        assert_eq!(judge(3, &status(204), 0, 1), Verdict::Succeeded);
        assert_eq!(judge(1, &status(410), 0, 1), Verdict::Disable);
    }

    #[test]
    fn failures_retry_on_the_schedule_then_give_up() {
        let delays: Vec<Verdict> = (1..=7).map(|a| judge(a, &status(500), 0, 1)).collect();
        let expected: Vec<Verdict> = [5, 300, 1800, 7200, 18000, 36000, 36000].iter().map(|&d| Verdict::Retry { delay_secs: d }).collect();
        assert_eq!(delays, expected);
        assert_eq!(judge(8, &status(500), 0, 1), Verdict::GiveUp);
        assert_eq!(MAX_ATTEMPTS, 8);
    }

    #[test]
    fn timeouts_redirects_client_errors_and_unreachable_hosts_all_retry() {
        assert_eq!(judge(1, &Answer::TimedOut, 0, 1), Verdict::Retry { delay_secs: 5 });
        assert_eq!(judge(2, &Answer::Unreachable, 0, 1), Verdict::Retry { delay_secs: 300 });
        assert_eq!(judge(1, &status(301), 0, 1), Verdict::Retry { delay_secs: 5 });
        assert_eq!(judge(1, &status(404), 0, 1), Verdict::Retry { delay_secs: 5 });
    }

    #[test]
    fn the_scale_divides_the_schedule_but_never_below_a_second() {
        assert_eq!(judge(1, &status(500), 0, 3600), Verdict::Retry { delay_secs: 1 });
        assert_eq!(judge(6, &status(500), 0, 3600), Verdict::Retry { delay_secs: 10 });
        assert_eq!(judge(3, &status(500), 0, 0), Verdict::Retry { delay_secs: 1800 }, "0 is treated as 1");
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        let ra = |v: &'static str| Answer::Status { code: 503, retry_after: Some(v) };
        assert_eq!(judge(1, &ra("120"), 0, 1), Verdict::Retry { delay_secs: 120 });
        assert_eq!(judge(1, &ra("3"), 0, 3600), Verdict::Retry { delay_secs: 3 }, "not scaled");
        assert_eq!(judge(1, &ra("999999"), 0, 1), Verdict::Retry { delay_secs: MAX_RETRY_AFTER_SECS });
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().timestamp_millis();
        assert_eq!(judge(1, &ra("Wed, 21 Oct 2015 07:28:00 GMT"), now, 1), Verdict::Retry { delay_secs: 60 });
        assert_eq!(judge(1, &ra("soon"), 0, 1), Verdict::Retry { delay_secs: 5 }, "unreadable: the schedule");
        assert_eq!(judge(8, &ra("5"), 0, 1), Verdict::GiveUp, "the schedule still ends");
    }
}
