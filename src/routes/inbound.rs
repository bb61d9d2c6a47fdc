//! The webhook ways in: `POST /inbound/postmark` (Postmark's inbound JSON, HTTP Basic auth with
//! the deployment's `POSTMARK_INBOUND_SECRET` as the password) and `POST /inbound/mime` (a raw
//! RFC 5322 message, for any mail server's pipe, with an admin key: it routes only to that
//! account's mailboxes, in the key's mode).

use worker::Request;

use crate::app::{self, Ctx};
use crate::domain::inbound::{self, ParseError, MAX_RAW_BYTES};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;

fn too_large() -> ApiError {
    ApiError::new(413, "message_too_large", format!("an inbound message may be at most {MAX_RAW_BYTES} bytes"))
}

async fn body_bytes(req: &mut Request) -> ApiResult<Vec<u8>> {
    http::read_capped(req, MAX_RAW_BYTES, too_large, "invalid_request").await
}

fn not_ours() -> ApiError {
    ApiError::new(404, "unknown_recipient", "no recipient of this message is a mailbox here")
}

pub async fn postmark(ctx: &Ctx, req: &mut Request) -> ApiResult<Reply> {
    let env = &ctx.env;
    let expected = platform::secret(env, "POSTMARK_INBOUND_SECRET")
        .ok_or_else(|| ApiError::new(503, "not_configured", "POSTMARK_INBOUND_SECRET is not set on this deployment"))?;
    http::auth::require_basic_secret(req, &expected, "POSTMARK_INBOUND_SECRET")?;
    let ct = req.headers().get("Content-Type").ok().flatten().unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::new(415, "unsupported_media_type", "Postmark inbound is JSON"));
    }
    let bytes = body_bytes(req).await?;
    let v = http::parse_json_object(&bytes)?;
    let parsed = inbound::from_postmark(&v).map_err(|m| ApiError::bad_request("invalid_request", m))?;
    let envelope: Vec<String> = v.get("OriginalRecipient").and_then(|r| r.as_str()).filter(|r| !r.is_empty()).map(|r| vec![r.to_string()]).unwrap_or_default();
    let out = app::inbound::ingest(env, &parsed, None, &envelope, true, None, None).await?.ok_or_else(not_ours)?;
    Ok(Reply::ok(out.to_json()))
}

pub async fn mime(ctx: &Ctx, req: &mut Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let url = req.url().map_err(|_| ApiError::bad_request("invalid_request", "bad URL"))?;
    let mut envelope = vec![];
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "to" => envelope.push(v.to_string()),
            other => return Err(ApiError::new(400, "unknown_field", format!("`{other}` is not a parameter of this call")).with_field(other.to_string())),
        }
    }
    let bytes = body_bytes(req).await?;
    let parsed = inbound::parse(&bytes).map_err(|e| match e {
        ParseError::TooLarge { .. } => too_large(),
        ParseError::NotAMessage => ApiError::bad_request("invalid_message", "the body is not an RFC 5322 message (no header fields)"),
    })?;
    if parsed.message_id.is_none() {
        return Err(ApiError::bad_request("invalid_message", "the message has no Message-ID"));
    }
    let out = app::inbound::ingest(&ctx.env, &parsed, Some(&bytes), &envelope, p.livemode, Some(&p.account_id), p.mailboxes.as_deref()).await?.ok_or_else(not_ours)?;
    Ok(Reply::ok(out.to_json()))
}
