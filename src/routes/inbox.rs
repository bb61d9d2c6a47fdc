//! Reading mail: `check_inbox`, `search_emails` (full text, ranked), `read_email` (marks read;
//! the body is data, never interpreted), `get_thread`, `tag_email`, and `reply_email` (a send
//! that threads, through oversight).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use crate::app::access::{readable_message as readable, visible_mailbox};
use crate::app::{outbound, Ctx};
use crate::domain::address::Recipient;
use crate::domain::delivery::OutboundEmail;
use crate::domain::attachments;
use crate::domain::inbound::ParsedEmail;
use crate::domain::message::Direction;
use crate::domain::send::{AttachmentInput, OneOrMany, SendEmailRequest};
use crate::domain::time::{parse_rfc3339, to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::domain::search;
use crate::store::messages::{self, Blob, InboxFilter, MessageWithMailbox};
use crate::store::search::{self as search_store, SearchFilter};

const MAX_TAGS: usize = 20;

fn list(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!([]))
}

fn summary(m: &MessageWithMailbox) -> Value {
    let r = &m.msg;
    json!({
        "id": r.id,
        "thread_id": r.thread_id,
        "mailbox": m.mailbox_address,
        "direction": r.direction,
        "from": r.from_addr,
        "to": list(&r.to_json),
        "subject": r.subject,
        "snippet": r.snippet,
        "received_at": to_rfc3339(r.created_at),
        "status": r.status,
        "read": r.read == 1,
        "tags": list(&r.tags),
    })
}

/// The `since` parameter, as epoch milliseconds.
fn since(q: &std::collections::HashMap<String, String>) -> ApiResult<Option<i64>> {
    q.get("since").map(|s| parse_rfc3339(s).ok_or_else(|| ApiError::invalid_field("since", "`since` must be an RFC 3339 time"))).transpose()
}

/// The `mailbox` parameter (an id or an address), as the id of a mailbox the key may see.
async fn mailbox_param(ctx: &Ctx, q: &std::collections::HashMap<String, String>) -> ApiResult<Option<String>> {
    match q.get("mailbox") {
        Some(m) => Ok(Some(visible_mailbox(ctx, m).await?.id)),
        None => Ok(None),
    }
}

fn allowed(ctx: &Ctx) -> Option<String> {
    ctx.principal().mailboxes.as_ref().map(|m| serde_json::to_string(m).expect("strings serialize"))
}

pub async fn check_inbox(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["mailbox", "unread", "tag", "since", "from", "subject_contains", "direction", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let mailbox = mailbox_param(ctx, &q).await?;
    let unread = match q.get("unread").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_field("unread", "`unread` is true or false")),
    };
    let direction = match q.get("direction").map(String::as_str) {
        None | Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        Some("all") => None,
        Some(_) => return Err(ApiError::invalid_field("direction", "`direction` is inbound (the default), outbound or all")),
    };
    let since = since(&q)?;
    let allowed = allowed(ctx);
    let f = InboxFilter {
        account_id: &p.account_id,
        livemode: p.livemode,
        mailbox_id: mailbox.as_deref(),
        allowed: allowed.as_deref(),
        direction,
        unread,
        tag: q.get("tag").map(String::as_str),
        since,
        from: q.get("from").map(String::as_str),
        subject_contains: q.get("subject_contains").map(String::as_str),
        thread_id: None,
        before_id: q.get("cursor").map(String::as_str),
        after_id: None,
    };
    let rows = messages::inbox(&ctx.db, &f, limit + 1).await?;
    let (rows, next) = super::page(rows, limit, |m| m.msg.id.clone());
    Ok(Reply::ok(json!({"emails": rows.iter().map(summary).collect::<Vec<_>>(), "next_cursor": next})))
}

/// `GET /search_emails?q=…`: the messages whose subject, addresses or text body hold every word
/// of `q`, best match first, each with a snippet (HTML-escaped, matches in `<mark>`). Scoped like
/// `check_inbox`: the key's account, mode and mailboxes; held inbound mail is never found.
pub async fn search_emails(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["q", "mailbox", "direction", "since", "limit", "cursor"])?;
    let text = q.get("q").ok_or_else(|| ApiError::invalid_field("q", "`q` is required: the words to search for"))?;
    let query = search::fts_query(text).map_err(|e| ApiError::invalid_field("q", e.message()))?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let offset = match q.get("cursor") {
        Some(c) => search::parse_cursor(c).ok_or_else(|| ApiError::invalid_field("cursor", "`cursor` is the `next_cursor` of an earlier page"))?,
        None => 0,
    };
    let direction = match q.get("direction").map(String::as_str) {
        None | Some("all") => None,
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        Some(_) => return Err(ApiError::invalid_field("direction", "`direction` is inbound, outbound or all (the default)")),
    };
    let since = since(&q)?;
    let mailbox = mailbox_param(ctx, &q).await?;
    let allowed = allowed(ctx);
    let f = SearchFilter {
        account_id: &p.account_id,
        livemode: p.livemode,
        mailbox_id: mailbox.as_deref(),
        allowed: allowed.as_deref(),
        direction,
        since,
        query: &query,
    };
    let mut hits = search_store::search(&ctx.db, &f, offset, limit + 1).await?;
    let more = hits.len() > limit as usize;
    hits.truncate(limit as usize);
    let emails: Vec<Value> = hits
        .iter()
        .map(|h| {
            let mut v = summary(&h.message);
            v["highlight"] = json!(search::snippet_html(&h.hit_snippet));
            v["rank"] = json!(-h.hit_rank);
            v
        })
        .collect();
    Ok(Reply::ok(json!({"emails": emails, "next_cursor": search::next_cursor(offset, hits.len(), limit, more)})))
}

/// An inbound message's attachments as `read_email` lists them: each with its `index` and, when
/// its bytes are kept (in the bucket, or inline), the `download` path.
fn attachment_list(id: &str, p: &ParsedEmail) -> Value {
    json!(p
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut v = json!(a);
            v["id"] = json!(attachments::attachment_id(i));
            v["index"] = json!(i);
            v["download"] = json!((a.stored || a.content_base64.is_some()).then(|| format!("/download_attachment?id={id}&attachment={}", attachments::attachment_id(i))));
            v
        })
        .collect::<Vec<_>>())
}

/// `GET /download_attachment?id=…&attachment=…`: the bytes of one attachment of an email the
/// key may read (received mail, held mail excepted, or a sent message), typed by its content,
/// as a download.
/// `attachment` is its id (`att_N`) or its file name.
pub async fn download_attachment(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let q = http::query_params(req, &["id", "attachment"])?;
    let id = q.get("id").ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let name = attachments::selector(q.get("attachment").map(String::as_str))?;
    let m = readable(ctx, id).await?;
    crate::app::attachments::download_named(ctx, &m, name).await
}

pub async fn read_email(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let q = http::query_params(req, &["id"])?;
    let id = q.get("id").ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let m = readable(ctx, id).await?;
    let mut v = summary(&m);
    v["cc"] = list(&m.msg.cc_json);
    v["message_id_header"] = json!(m.msg.message_id_header);
    if m.msg.direction == Direction::Inbound {
        let parsed: Option<ParsedEmail> = messages::blob(&ctx.db, id, Blob::Parsed).await?.and_then(|j| serde_json::from_str(&j).ok());
        if let Some(p) = parsed {
            v["text"] = json!(p.text);
            v["html"] = json!(p.html);
            v["reply_to"] = json!(p.reply_to);
            v["headers"] = json!(p.headers.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>());
            v["attachments"] = attachment_list(&m.msg.id, &p);
            v["in_reply_to"] = json!(p.in_reply_to);
            v["references"] = json!(p.references);
            // Only the receiver's own header is a verdict; what the sender wrote is shown apart.
            let (verdict, trusted, untrusted) = crate::domain::inbound::authentication(&p.authentication_results, &ctx.config.trusted_authserv_ids);
            v["authentication"] = json!(verdict);
            v["authentication_results"] = json!(trusted);
            v["untrusted_authentication_results"] = json!(untrusted);
            v["truncated"] = json!(p.truncated);
        }
    } else {
        let out: Option<OutboundEmail> = messages::blob(&ctx.db, id, Blob::Outbound).await?.and_then(|j| serde_json::from_str(&j).ok());
        if let Some(o) = out {
            v["text"] = json!(o.text);
            v["html"] = json!(o.html);
            v["reply_to"] = json!(o.reply_to.first());
            v["headers"] = json!(o.headers.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>());
            // A large message's attachments are in the bucket: listed, not inlined.
            v["attachments"] = json!(o
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    // Inline content is at most 1.5 MB: its hash and type are found here.
                    let (sha256, detected) = match &a.stored {
                        Some(s) => (s.sha256.clone(), s.detected_type.clone().unwrap_or_else(|| "application/octet-stream".into())),
                        None => {
                            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &a.content_base64).unwrap_or_default();
                            (attachments::sha256_hex(&bytes), attachments::sniff(&bytes, &a.content_type))
                        }
                    };
                    json!({"id": attachments::attachment_id(i), "index": i, "filename": a.filename, "content_type": a.content_type, "size": a.size(),
                    "stored": a.stored.is_some(), "sha256": sha256, "detected_type": detected,
                    "content_base64": a.stored.is_none().then_some(&a.content_base64),
                    "download": format!("/download_attachment?id={id}&attachment={}", attachments::attachment_id(i))})
                })
                .collect::<Vec<_>>());
        }
        v["sent_at"] = json!(m.msg.sent_at.map(to_rfc3339));
    }
    if m.msg.read == 0 {
        messages::mark_read(&ctx.db, id).await?;
    }
    v["read"] = json!(true);
    Ok(Reply::ok(v))
}

pub async fn get_thread(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["id", "thread_id", "limit", "cursor"])?;
    let id = q.get("id").or(q.get("thread_id")).ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let limit = http::parse_limit(&q, 50, 100)?;
    let allowed = allowed(ctx);
    let f = InboxFilter {
        account_id: &p.account_id,
        livemode: p.livemode,
        mailbox_id: None,
        allowed: allowed.as_deref(),
        direction: None,
        unread: false,
        tag: None,
        since: None,
        from: None,
        subject_contains: None,
        thread_id: Some(id),
        before_id: None,
        after_id: q.get("cursor").map(String::as_str),
    };
    let rows = messages::inbox(&ctx.db, &f, limit + 1).await?;
    if rows.is_empty() && q.get("cursor").is_none() {
        return Err(ApiError::not_found("thread").with_field("id"));
    }
    let (rows, next) = super::page(rows, limit, |m| m.msg.id.clone());
    Ok(Reply::ok(json!({"id": id, "emails": rows.iter().map(summary).collect::<Vec<_>>(), "next_cursor": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tag {
    id: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// Tags are 1–50 characters of a-z, 0-9, `-`, `_`, `.`, `:` (lower-cased).
pub fn normalize_tag(t: &str) -> ApiResult<String> {
    let t = t.trim().to_ascii_lowercase();
    let ok = !t.is_empty() && t.len() <= 50 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok { Ok(t) } else { Err(ApiError::invalid_field("tags", format!("`{t}` is not a tag: 1–50 characters of a-z, 0-9, - _ . :"))) }
}

pub async fn tag_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: Tag = http::from_body(body)?;
    let add = input.tags.iter().map(|t| normalize_tag(t)).collect::<ApiResult<Vec<_>>>()?;
    let remove = input.remove.iter().map(|t| normalize_tag(t)).collect::<ApiResult<Vec<_>>>()?;
    let m = readable(ctx, &input.id).await?;
    let mut tags: Vec<String> = serde_json::from_str(&m.msg.tags).unwrap_or_default();
    tags.retain(|t| !remove.contains(t));
    for t in add {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_field("tags", format!("an email may carry at most {MAX_TAGS} tags")));
    }
    let json_tags = serde_json::to_string(&tags).expect("strings serialize");
    messages::set_tags(&ctx.db, &input.id, &json_tags).await?;
    Ok(Reply::ok(json!({"id": input.id, "tags": tags, "mailbox_id": m.msg.mailbox_id})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyInput {
    id: String,
    text: Option<String>,
    html: Option<String>,
    markdown: Option<String>,
    cc: Option<OneOrMany>,
    bcc: Option<OneOrMany>,
    #[serde(default)]
    reply_all: bool,
    attachments: Option<Vec<AttachmentInput>>,
    headers: Option<serde_json::Map<String, Value>>,
    oversight_mode: Option<String>,
    metadata: Option<Value>,
    send_at: Option<String>,
    approval_ttl: Option<Value>,
    idempotency_key: Option<String>,
}

pub async fn reply_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: ReplyInput = http::from_body(body)?;
    let orig = readable(ctx, &input.id).await?;
    let o = &orig.msg;
    // To the original sender (its Reply-To when it gave one); replying to our own message goes
    // to its recipients.
    let parsed: Option<ParsedEmail> = if o.direction == Direction::Inbound {
        messages::blob(&ctx.db, &o.id, Blob::Parsed).await?.and_then(|j| serde_json::from_str(&j).ok())
    } else {
        None
    };
    let own: Vec<String> = serde_json::from_str(&o.to_json).unwrap_or_default();
    let mut to: Vec<String> = if o.direction == Direction::Inbound {
        vec![parsed.as_ref().and_then(|p| p.reply_to.clone()).unwrap_or_else(|| o.from_addr.clone())]
    } else {
        own.clone()
    };
    if input.reply_all && o.direction == Direction::Inbound {
        let me = orig.mailbox_address.to_ascii_lowercase();
        for r in own.iter().chain(serde_json::from_str::<Vec<String>>(&o.cc_json).unwrap_or_default().iter()) {
            let is_me = Recipient::parse(r).map(|x| x.address.to_string().to_ascii_lowercase() == me).unwrap_or(false);
            if !is_me && !to.contains(r) {
                to.push(r.clone());
            }
        }
    }
    let subject = if o.subject.to_ascii_lowercase().starts_with("re:") { o.subject.clone() } else { format!("Re: {}", o.subject) };
    let mut headers = input.headers.clone().unwrap_or_default();
    if let Some(mid) = &o.message_id_header {
        let mut refs: Vec<String> = parsed.as_ref().map(|p| p.references.clone()).unwrap_or_default();
        refs.push(mid.clone());
        headers.insert("In-Reply-To".into(), json!(format!("<{mid}>")));
        headers.insert("References".into(), json!(refs.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(" ")));
    }
    let req = SendEmailRequest {
        from: Some(orig.mailbox_address.clone()),
        to: Some(OneOrMany::Many(to)),
        cc: input.cc,
        bcc: input.bcc,
        reply_to: None,
        subject: Some(subject.chars().take(998).collect()),
        text: input.text,
        html: input.html,
        markdown: input.markdown,
        headers: Some(headers),
        attachments: input.attachments,
        oversight_mode: input.oversight_mode,
        metadata: input.metadata,
        send_at: input.send_at,
        approval_ttl: input.approval_ttl,
        category: None,
        idempotency_key: input.idempotency_key,
    };
    let v = req.validate(ctx.now)?;
    let mut reply = outbound::send_validated(ctx, v, Some(&o.thread_id)).await?;
    reply.body["in_reply_to"] = json!(o.id);
    Ok(reply)
}
