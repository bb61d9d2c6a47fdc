//! Attachments in the attachments bucket (R2, binding `ATTACHMENTS`). Inbound ones are stored
//! whole when mail arrives and served by `download_attachment` with the type their bytes show;
//! outbound ones of a message too large for D1 wait there for its delivery. Both are deleted by
//! the hourly cron once their mailbox has been deleted for `ATTACHMENT_RETENTION_DAYS`.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::write::EncoderStringWriter;
use base64::Engine;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use worker::{Bucket, Env, HttpMetadata, ResponseBody};

use std::sync::Arc;

use crate::app::Ctx;
use crate::domain::attachments::{content_disposition, r2_key, select, served_type, sha256_hex, sniff, Unselected};
use crate::domain::message::Direction;
use crate::domain::delivery::OutboundEmail;
use crate::domain::inbound::ParsedEmail;
use crate::domain::keys;
use crate::http::{ApiError, ApiResult, Binary, Reply};
use crate::store::messages::{self, Blob, MessageWithMailbox};
use crate::store::{self, attachments as store_att};

/// The bucket, when this deployment has one (without it, attachments over the inline cap are
/// kept as metadata only, as before).
pub fn bucket(env: &Env) -> Option<Bucket> {
    env.bucket("ATTACHMENTS").ok()
}

/// Puts every attachment of one stored message into the bucket. A failure is logged: the
/// message is stored, and a download of that attachment answers 503 until it is received again.
pub async fn put_inbound(bucket: &Bucket, message_id: &str, parsed: &ParsedEmail) {
    for (i, (bytes, meta)) in parsed.parts.iter().zip(&parsed.attachments).enumerate() {
        let http = HttpMetadata { content_type: meta.detected_type.clone(), ..Default::default() };
        if let Err(e) = bucket.put(r2_key(message_id, i), bytes.clone()).http_metadata(http).execute().await {
            worker::console_error!("attachments: storing {message_id}/{i} failed: {e}");
        }
    }
}

/// Puts a large outbound message's attachments into the bucket (`Staged::in_bucket`, taken
/// out of it), before its row is written. A failure refuses the send (503): nothing is stored.
pub async fn put_outbound(ctx: &Ctx, uploads: Vec<(usize, String, Arc<Vec<u8>>)>) -> ApiResult<()> {
    let b = bucket(&ctx.env).ok_or_else(|| ApiError::new(503, "not_configured", "the ATTACHMENTS bucket is not bound on this deployment"))?;
    for (_, key, content) in uploads {
        // The last holder of the content: moved, not copied, on its way to the bucket.
        let bytes = Arc::try_unwrap(content).unwrap_or_else(|shared| shared.as_ref().clone());
        if let Err(e) = b.put(key.as_str(), bytes).execute().await {
            worker::console_error!("{}: storing attachment {key} failed: {e}", ctx.request_id);
            return Err(ApiError::new(503, "attachment_storage_failed", "the attachments could not be stored; nothing was sent. Try again.").with_field("attachments"));
        }
    }
    Ok(())
}

/// Fills in the content of each attachment of `email` kept in the bucket, checking each against
/// its SHA-256. A missing or altered object is an error: the delivery is retried, then fails.
pub async fn hydrate(env: &Env, email: &mut OutboundEmail) -> worker::Result<()> {
    let b = bucket(env).ok_or("the ATTACHMENTS bucket is not bound")?;
    for a in &mut email.attachments {
        let Some(stored) = &a.stored else { continue };
        let object = b.get(stored.key.as_str()).execute().await?.ok_or_else(|| format!("attachment {} is missing from the bucket", stored.key))?;
        // Read as a stream, hashed and encoded chunk by chunk: the bytes are never held whole.
        let mut chunks = object.body().ok_or_else(|| format!("attachment {} has no body", stored.key))?.stream()?;
        let mut encoder = EncoderStringWriter::from_consumer(String::with_capacity(stored.size.div_ceil(3) * 4), &STANDARD);
        let (mut hash, mut size) = (Sha256::new(), 0usize);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            hash.update(&chunk);
            size += chunk.len();
            encoder.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        if size != stored.size || keys::hex(&hash.finalize()) != stored.sha256 {
            return Err(format!("attachment {} is not what was sent (its size or SHA-256 differs)", stored.key).into());
        }
        a.content_base64 = encoder.into_inner();
    }
    Ok(())
}

/// One attachment to serve: what is known of it and where its bytes are.
pub struct Wanted<'a> {
    pub filename: Option<&'a str>,
    /// The type its bytes show, when known (else found from the bytes in hand).
    pub detected: Option<String>,
    pub sha256: Option<String>,
    /// Its object in the bucket.
    pub key: Option<String>,
    /// Its content, in base64, kept with the message.
    pub inline: Option<&'a str>,
}

impl<'a> Wanted<'a> {
    /// The `index`-th attachment of received mail.
    pub fn inbound(message_id: &str, parsed: &'a ParsedEmail, index: usize) -> Option<Self> {
        let meta = parsed.attachments.get(index)?;
        Some(Wanted {
            filename: meta.filename.as_deref(),
            detected: meta.detected_type.clone(),
            sha256: meta.sha256.clone(),
            key: meta.stored.then(|| r2_key(message_id, index)),
            inline: meta.content_base64.as_deref(),
        })
    }

    /// The `index`-th attachment of a sent message.
    pub fn outbound(email: &'a OutboundEmail, index: usize) -> Option<Self> {
        let a = email.attachments.get(index)?;
        Some(Wanted {
            filename: Some(&a.filename),
            detected: a.stored.as_ref().and_then(|s| s.detected_type.clone()),
            sha256: a.stored.as_ref().map(|s| s.sha256.clone()),
            key: a.stored.as_ref().map(|s| s.key.clone()),
            inline: a.stored.is_none().then_some(a.content_base64.as_str()),
        })
    }
}

/// The attachment `name` (its id or file name) of a message the caller may see, as a download:
/// received mail's, or a sent message's (a large one's wait in the bucket).
pub async fn download_named(ctx: &Ctx, m: &MessageWithMailbox, name: &str) -> ApiResult<Reply> {
    let id = m.msg.id.as_str();
    let (parsed, sent): (Option<ParsedEmail>, Option<OutboundEmail>) = if m.msg.direction == Direction::Inbound {
        (Some(messages::blob(&ctx.db, id, Blob::Parsed).await?.and_then(|j| serde_json::from_str(&j).ok()).ok_or_else(ApiError::internal)?), None)
    } else {
        (None, Some(messages::blob(&ctx.db, id, Blob::Outbound).await?.and_then(|j| serde_json::from_str(&j).ok()).ok_or_else(ApiError::internal)?))
    };
    let names: Vec<Option<&str>> = match (&parsed, &sent) {
        (Some(p), _) => p.attachments.iter().map(|a| a.filename.as_deref()).collect(),
        (_, Some(o)) => o.attachments.iter().map(|a| Some(a.filename.as_str())).collect(),
        _ => vec![],
    };
    let index = select(name, &names).map_err(|why| match why {
        Unselected::Missing => ApiError::new(404, "attachment_not_found", format!("this message has no attachment with the id or file name `{name}`")).with_field("attachment"),
        Unselected::Ambiguous(ids) => ApiError::new(409, "attachment_ambiguous", format!("{} attachments are named `{name}`; name one by its id", ids.len()))
            .with_field("attachment")
            .with_extra(serde_json::json!({"ids": ids})),
    })?;
    let wanted = match (&parsed, &sent) {
        (Some(p), _) => Wanted::inbound(id, p, index),
        (_, Some(o)) => Wanted::outbound(o, index),
        _ => None,
    }
    .ok_or_else(ApiError::internal)?;
    download(ctx, wanted).await
}

/// An attachment as a download (`Content-Disposition: attachment`), typed by its bytes: streamed
/// from the bucket by the runtime, or decoded from the message.
pub async fn download(ctx: &Ctx, w: Wanted<'_>) -> ApiResult<Reply> {
    let (body, size, detected, sha256) = if let Some(key) = &w.key {
        let b = bucket(&ctx.env).ok_or_else(|| ApiError::new(503, "not_configured", "the ATTACHMENTS bucket is not bound on this deployment"))?;
        let unavailable = || ApiError::new(503, "attachment_unavailable", "this attachment was not stored; it cannot be downloaded").with_field("attachment");
        let object = b.get(key.as_str()).execute().await?.ok_or_else(unavailable)?;
        let size = object.size() as usize;
        // Streamed by the runtime from the bucket to the client: the worker never holds it.
        let body = match object.body().ok_or_else(unavailable)?.response_body()? {
            ResponseBody::Stream(s) => Binary::Stream(s),
            ResponseBody::Body(bytes) => Binary::Bytes(bytes),
            ResponseBody::Empty => Binary::Bytes(vec![]),
        };
        (body, size, w.detected.unwrap_or_else(|| "application/octet-stream".into()), w.sha256.unwrap_or_default())
    } else if let Some(b64) = w.inline {
        let bytes = STANDARD.decode(b64).map_err(|_| ApiError::internal())?;
        let detected = w.detected.unwrap_or_else(|| sniff(&bytes, ""));
        let sha256 = w.sha256.unwrap_or_else(|| sha256_hex(&bytes));
        let size = bytes.len();
        (Binary::Bytes(bytes), size, detected, sha256)
    } else {
        return Err(ApiError::new(404, "attachment_not_stored", "only this attachment's metadata was kept (it arrived before attachments were stored whole)").with_field("attachment"));
    };
    let headers = vec![
        ("Content-Disposition".to_string(), content_disposition(w.filename)),
        ("X-Content-Type-Options".to_string(), "nosniff".to_string()),
        ("Content-Security-Policy".to_string(), "default-src 'none'; sandbox".to_string()),
        ("X-Attachment-Sha256".to_string(), sha256),
        ("X-Attachment-Detected-Type".to_string(), detected.clone()),
        ("X-Attachment-Size".to_string(), size.to_string()),
    ];
    Ok(Reply::bytes(body, served_type(&detected), headers))
}

/// For the hourly cron: deletes the objects of mail in mailboxes deleted more than
/// `retention_days` ago, at most 1,000 a run. Returns how many went.
pub async fn prune_deleted(env: &Env, db: &store::Db, now: i64, retention_days: i64) -> worker::Result<usize> {
    let Some(b) = bucket(env) else { return Ok(0) };
    let rows = store_att::of_deleted_mailboxes(db, now - retention_days * 24 * 3600 * 1000, 1000).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.r2_key.as_str()).collect();
    b.delete_multiple(keys.clone()).await?;
    store_att::forget(db, &keys).await?;
    Ok(rows.len())
}
