//! The path every outbound message takes (`send_email`, `reply_email`): the sender and its
//! domain, suppressions, the oversight decision (`domain::oversight::effective_mode`), the MIME
//! built once, one D1 batch (message, bodies, timeline, event, the idempotent answer), then the
//! delivery queue or a hold (the Approval Durable Object, `email.pending` and a notification
//! to the oversight address).

use serde_json::json;
use worker::D1PreparedStatement;

use crate::app::{identity, oversight, payloads, queues, Ctx};
use crate::domain::address::{EmailAddress, Recipient};
use crate::domain::delivery::{OutboundEmail, Provider};
use crate::domain::message::{Direction, MessageKind, MessageStatus};
use crate::domain::oversight::{effective_mode, OversightMode};
use crate::domain::send::ValidatedSend;
use crate::domain::disclosure::AiDisclosure;
use crate::domain::rules::{self, RuleAction};
use crate::domain::scan::{self, ScanPolicy};
use crate::domain::suppression;
use crate::domain::error::DomainError;
use crate::domain::send::MAX_MESSAGE_BYTES;
use crate::app::attachments;
use crate::store::attachments as store_att;
use crate::domain::{ids, mime, time::to_rfc3339};
use crate::http::{ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::mailboxes::{self, MailboxRow};
use crate::store::AccountOf;
use crate::store::rules as rule_store;
use crate::store::Db;
use crate::store::{events, messages::{self, Blob, MessageRow, NewMessage}};

fn addresses(rs: &[Recipient]) -> String {
    serde_json::to_string(&rs.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("strings serialize")
}

/// Whose message it is: the account and mode, and the mailbox (empty for our own system mail,
/// such as a sign-in link).
pub struct Owner<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub mailbox_id: &'a str,
    pub approval_ttl_secs: i64,
}

impl<'a> Owner<'a> {
    pub fn of(ctx: &'a Ctx, mailbox: &'a MailboxRow) -> Owner<'a> {
        let p = ctx.principal();
        Owner { account_id: &p.account_id, livemode: p.livemode, mailbox_id: &mailbox.id, approval_ttl_secs: mailbox.approval_ttl_secs }
    }
}

/// A message ready to store: its row, its bodies, its first timeline entries and the events
/// about it. `statements` writes one; `send_batch` writes many with bulk statements.
pub struct Staged {
    pub row: MessageRow,
    pub blobs: Vec<(Blob, String)>,
    /// Attachments that go to the attachments bucket before the row is written (a message too
    /// large for D1): `(index, key, content)`.
    pub in_bucket: Vec<(usize, String, std::sync::Arc<Vec<u8>>)>,
    pub timeline: Vec<(&'static str, Option<String>)>,
    pub events: Vec<serde_json::Value>,
}

impl Staged {
    pub fn note(&mut self, kind: &'static str, detail: impl Into<String>) {
        self.timeline.push((kind, Some(detail.into())));
    }

    /// The statements that store it, one row each.
    pub fn statements(&self, db: &Db) -> worker::Result<Vec<D1PreparedStatement>> {
        let mut out = vec![messages::insert(db, &self.row)?];
        for (kind, body) in &self.blobs {
            out.push(messages::insert_blob(db, &self.row.id, *kind, body)?);
        }
        for (kind, detail) in &self.timeline {
            out.push(messages::timeline(db, &self.row.id, self.row.created_at, kind, detail.as_deref())?);
        }
        for payload in &self.events {
            out.push(events::about_message(db, &self.row, payload)?);
        }
        if !self.in_bucket.is_empty() {
            let rows: Vec<(usize, String, usize)> = self.in_bucket.iter().map(|(i, k, c)| (*i, k.clone(), c.len())).collect();
            out.push(store_att::insert_for(db, &self.row.id, &rows, self.row.created_at)?);
        }
        Ok(out)
    }
}

/// Builds the MIME once and stages the message row, its two bodies and its first timeline entry.
/// `monitor_copy` is added as an envelope-only Bcc (the `monitored` mode's copy).
#[allow(clippy::too_many_arguments)]
/// A message too large for one D1 row keeps its attachments in the attachments bucket, and its
/// MIME is built when it is delivered (stored empty).
pub fn stage_outbound(ctx: &Ctx, id: String, v: &ValidatedSend, owner: &Owner<'_>, mode: OversightMode, status: MessageStatus, kind: MessageKind, thread_id: &str, monitor_copy: Option<&str>) -> ApiResult<Staged> {
    let in_bucket = !v.fits_inline() && !v.attachments.is_empty();
    if in_bucket && attachments::bucket(&ctx.env).is_none() {
        return Err(ApiError::from(DomainError::MessageTooLarge { limit_bytes: MAX_MESSAGE_BYTES, actual_bytes: v.encoded_size() })
            .with_extra(json!({"hint": "this deployment has no attachments bucket (ATTACHMENTS), so a message is at most 1.5 MB"})));
    }
    let mime_text = if in_bucket { String::new() } else { String::from_utf8(mime::build(v, &id, ctx.now)?).map_err(|_| ApiError::internal())? };
    let mut outbound = OutboundEmail::from_validated(v, &id, &mime::message_id_header(&id, v.from.address.domain()), in_bucket);
    if let Some(copy) = monitor_copy {
        outbound.bcc.push(copy.to_string());
    }
    let expires_at = (status == MessageStatus::PendingApproval)
        .then(|| ctx.now + 1000 * v.approval_ttl_secs.unwrap_or(owner.approval_ttl_secs));
    let mut row = MessageRow::new(NewMessage {
        id: id.clone(),
        account_id: owner.account_id.to_string(),
        livemode: owner.livemode,
        mailbox_id: owner.mailbox_id.to_string(),
        direction: Direction::Outbound,
        kind,
        thread_id: thread_id.to_string(),
        from_addr: v.from.to_string(),
        subject: v.subject.clone(),
        oversight_mode: mode,
        status,
        now: ctx.now,
    });
    row.to_json = addresses(&v.to);
    row.cc_json = addresses(&v.cc);
    row.bcc_json = addresses(&v.bcc);
    row.metadata = v.metadata.to_string();
    row.send_at = v.send_at;
    row.idempotency_key = if kind == MessageKind::Message { ctx.idempotency_key().map(str::to_string) } else { None };
    row.expires_at = expires_at;
    row.message_id_header = Some(mime::message_id_header(&id, v.from.address.domain()));
    row.read = 1;
    row.snippet = Some(v.text.as_deref().or(v.html.as_deref()).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect());
    row.category = v.marketing.then(|| "marketing".to_string());
    let mut staged = Staged {
        row,
        blobs: vec![(Blob::Mime, mime_text), (Blob::Outbound, serde_json::to_string(&outbound).map_err(|_| ApiError::internal())?)],
        in_bucket: outbound
            .attachments
            .iter()
            .zip(&v.attachments)
            .enumerate()
            .filter_map(|(i, (o, a))| o.stored.as_ref().map(|s| (i, s.key.clone(), a.content.clone())))
            .collect(),
        timeline: vec![("created", Some(format!("oversight_mode {}", mode.as_str())))],
        events: vec![],
    };
    if let Some(at) = v.send_at {
        staged.note("scheduled", to_rfc3339(at));
    }
    if let Some(exp) = expires_at {
        staged.note("held", format!("pending_approval until {}", to_rfc3339(exp)));
    }
    Ok(staged)
}

/// The email that asks the oversight address to decide, with signed approve/reject links.
fn notification(ctx: &Ctx, held: &MessageRow, v: &ValidatedSend, mailbox: &MailboxRow, to: &str) -> ApiResult<Option<Staged>> {
    let exp = held.expires_at.unwrap_or(ctx.now);
    let Some((approve, reject)) = oversight::review_links(&ctx.env, &ctx.config.public_base_url, &held.id, to, exp) else {
        worker::console_warn!("no link secret: no approval request email is sent for {}", held.id);
        return Ok(None);
    };
    let preview: String = v.text.as_deref().or(v.html.as_deref()).unwrap_or("").chars().take(2000).collect();
    let text = format!(
        "A message from {from} is waiting for your approval.\n\nTo: {to_list}\nSubject: {subject}\nExpires: {exp}\n\n---\n{preview}\n---\n\nApprove: {approve}\nReject:  {reject}\n\nEach link opens a page that asks you to confirm. Message id: {id}\n",
        from = held.from_addr,
        to_list = v.to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        subject = v.subject,
        exp = to_rfc3339(exp),
        id = held.id,
    );
    let mut subject: String = format!("Approval needed: {}", v.subject).chars().take(990).collect();
    subject.retain(|c| !c.is_control());
    let note = ValidatedSend {
        // From the deployment, not the agent's mailbox: a human's reply reaches no agent, and
        // agents cannot send look-alikes (`domain::send::imitates_system`).
        from: Recipient { name: Some("MultiMail oversight".into()), address: EmailAddress::parse(&ctx.config.oversight_from).map_err(|_| ApiError::internal())? },
        to: vec![Recipient::parse(to).map_err(|_| ApiError::internal())?],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject,
        text: Some(text),
        html: None,
        headers: vec![("Auto-Submitted".into(), "auto-generated".into())],
        attachments: vec![],
        oversight_mode: None,
        metadata: json!({"approval_for": held.id}),
        send_at: None,
        approval_ttl_secs: None,
        marketing: false,
    };
    let thread = platform::new_id(ids::THREAD);
    stage_outbound(ctx, platform::new_id(ids::MESSAGE), &note, &Owner::of(ctx, mailbox), OversightMode::Autonomous, MessageStatus::Queued, MessageKind::Notification, &thread, None).map(Some)
}

/// What the pre-send scan finds in a send (nothing when the mailbox's scan is off). Text
/// attachments are scanned with the bodies.
fn scan_findings(mailbox: &MailboxRow, v: &ValidatedSend) -> Vec<scan::Finding> {
    if mailbox.scan == ScanPolicy::Off {
        return vec![];
    }
    let texts: Vec<Option<&str>> = v.attachments.iter().map(|a| std::str::from_utf8(&a.content).ok()).collect();
    scan::scan(&scan::Outbound {
        subject: &v.subject,
        text: v.text.as_deref(),
        html: v.html.as_deref(),
        attachments: v.attachments.iter().zip(texts).map(|(a, t)| (a.filename.as_str(), t)).collect(),
    })
}

/// What identifies the send path's reads: the sender address, its domain and the recipients.
fn sender_reads_key(address: &str, domain: &str, recipients: &[String]) -> String {
    format!("sender\n{address}\n{domain}\n{}", recipients.join("\n"))
}

fn sender_reads_of(v: &ValidatedSend) -> (String, String, Vec<String>) {
    let recipients: Vec<String> = v.all_recipients().map(|r| r.address.to_string().to_ascii_lowercase()).collect();
    (v.from.address.to_string().to_ascii_lowercase(), v.from.address.domain().to_string(), recipients)
}

/// `send_email`'s reads (the sender mailbox with suppressions, the domain's status), to run in
/// the authentication batch: a send then costs two D1 round trips, that one and its write.
pub fn prefetch_send(db: &Db, key_hash: &str, body: &serde_json::Value, now: i64) -> Option<crate::app::Prefetch> {
    // Without the attachments' contents: the reads need only the addresses.
    let (light, _) = crate::domain::send::split_contents(body);
    let input: crate::domain::send::SendEmailRequest = crate::http::from_body(&light).ok()?;
    let v = input.validate(now).ok()?;
    let (address, domain, recipients) = sender_reads_of(&v);
    let statements = mailboxes::sender_statements(db, AccountOf::KeyHash(key_hash), &address, &domain, &recipients).ok()?;
    Some(crate::app::Prefetch { statements: statements.into(), key: sender_reads_key(&address, &domain, &recipients) })
}

/// The key's mailbox for this address (404 on `from` otherwise) and which recipients are
/// suppressed, after checking that the address's domain may send (422): prefetched, or one
/// round trip.
pub async fn sender(ctx: &Ctx, v: &ValidatedSend) -> ApiResult<(mailboxes::Sender, Vec<(RuleAction, String)>)> {
    let p = ctx.principal();
    let (address, domain, recipients) = sender_reads_of(v);
    let results = match ctx.take_prefetched(&sender_reads_key(&address, &domain, &recipients)) {
        Some(r) => r,
        None => ctx.db.batch(mailboxes::sender_statements(&ctx.db, AccountOf::Id(&p.account_id), &address, &domain, &recipients)?.into()).await?,
    };
    sender_from(ctx, &address, &domain, &results)
}

/// `sender`'s answer from the three results of `mailboxes::sender_statements`.
pub fn sender_from(ctx: &Ctx, address: &str, domain: &str, results: &[worker::D1Result]) -> ApiResult<(mailboxes::Sender, Vec<(RuleAction, String)>)> {
    let p = ctx.principal();
    if domain != p.default_domain && !mailboxes::verified_of(&results[1])? {
        return Err(ApiError::unprocessable(
            "domain_not_verified",
            format!("`{domain}` is not a verified sending domain of this account; use {}", p.default_domain),
        )
        .with_field("from"));
    }
    let sender = mailboxes::sender_of(&results[0])?
        .filter(|s| p.can_use_mailbox(&s.mailbox.id))
        .ok_or_else(|| ApiError::new(404, "mailbox_not_found", format!("no mailbox `{address}` in this account")).with_field("from"))?;
    Ok((sender, rule_store::of(&results[2])?))
}

/// What one send becomes, decided and staged but not yet stored: the message, the approval
/// request to the oversight address (when held and there is one), and the answer.
pub struct Planned {
    pub staged: Staged,
    pub note: Option<Staged>,
    pub held: bool,
    pub answer: serde_json::Value,
}

impl Planned {
    pub fn status(&self) -> MessageStatus {
        self.staged.row.status
    }
}

/// Everything `send_email` decides about one message after its sender's reads: suppressions,
/// recipient rules, the oversight mode, the scan, the AI disclosure, the hold or pause, and the
/// staged rows. `send_batch` runs it for each item. `suppressed` may list more addresses than
/// this message has (a batch reads its senders' suppressions once); only its own count.
pub fn plan(ctx: &Ctx, v: &ValidatedSend, sender: &mailboxes::Sender, send_rules: &[(RuleAction, String)], thread_id: Option<&str>, idempotency_key: Option<&str>) -> ApiResult<Planned> {
    let p = ctx.principal();
    let mailboxes::Sender { mailbox, suppressed, oversight_email, paused } = sender;
    let mode = effective_mode(mailbox.oversight_mode, v.oversight_mode)?;
    // A message the provider would refuse for its size is refused now, not after a human
    // approved it.
    if let Some(limit) = Provider::for_mode(ctx.config.provider, p.livemode).max_message_bytes().filter(|l| v.encoded_size() > *l) {
        return Err(ApiError::from(DomainError::MessageTooLarge { limit_bytes: limit, actual_bytes: v.encoded_size() })
            .with_extra(json!({"hint": format!("{} takes messages of at most {limit} bytes with their attachments", ctx.config.provider.as_str())})));
    }

    // Suppressed recipients are skipped; with none left there is nothing to send.
    let mut v = v.clone();
    let mine: Vec<String> = v.all_recipients().map(|r| r.address.to_string().to_ascii_lowercase()).filter(|a| suppressed.contains(a)).collect();
    let mut suppressed: Vec<String> = vec![];
    for a in mine {
        if !suppressed.contains(&a) {
            suppressed.push(a);
        }
    }
    if !suppressed.is_empty() {
        let keep = |r: &Recipient| !suppressed.contains(&r.address.to_string().to_ascii_lowercase());
        v.to.retain(keep);
        v.cc.retain(keep);
        v.bcc.retain(keep);
        if v.to.is_empty() && v.cc.is_empty() && v.bcc.is_empty() {
            return Err(ApiError::recipient_suppressed("every recipient is", &suppressed, "to"));
        }
        if v.to.is_empty() {
            // Keep a To header: promote the first remaining recipient.
            let first = if v.cc.is_empty() { v.bcc.remove(0) } else { v.cc.remove(0) };
            v.to.push(first);
        }
    }
    // Recipient rules: a blocked recipient refuses the send; in a gated mode, a mailbox that
    // opted in sends to recipients all on its allow list without a hold.
    let recipients: Vec<String> = v.all_recipients().map(|r| r.address.to_string().to_ascii_lowercase()).collect();
    let verdict = rules::judge(send_rules, &recipients);
    if !verdict.blocked.is_empty() {
        return Err(ApiError::recipient_blocked(&verdict.blocked, "to"));
    }
    let bypass = mode.holds_outbound() && mailbox.allowlist_bypass == 1 && verdict.all_allowed;
    let v = &v;
    let id = platform::new_id(ids::MESSAGE);
    let mut v_owned;
    let v = if v.marketing {
        v_owned = v.clone();
        let secret = oversight::link_secret(&ctx.env)
            .ok_or_else(|| ApiError::new(503, "not_configured", "APPROVAL_LINK_SECRET is not set on this deployment: unsubscribe links cannot be signed"))?;
        let rcpt = v.all_recipients().next().map(|r| r.address.to_string().to_ascii_lowercase()).unwrap_or_default();
        let tok = suppression::token(&secret, &suppression::UnsubscribeClaims { account: p.account_id.clone(), address: rcpt, message_id: id.clone(), live: p.livemode });
        v_owned.headers.extend(suppression::list_unsubscribe_headers(&ctx.config.public_base_url, v.from.address.domain(), &tok));
        &v_owned
    } else {
        v
    };
    // The pre-send scan: a finding holds the message for a human whatever the mode (or refuses
    // it, as the mailbox says).
    let findings = scan_findings(mailbox, v);
    if mailbox.scan == ScanPolicy::Block && !findings.is_empty() {
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        return Err(ApiError::unprocessable("scan_blocked", format!("the message looks like it carries {} ({}); this mailbox refuses such mail", rules.join(", "), findings[0].field))
            .with_field(findings[0].field)
            .with_extra(json!({"findings": rules})));
    }
    let hold_reason = findings.first().map(scan::Finding::reason);
    // AI disclosure (after the scan, which looks at what the agent wrote): the header and
    // footer go into the MIME and the provider payload alike.
    let mut disclosed;
    let v = if mailbox.ai_disclosure == AiDisclosure::None {
        v
    } else {
        disclosed = v.clone();
        mailbox.ai_disclosure.apply(&mut disclosed);
        &disclosed
    };
    let held = (mode.holds_outbound() && !bypass) || hold_reason.is_some();
    // Paused (the mailbox or the account): a message that would go out waits for a resume.
    let status = if held {
        MessageStatus::PendingApproval
    } else if *paused {
        MessageStatus::Paused
    } else if v.send_at.is_some() {
        MessageStatus::Scheduled
    } else {
        MessageStatus::Queued
    };
    let monitor_copy = (mode == OversightMode::Monitored).then_some(oversight_email.as_deref()).flatten();
    let thread_id = thread_id.map_or_else(|| platform::new_id(ids::THREAD), str::to_string);
    let mut staged = stage_outbound(ctx, id, v, &Owner::of(ctx, mailbox), mode, status, MessageKind::Message, &thread_id, monitor_copy)?;
    staged.row.idempotency_key = idempotency_key.map(str::to_string);
    let to_list: Vec<String> = v.to.iter().map(ToString::to_string).collect();

    let mut note = None;
    if bypass && !held {
        staged.note("allowlisted", "every recipient is on the allow list: sent without a hold (allowlist_bypass)");
    }
    if status == MessageStatus::Paused {
        staged.note("paused", "sending waits: the mailbox or the account is paused");
    }
    if let Some(reason) = &hold_reason {
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        staged.note("scan", format!("{reason}: {} found; held for a human", rules.join(", ")));
    }
    if held {
        let mut payload = payloads::pending(&staged.row, &mailbox.address, &to_list, ctx.now);
        payload["hold_reason"] = json!(hold_reason);
        staged.events.push(payload);
        if let Some(to) = oversight_email.as_deref() {
            note = notification(ctx, &staged.row, v, mailbox, to)?;
        }
    }
    let row = &staged.row;
    let answer = json!({
        "id": row.id,
        "status": status,
        "oversight_mode": mode.as_str(),
        "mailbox": mailbox.address,
        "mailbox_id": mailbox.id,
        "from": row.from_addr,
        "to": to_list,
        "cc": v.cc.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "subject": v.subject,
        "thread_id": thread_id,
        "created_at": to_rfc3339(ctx.now),
        "send_at": v.send_at.map(to_rfc3339),
        "expires_at": row.expires_at.map(to_rfc3339),
        "metadata": v.metadata,
        "category": row.category,
        "suppressed": suppressed,
        "hold_reason": hold_reason,
    });
    Ok(Planned { staged, note, held, answer })
}

/// After the write: a held message gets its Approval object (and its approval request is
/// queued); a message that may go out is queued (delayed until its `send_at`). Failures here
/// are repaired by the hourly sweep, so the caller still gets its 202.
pub async fn after_stored(ctx: &Ctx, planned: &Planned) {
    let cost = ctx.db.cost();
    let row = &planned.staged.row;
    if planned.held {
        if let Err(e) = cost.durable_object.time(oversight::hold(&ctx.env, row)).await {
            worker::console_error!("{}: holding {} failed (the sweep expires it on time): {e}", ctx.request_id, row.id);
        }
        if let Some(n) = &planned.note {
            if let Err(e) = cost.queue.time(queues::enqueue_delivery(&ctx.env, &n.row.id, None, ctx.now)).await {
                worker::console_error!("{}: enqueue of notification {} failed, the sweep will retry: {e}", ctx.request_id, n.row.id);
            }
        }
    } else if row.status == MessageStatus::Paused {
        // Nothing to enqueue: a resume releases it.
    } else if let Err(e) = cost.queue.time(queues::enqueue_delivery(&ctx.env, &row.id, row.send_at, ctx.now)).await {
        worker::console_error!("{}: enqueue of {} failed, the sweep will retry: {e}", ctx.request_id, row.id);
    }
}

/// The path every outbound message takes (`send_email`, `reply_email`): sender and oversight
/// checks, one D1 batch, then the queue or a hold. `thread_id`: the thread a reply joins.
/// Takes the send by value: a large message's attachments are then held once, by the rows
/// waiting to go to the bucket.
pub async fn send_validated(ctx: &Ctx, v: ValidatedSend, thread_id: Option<&str>) -> ApiResult<Reply> {
    // Mail that could never be signed is refused before anything is stored.
    identity::require_key(&ctx.env, ctx.principal().livemode)?;

    // The sending domain, the mailbox and which recipients are suppressed, in one round trip
    // (or none: prefetched with the key).
    let (sender, send_rules) = sender(ctx, &v).await?;
    let mut planned = plan(ctx, &v, &sender, &send_rules, thread_id, ctx.idempotency_key())?;
    drop(v);
    let reply = Reply::accepted(planned.answer.clone());
    let mut statements = planned.staged.statements(&ctx.db)?;
    if let Some(n) = &planned.note {
        statements.extend(n.statements(&ctx.db)?);
    }
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        statements.push(s);
    }
    // A large message's attachments are in the bucket before its row exists, so a delivery
    // never finds them missing.
    let uploads = std::mem::take(&mut planned.staged.in_bucket);
    if !uploads.is_empty() {
        let bytes: usize = uploads.iter().map(|(_, _, c)| c.len()).sum();
        attachments::put_outbound(ctx, uploads).await?;
        worker::console_log!("{}: large send {}: {bytes} bytes of attachments in the bucket; wasm memory {} MiB", ctx.request_id, planned.staged.row.id, platform::wasm_memory_mib());
    }
    // The call's audit entry commits with the message (no write after the answer).
    let audit_entry = ctx.audit_entry(&reply)?;
    let audited = audit_entry.is_some();
    statements.extend(audit_entry);
    ctx.db.batch(statements).await?;
    if audited {
        ctx.audited();
    }
    if planned.held {
        ctx.db.cost().queue.time(queues::kick_events(&ctx.env)).await;
    }
    after_stored(ctx, &planned).await;
    Ok(reply)
}
