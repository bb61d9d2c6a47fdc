//! Inbound attachments in the attachments bucket (R2, binding `ATTACHMENTS`): stored whole when
//! mail arrives, served by `download_attachment` with the type their bytes show, and deleted by
//! the hourly cron once their mailbox has been deleted for `ATTACHMENT_RETENTION_DAYS`.

use worker::{Bucket, Env, HttpMetadata};

use crate::app::Ctx;
use crate::domain::attachments::{content_disposition, r2_key, served_type};
use crate::domain::inbound::ParsedEmail;
use crate::http::{ApiError, ApiResult, Reply};
use crate::store::{self, attachments as store_att, messages::MessageWithMailbox};

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

/// The `index`-th attachment of a message the caller may read: from the bucket, or inline from
/// the parsed form; as a download (`Content-Disposition: attachment`), typed by its bytes.
pub async fn download(ctx: &Ctx, m: &MessageWithMailbox, parsed: &ParsedEmail, index: usize) -> ApiResult<Reply> {
    let meta = parsed
        .attachments
        .get(index)
        .ok_or_else(|| ApiError::new(404, "attachment_not_found", format!("this message has {} attachments; ids run from att_0", parsed.attachments.len())).with_field("attachment"))?;
    let detected = meta.detected_type.clone().unwrap_or_else(|| "application/octet-stream".into());
    let bytes = if meta.stored {
        let b = bucket(&ctx.env).ok_or_else(|| ApiError::new(503, "not_configured", "the ATTACHMENTS bucket is not bound on this deployment"))?;
        let object = b.get(r2_key(&m.msg.id, index)).execute().await?;
        let unavailable = || ApiError::new(503, "attachment_unavailable", "this attachment was not stored; it cannot be downloaded").with_field("attachment");
        let object = object.ok_or_else(unavailable)?;
        let body = object.body().ok_or_else(unavailable)?;
        body.bytes().await?
    } else if let Some(b64) = &meta.content_base64 {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| ApiError::internal())?
    } else {
        return Err(ApiError::new(404, "attachment_not_stored", "only this attachment's metadata was kept (it arrived before attachments were stored whole)").with_field("attachment"));
    };
    let headers = vec![
        ("Content-Disposition".to_string(), content_disposition(meta.filename.as_deref())),
        ("X-Content-Type-Options".to_string(), "nosniff".to_string()),
        ("Content-Security-Policy".to_string(), "default-src 'none'; sandbox".to_string()),
        ("X-Attachment-Sha256".to_string(), meta.sha256.clone().unwrap_or_default()),
        ("X-Attachment-Detected-Type".to_string(), detected.clone()),
    ];
    Ok(Reply::bytes(bytes, served_type(&detected), headers))
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
