//! `send_batch`: up to 500 `send_email` bodies in one call. Each item takes the very path of
//! `send_email` (`outbound::plan`: its sender, suppressions, recipient rules, oversight mode,
//! scan and disclosure), with the reads shared: one round trip for every distinct sender and one
//! for the items' own idempotency keys. Then one atomic D1 batch writes every accepted item with
//! bulk statements (`store::messages::insert_many` and its siblings), and the queue gets one
//! `sendBatch` per 100 messages.
//!
//! `strict` (the default) refuses the whole batch when one item is refused, storing nothing;
//! `permissive` sends the others and reports each refused item with its error. Every answer
//! lists the items in order.
//!
//! Idempotency: the batch's `Idempotency-Key` replays the whole answer (stored in the same
//! atomic write as the messages, so a batch is stored whole or not at all). An item's own
//! `idempotency_key` is the same record a `send_email` with that key would make (same caller,
//! same body): a repeat replays the message instead of sending it again, in a batch or not.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::app::outbound::{self, Planned};
use crate::app::{identity, queues, Ctx};
use crate::domain::batch::{self, BatchMode, MAX_ITEMS, MAX_SENDERS};
use crate::domain::idempotency::{self, IdempotencyKey, Replay};
use crate::domain::message::MessageStatus;
use crate::domain::error::DomainError;
use crate::domain::send::{SendEmailRequest, ValidatedSend, MAX_MESSAGE_BYTES};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store::{self, events, mailboxes, messages, AccountOf};

/// What became of one item.
enum Item {
    Planned(Box<Planned>, Option<(String, String)>),
    /// An earlier request with the item's key already sent it: its stored answer.
    Replayed(Value),
    Refused(ApiError),
}

/// `caller`: the SHA-256 of the key presented (an item's record is bound to it, as a
/// `send_email`'s is).
pub async fn send_batch(ctx: &Ctx, body: &Value, caller: &str) -> ApiResult<Reply> {
    let p = ctx.principal();
    let obj = body.as_object().ok_or_else(|| ApiError::invalid_field("emails", "the body is an object with `emails`"))?;
    if let Some(k) = obj.keys().find(|k| !["emails", "mode", "idempotency_key"].contains(&k.as_str())) {
        return Err(ApiError::new(400, "unknown_field", format!("`{k}` is not a field of send_batch")).with_field(k));
    }
    let emails = obj
        .get("emails")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty() && e.len() <= MAX_ITEMS)
        .ok_or_else(|| ApiError::invalid_field("emails", format!("`emails` is a list of 1 to {MAX_ITEMS} send_email bodies")))?;
    let mode = match obj.get("mode") {
        None => BatchMode::Strict,
        Some(m) => serde_json::from_value::<BatchMode>(m.clone()).map_err(|_| ApiError::invalid_field("mode", "`mode` is strict (the default) or permissive"))?,
    };
    // Mail that could never be signed is refused before anything is stored.
    identity::require_key(&ctx.env, p.livemode)?;

    // Each item on its own: its body, then its key.
    let mut items: Vec<Result<(ValidatedSend, Option<String>), ApiError>> = Vec::with_capacity(emails.len());
    for raw in emails {
        items.push(parse_item(ctx, raw));
    }

    // Round trip: every distinct sender's mailbox, suppressions, domain and rules.
    let mut senders: Vec<(String, String, Vec<String>)> = vec![];
    for (v, _) in items.iter().flatten() {
        let address = v.from.address.to_string().to_ascii_lowercase();
        let recipients = v.all_recipients().map(|r| r.address.to_string().to_ascii_lowercase());
        match senders.iter_mut().find(|s| s.0 == address) {
            Some(s) => s.2.extend(recipients),
            None => senders.push((address, v.from.address.domain().to_string(), recipients.collect())),
        }
    }
    if senders.len() > MAX_SENDERS {
        return Err(ApiError::unprocessable("too_many_senders", format!("a batch sends from at most {MAX_SENDERS} different `from` addresses")).with_field("emails"));
    }
    let mut reads = vec![];
    for (address, domain, recipients) in &mut senders {
        recipients.sort();
        recipients.dedup();
        reads.extend(mailboxes::sender_statements(&ctx.db, AccountOf::Id(&p.account_id), address, domain, recipients)?);
    }
    let results = if reads.is_empty() { vec![] } else { ctx.db.batch(reads).await? };
    let mut found: HashMap<String, Result<(mailboxes::Sender, Vec<(crate::domain::rules::RuleAction, String)>), ApiError>> = HashMap::new();
    for (n, (address, domain, _)) in senders.iter().enumerate() {
        let r = &results[n * 3..n * 3 + 3];
        found.insert(address.clone(), outbound::sender_from(ctx, address, domain, r));
    }

    // Round trip: the records under the items' keys.
    let keys: Vec<&str> = items.iter().flatten().filter_map(|(_, k)| k.as_deref()).collect();
    let records: HashMap<String, idempotency::StoredRecord> =
        if keys.is_empty() { HashMap::new() } else { store::idempotency::load_many(&ctx.db, &p.account_id, p.livemode, &keys).await?.into_iter().collect() };

    // Each item's decision, as send_email would make it.
    let mut outcome: Vec<Item> = Vec::with_capacity(items.len());
    let mut seen_keys: Vec<String> = vec![];
    for (i, item) in items.into_iter().enumerate() {
        let (v, key) = match item {
            Ok(x) => x,
            Err(e) => {
                outcome.push(Item::Refused(e));
                continue;
            }
        };
        let fingerprint = key.as_ref().map(|_| idempotency::fingerprint_for(caller, "POST", "/send_email", &emails[i]));
        if let (Some(k), Some(fingerprint)) = (&key, &fingerprint) {
            if seen_keys.contains(k) {
                outcome.push(Item::Refused(ApiError::unprocessable("idempotency_key_reused", "another item of this batch has the same idempotency_key").with_field("idempotency_key")));
                continue;
            }
            seen_keys.push(k.clone());
            if let Some(rec) = records.get(k).filter(|r| ctx.now - r.created_at <= idempotency::TTL_MS) {
                match idempotency::on_existing(rec, fingerprint, ctx.now) {
                    Replay::Replay { body, .. } => {
                        outcome.push(Item::Replayed(serde_json::from_str(&body).unwrap_or(Value::Null)));
                        continue;
                    }
                    Replay::Mismatch => {
                        outcome.push(Item::Refused(
                            ApiError::unprocessable("idempotency_key_reused", "this idempotency_key was used with a different request").with_field("idempotency_key"),
                        ));
                        continue;
                    }
                    Replay::InProgress | Replay::Stale => {
                        outcome.push(Item::Refused(ApiError::new(409, "idempotency_key_in_use", "a request with this idempotency_key is still running; retry later").with_field("idempotency_key")));
                        continue;
                    }
                }
            }
        }
        let address = v.from.address.to_string().to_ascii_lowercase();
        let planned = match found.get(&address).expect("every sender was read") {
            Ok((sender, rules)) => outbound::plan(ctx, &v, sender, rules, None, key.as_deref()),
            Err(e) => Err(e.clone()),
        };
        outcome.push(match planned {
            // The mailbox's disclosure footer can take a message past what D1 stores whole.
            Ok(pl) if !pl.staged.in_bucket.is_empty() => Item::Refused(too_large_for_a_batch(v.encoded_size(), "with this mailbox's AI disclosure footer ")),
            Ok(pl) => Item::Planned(Box::new(pl), key.zip(fingerprint)),
            Err(e) => Item::Refused(e),
        });
    }

    let refused = outcome.iter().filter(|o| matches!(o, Item::Refused(_))).count();
    let accepted = outcome.len() - refused;
    let results: Vec<Value> = outcome.iter().enumerate().map(|(i, o)| item_answer(ctx, i, o)).collect();
    if refused > 0 && (mode == BatchMode::Strict || accepted == 0) {
        let why = if mode == BatchMode::Strict { "one or more items were refused; in strict mode nothing is sent" } else { "every item was refused" };
        return Err(ApiError::unprocessable("batch_refused", format!("{why} (see `data`)"))
            .with_field("emails")
            .with_extra(json!({"mode": mode.as_str(), "refused": refused, "data": results})));
    }

    let planned: Vec<&Planned> = outcome.iter().filter_map(|o| if let Item::Planned(p, _) = o { Some(p.as_ref()) } else { None }).collect();
    let reply = Reply::accepted(json!({
        "mode": mode.as_str(),
        "accepted": accepted,
        "refused": refused,
        "data": results,
    }));

    // One atomic write: every accepted message with its bodies, timeline, events, item
    // records, one audit entry per message, and the batch's own answer.
    let staged: Vec<&outbound::Staged> = planned.iter().flat_map(|p| std::iter::once(&p.staged).chain(p.note.as_ref())).collect();
    let mut statements = messages::insert_many(&ctx.db, &staged.iter().map(|s| &s.row).collect::<Vec<_>>())?;
    let blobs: Vec<(&str, messages::Blob, &str)> = staged.iter().flat_map(|s| s.blobs.iter().map(|(k, b)| (s.row.id.as_str(), *k, b.as_str()))).collect();
    statements.extend(messages::insert_blobs_many(&ctx.db, &blobs)?);
    let timeline: Vec<(&str, i64, &str, Option<&str>)> =
        staged.iter().flat_map(|s| s.timeline.iter().map(|(k, d)| (s.row.id.as_str(), s.row.created_at, *k, d.as_deref()))).collect();
    statements.extend(messages::timeline_many(&ctx.db, &timeline)?);
    let evs: Vec<(&messages::MessageRow, &Value)> = staged.iter().flat_map(|s| s.events.iter().map(|e| (&s.row, e))).collect();
    statements.extend(events::about_messages(&ctx.db, &evs)?);
    let item_records: Vec<(String, String, String)> = outcome
        .iter()
        .filter_map(|o| match o {
            Item::Planned(pl, Some((k, f))) => Some((k.clone(), f.clone(), pl.answer.to_string())),
            _ => None,
        })
        .collect();
    let rows: Vec<(&str, &str, u16, &str)> = item_records.iter().map(|(k, f, b)| (k.as_str(), f.as_str(), 202, b.as_str())).collect();
    statements.extend(store::idempotency::insert_completed_many(&ctx.db, &p.account_id, p.livemode, &rows, ctx.now, ctx.now - idempotency::TTL_MS)?);
    let answers: Vec<&Value> = planned.iter().map(|p| &p.answer).collect();
    let entries = ctx.audit_entries_for(&reply, &answers);
    let audited = !entries.is_empty();
    statements.extend(store::audit::pend_many(&ctx.db, &entries)?);
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        statements.push(s);
    }
    // (Every item replayed and no batch key: nothing to write.)
    let written = if statements.is_empty() { Ok(vec![]) } else { ctx.db.batch(statements).await };
    match written {
        Ok(_) => {}
        Err(e) if store::is_unique_violation(&e) => {
            return Err(ApiError::new(409, "idempotency_key_in_use", "another request stored an item under one of these idempotency keys at the same moment; retry the batch")
                .with_field("emails"));
        }
        Err(e) => return Err(e.into()),
    }
    if audited {
        ctx.audited();
    }

    // After the write: holds, and the queue in chunks of 100 (failures are repaired by the sweep).
    let cost = ctx.db.cost();
    if planned.iter().any(|p| p.held) {
        cost.queue.time(queues::kick_events(&ctx.env)).await;
    }
    let mut deliveries: Vec<(&str, Option<i64>)> = vec![];
    let mut held = vec![];
    for pl in &planned {
        if pl.held {
            held.push(&pl.staged.row);
            if let Some(n) = &pl.note {
                deliveries.push((&n.row.id, None));
            }
        } else if pl.status() != MessageStatus::Paused {
            deliveries.push((&pl.staged.row.id, pl.staged.row.send_at));
        }
    }
    for group in held.chunks(25) {
        let holds = group.iter().map(|row| async move {
            if let Err(e) = crate::app::oversight::hold(&ctx.env, row).await {
                worker::console_error!("{}: holding {} failed (the sweep expires it on time): {e}", ctx.request_id, row.id);
            }
        });
        cost.durable_object.time(futures_util::future::join_all(holds)).await;
    }
    for chunk in deliveries.chunks(batch::QUEUE_CHUNK) {
        if let Err(e) = cost.queue.time(queues::enqueue_deliveries(&ctx.env, chunk, ctx.now)).await {
            worker::console_error!("{}: enqueue of {} batch messages failed, the sweep will retry: {e}", ctx.request_id, chunk.len());
        }
    }
    Ok(reply)
}

/// An item's body and its own idempotency key, checked as `send_email` checks them.
fn parse_item(ctx: &Ctx, raw: &Value) -> ApiResult<(ValidatedSend, Option<String>)> {
    let input: SendEmailRequest = http::from_body(raw)?;
    let key = match &input.idempotency_key {
        Some(k) => Some(IdempotencyKey::parse(k).map_err(|why| ApiError::invalid_field("idempotency_key", why))?.as_str().to_string()),
        None => None,
    };
    let v = input.validate(ctx.now)?;
    if !v.fits_inline() {
        return Err(too_large_for_a_batch(v.encoded_size(), ""));
    }
    Ok((v, key))
}

/// A batch's messages are stored whole in D1; a larger one goes through `send_email`. `why`
/// says what took it past the limit, when not its own size.
fn too_large_for_a_batch(size: usize, why: &str) -> ApiError {
    ApiError::from(DomainError::MessageTooLarge { limit_bytes: MAX_MESSAGE_BYTES, actual_bytes: size })
        .with_extra(json!({"hint": format!("{why}in a batch each message is at most 1.5 MB; send a larger one with send_email")}))
}

fn item_answer(ctx: &Ctx, index: usize, item: &Item) -> Value {
    match item {
        Item::Planned(pl, _) => {
            let mut a = pl.answer.clone();
            a["index"] = json!(index);
            a["replayed"] = json!(false);
            a
        }
        Item::Replayed(stored) => {
            let mut a = stored.clone();
            a["index"] = json!(index);
            a["replayed"] = json!(true);
            a
        }
        Item::Refused(e) => {
            let mut err = e.body(&ctx.request_id)["error"].clone();
            if let Some(o) = err.as_object_mut() {
                o.remove("request_id");
            }
            json!({"index": index, "status": "refused", "http_status": e.status, "error": err})
        }
    }
}
