//! Putting work on the queues: a message on `DELIVERY` (delayed toward its `send_at` in hops),
//! and events jobs on `EVENTS` (a drain kick, or one webhook attempt). The consumers in
//! `crate::consumers` read what is written here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::{Env, MessageBuilder, RawMessage};

use crate::platform::hop_delay_secs;

#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub message_id: String,
    /// Why it is on the dead-letter queue, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventsJob {
    /// Fan out whatever the outbox holds.
    Drain,
    /// One attempt to deliver one event to one endpoint. `due_at`: not before then (a wait
    /// longer than one queue hop arrives early and hops again).
    Deliver {
        event_id: String,
        endpoint_id: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_at: Option<i64>,
    },
}

/// Puts a message on the delivery queue, delayed until `send_at` (in hops of at most 12 h).
pub async fn enqueue_delivery(env: &Env, message_id: &str, send_at: Option<i64>, now: i64) -> worker::Result<()> {
    let job = DeliveryJob { message_id: message_id.to_string(), reason: None };
    let delay = send_at.map_or(0, |at| hop_delay_secs(at, now));
    env.queue("DELIVERY")?.send(MessageBuilder::new(job).delay_seconds(delay).build()).await
}

/// Many messages in one `sendBatch` (at most 100, Cloudflare's limit), each delayed until its
/// `send_at` like `enqueue_delivery`.
pub async fn enqueue_deliveries(env: &Env, messages: &[(&str, Option<i64>)], now: i64) -> worker::Result<()> {
    let batch: Vec<_> = messages
        .iter()
        .map(|(id, send_at)| {
            let job = DeliveryJob { message_id: id.to_string(), reason: None };
            MessageBuilder::new(job).delay_seconds(send_at.map_or(0, |at| hop_delay_secs(at, now))).build()
        })
        .collect();
    env.queue("DELIVERY")?.send_batch(batch).await
}

/// A retry of a delivery, `delay_secs` from now.
pub async fn retry_delivery(env: &Env, message_id: &str, delay_secs: u32) -> worker::Result<()> {
    let job = DeliveryJob { message_id: message_id.to_string(), reason: None };
    env.queue("DELIVERY")?.send(MessageBuilder::new(job).delay_seconds(delay_secs).build()).await
}

/// A delivery that failed for good, with why, for the dead-letter consumer.
pub async fn dead_letter_delivery(env: &Env, message_id: &str, reason: String) -> worker::Result<()> {
    env.queue("DELIVERY_DLQ")?.send(DeliveryJob { message_id: message_id.to_string(), reason: Some(reason) }).await
}

/// An events job, `delay_secs` from now.
pub async fn enqueue_events(env: &Env, job: EventsJob, delay_secs: u32) -> worker::Result<()> {
    env.queue("EVENTS")?.send(MessageBuilder::new(job).delay_seconds(delay_secs).build()).await
}

/// Wakes the fan-out after events were written. Fire-and-forget: a lost kick only delays the
/// events until the hourly cron drains them.
pub async fn kick_events(env: &Env) {
    let sent = match env.queue("EVENTS") {
        Ok(q) => q.send(EventsJob::Drain).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        worker::console_error!("events: could not kick the fan-out (the hourly cron will drain): {e}");
    }
}

/// Reads a queue message's body as a job; `None` for a malformed one.
pub fn parse_job<T: DeserializeOwned>(raw: &RawMessage) -> Option<T> {
    let text = worker::js_sys::JSON::stringify(&raw.body()).ok()?.as_string()?;
    serde_json::from_str(&text).ok()
}
