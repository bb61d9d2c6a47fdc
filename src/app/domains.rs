//! The runtime side of custom sending domains: DKIM keys (Ed25519 in Rust; RSA made and used by
//! the runtime's WebCrypto, which does in ~20 ms what RSA-2048 key generation in wasm does in
//! ~1 s of CPU — see docs/domains.md), their sealing at rest, DNS-over-HTTPS lookups, the check
//! that `verify_domain` and the hourly cron run, and the DKIM signatures of outgoing MIME.

use crate::store::Db;
use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine};
use worker::{AbortController, Env, Fetch, Headers, Method, Request, RequestInit};

use crate::domain::dkim::{self, Algorithm};
use crate::domain::doh::{self, Answer, Format};
use crate::domain::domains::{self, DnsRecord, DomainStatus, RecordSettings, DKIM_ED25519_SELECTOR, DKIM_RSA_SELECTOR};
use crate::domain::sealed::SealingKey;
use crate::domain::delivery::Provider;
use crate::platform;
use crate::app::webcrypto;
use crate::store::domains::{self as store, DomainRow};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The cron checks domains not checked within this long, at most this many a run.
const RECHECK_AFTER_MS: i64 = 50 * 60 * 1000;
const RECHECK_BATCH: u32 = 50;

/// What the deployment configures about domains.
pub struct Settings {
    pub records: RecordSettings,
    pub doh_url: String,
    pub doh_format: Format,
}

impl Settings {
    pub fn from_env(env: &Env) -> Settings {
        let provider = platform::var(env, "EMAIL_PROVIDER").and_then(|p| Provider::parse(&p));
        Settings {
            records: RecordSettings {
                spf_include: platform::var(env, "SPF_INCLUDE").unwrap_or_else(|| domains::DEFAULT_SPF_INCLUDE.into()),
                postmark: provider == Some(Provider::Postmark),
            },
            doh_url: platform::var(env, "DOH_URL").unwrap_or_else(|| "https://cloudflare-dns.com/dns-query".into()),
            doh_format: platform::var(env, "DOH_FORMAT").and_then(|f| Format::parse(&f)).unwrap_or(Format::Wire),
        }
    }
}

/// The key that seals DKIM private keys: from `DOMAIN_KEY_SECRET` only (never derived from
/// another secret).
pub fn sealing_key(env: &Env) -> worker::Result<SealingKey> {
    let secret = platform::secret(env, "DOMAIN_KEY_SECRET").ok_or("DOMAIN_KEY_SECRET is not set")?;
    Ok(SealingKey::derive(&secret))
}

/// Whether custom domains can be used here (their keys can be sealed).
pub fn configured(env: &Env) -> bool {
    platform::secret(env, "DOMAIN_KEY_SECRET").is_some()
}

fn aad(domain_id: &str, selector: &str) -> String {
    format!("{domain_id}/{selector}")
}

/// A new domain row with fresh DKIM keys (private halves sealed) and its records to publish.
pub async fn new_domain(env: &Env, id: String, account_id: &str, domain: &str, now: i64) -> worker::Result<DomainRow> {
    let settings = Settings::from_env(env);
    let seal = sealing_key(env)?;
    let seed: [u8; 32] = platform::random_bytes();
    let ed_public = dkim::ed25519_public(&seed);
    let (rsa_spki, rsa_pkcs8) = webcrypto::generate_rsa().await?;
    let records = domains::records_for(domain, &ed_public, &rsa_spki, &settings.records);
    Ok(DomainRow {
        dkim_ed25519_private: seal.seal(&seed, &aad(&id, DKIM_ED25519_SELECTOR), platform::random_bytes()),
        dkim_rsa_private: seal.seal(&rsa_pkcs8, &aad(&id, DKIM_RSA_SELECTOR), platform::random_bytes()),
        dkim_ed25519_public: STANDARD.encode(ed_public),
        dkim_rsa_public: STANDARD.encode(&rsa_spki),
        id,
        account_id: account_id.to_string(),
        domain: domain.to_string(),
        status: DomainStatus::Pending,
        records: serde_json::to_string(&records).map_err(|e| e.to_string())?,
        created_at: now,
        verified_at: None,
        last_checked_at: None,
        deleted_at: None,
    })
}

pub fn records_of(row: &DomainRow) -> Vec<DnsRecord> {
    serde_json::from_str(&row.records).unwrap_or_default()
}

/// The addresses a host name resolves to (A and AAAA) through the configured DoH resolver, for
/// judging a webhook endpoint just before a delivery (`domain::webhooks::judge_resolved`).
pub async fn resolve_host(env: &Env, name: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let s = Settings::from_env(env);
    let mut out = vec![];
    for rr in [doh::RrType::A, doh::RrType::Aaaa] {
        match lookup(&s, name, rr).await {
            Answer::Records(list) => out.extend(list.iter().filter_map(|a| a.parse::<std::net::IpAddr>().ok())),
            Answer::Failed(why) => return Err(format!("the host name could not be resolved: {why}")),
        }
    }
    Ok(out)
}

/// One DoH lookup; any transport or HTTP trouble is a failed lookup, not an error.
async fn lookup(s: &Settings, name: &str, rr: doh::RrType) -> Answer {
    let url = doh::query_url(&s.doh_url, s.doh_format, name, rr);
    let attempt = async {
        let headers = Headers::new();
        headers.set("Accept", s.doh_format.accept())?;
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let controller = AbortController::default();
        let signal = controller.signal();
        worker::wasm_bindgen_futures::spawn_local(async move {
            worker::Delay::from(LOOKUP_TIMEOUT).await;
            controller.abort();
        });
        let mut resp = Fetch::Request(Request::new_with_init(&url, &init)?).send_with_signal(&signal).await?;
        let status = resp.status_code();
        if status != 200 {
            return Ok::<Answer, worker::Error>(Answer::Failed(format!("the resolver answered HTTP {status}")));
        }
        Ok(match s.doh_format {
            Format::Wire => doh::parse_wire(&resp.bytes().await?, rr),
            Format::Json => match resp.json::<serde_json::Value>().await {
                Ok(v) => doh::parse_json(&v, rr),
                Err(_) => Answer::Failed("the resolver's answer is not JSON".into()),
            },
        })
    };
    attempt.await.unwrap_or_else(|e| Answer::Failed(format!("the resolver could not be reached: {e}")))
}

/// Looks every record of the domain up, records the verdicts and returns the updated row.
pub async fn check(env: &Env, db: &Db, row: &DomainRow, now: i64) -> worker::Result<DomainRow> {
    let settings = Settings::from_env(env);
    let mut records = records_of(row);
    let answers = futures_util::future::join_all(records.iter().map(|r| lookup(&settings, &r.name, r.rr_type()))).await;
    let previous = row.status;
    let status = domains::apply_answers(&mut records, &answers, previous, row.created_at, now);
    let mut updated = row.clone();
    updated.status = status;
    updated.records = serde_json::to_string(&records).map_err(|e| e.to_string())?;
    let became_verified = status == DomainStatus::Verified && previous != DomainStatus::Verified;
    match store::record_check(db, &updated, became_verified, now).await {
        Ok(row) => Ok(row.unwrap_or(updated)),
        // Another account verified this domain first: it is theirs; this claim stays unverified.
        Err(e) if crate::store::is_unique_violation(&e) => {
            updated.status = DomainStatus::Failed;
            Ok(store::record_check(db, &updated, false, now).await?.unwrap_or(updated))
        }
        Err(e) => Err(e),
    }
}

/// The hourly cron: re-checks pending and verified domains not checked within the last ~hour.
pub async fn recheck_due(env: &Env, now: i64) -> worker::Result<usize> {
    let db = crate::store::db(env)?;
    let due = store::due_for_recheck(&db, now - RECHECK_AFTER_MS, RECHECK_BATCH).await?;
    for row in &due {
        if let Err(e) = check(env, &db, row, now).await {
            worker::console_error!("cron: checking domain {}: {e}", row.id);
        }
    }
    Ok(due.len())
}

/// DKIM-signs outgoing MIME when its sender domain is a verified custom domain of the account:
/// an rsa-sha256 (mm1r) and an ed25519-sha256 (mm1e) signature on top. Returns the message to
/// send and what happened, for the message's timeline (`None`: not a custom domain).
pub async fn dkim_sign(env: &Env, db: &Db, account_id: &str, from_domain: &str, mime: String, now: i64) -> (String, Option<String>) {
    let row = match store::by_name(db, account_id, from_domain).await {
        Ok(Some(r)) if r.status == DomainStatus::Verified => r,
        Ok(_) => return (mime, None),
        Err(e) => return (mime, Some(format!("not signed: the domain could not be read: {e}"))),
    };
    match signatures(env, &row, mime.as_bytes(), now / 1000).await {
        Ok(headers) => (format!("{headers}{mime}"), Some(format!("signed d={} s={DKIM_RSA_SELECTOR},{DKIM_ED25519_SELECTOR}", row.domain))),
        Err(e) => {
            worker::console_error!("dkim for {}: {e}", row.domain);
            (mime, Some(format!("not signed: {e}")))
        }
    }
}

async fn signatures(env: &Env, row: &DomainRow, message: &[u8], timestamp: i64) -> worker::Result<String> {
    let seal = sealing_key(env)?;
    let unsealed = |sealed: &str, selector: &str| {
        seal.open(sealed, &aad(&row.id, selector))
            .ok_or_else(|| worker::Error::RustError(format!("the {selector} key does not open: was DOMAIN_KEY_SECRET changed?")))
    };
    let seed: [u8; 32] = unsealed(&row.dkim_ed25519_private, DKIM_ED25519_SELECTOR)?.try_into().map_err(|_| "the mm1e key is not 32 bytes")?;
    let pkcs8 = unsealed(&row.dkim_rsa_private, DKIM_RSA_SELECTOR)?;
    let rsa = dkim::prepare(message, Algorithm::RsaSha256, &row.domain, DKIM_RSA_SELECTOR, timestamp);
    let rsa_header = dkim::finish(&rsa, &webcrypto::rsa_sign(&pkcs8, &rsa.data).await?);
    let ed = dkim::prepare(message, Algorithm::Ed25519Sha256, &row.domain, DKIM_ED25519_SELECTOR, timestamp);
    let ed_header = dkim::sign_ed25519(&ed, &seed);
    Ok(format!("{ed_header}{rsa_header}"))
}
