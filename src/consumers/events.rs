//! Events reach users: the outbox (`events`, written with the change it reports) is drained
//! through the `EVENTS` queue, never inside the API call that caused an event. Two stages share
//! the queue: `Drain` fans undispatched events out into one `Deliver` per (event, endpoint), and
//! `Deliver` makes one attempt, records it and schedules the next. The rules (signatures, what
//! an answer means, the retry schedule) are `domain::webhooks`; this file does the I/O.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{self, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{
    AbortController, Env, Fetch, Headers, Method, MessageBatch, MessageExt, QueueRetryOptionsBuilder, Request, RequestInit,
    RequestRedirect,
};

use crate::app::audit;
use crate::app::queues::{enqueue_events as enqueue, kick_events as kick, parse_job, EventsJob};
use crate::platform::hop_delay_secs;
use crate::domain::webhooks::{self as rules, Answer, AttemptStatus, EventFacts, Format, Subscription, Verdict};
use crate::platform::{self, Config};
use crate::store::{self, events, webhooks};

/// Events claimed per round of a drain, and rounds per drain (the rest goes to the next kick).
const DRAIN_PAGE: u32 = 50;
const DRAIN_ROUNDS: usize = 20;
/// A drain's hold on the events it took; after this another drain may take them again.
const DRAIN_LEASE_MS: i64 = 60_000;
/// A `pending` attempt untouched this long belongs to a worker that died.
const STALE_ATTEMPT_MS: i64 = 2 * 60_000;
/// What the cron treats as a lost retry or a dead attempt.
const SWEEP_AFTER_MS: i64 = 15 * 60_000;
/// How much of a failed answer's body is read (its start goes into the attempt's `error`).
const MAX_ERROR_BODY: usize = 16 * 1024;

enum Step {
    Done,
    /// Leave the queue message for later (another worker holds the attempt).
    Later(u32),
}

/// The consumer of `multimail-events` and its dead-letter queue. Every message is acked or
/// retried on its own; attempts in one batch run together, so one slow receiver does not hold
/// up the others.
pub async fn consume(batch: MessageBatch<Value>, env: Env) {
    let dead_letters = batch.queue().ends_with("-dlq");
    let config = Config::from_env(&env);
    let mut drains = vec![];
    let mut deliveries = vec![];
    for raw in batch.raw_iter() {
        match parse_job::<EventsJob>(&raw) {
            None => {
                worker::console_error!("events: dropping a malformed queue message");
                raw.ack();
            }
            Some(EventsJob::Drain) => drains.push(raw),
            Some(job) => deliveries.push((raw, job)),
        }
    }
    if !drains.is_empty() {
        // On the dead-letter queue a drain has nothing left to do: the cron drains too.
        let drained = if dead_letters { Ok(0) } else { drain(&env).await };
        match drained {
            Ok(_) => drains.iter().for_each(|r| r.ack()),
            Err(e) => {
                worker::console_error!("events: drain: {e}");
                drains.iter().for_each(|r| r.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(30).build()));
            }
        }
    }
    let attempts = deliveries.iter().map(|(raw, job)| {
        let (env, config) = (&env, &config);
        async move {
            let result = if dead_letters { give_up(env, job).await } else { deliver(env, config, job).await };
            match result {
                Ok(Step::Done) => raw.ack(),
                Ok(Step::Later(secs)) => raw.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(secs).build()),
                Err(e) => {
                    // Storage trouble: the queue tries again after twice the delivery backoff
                    // (10 s by default), and after max_retries hands it to the DLQ.
                    worker::console_error!("events: delivery {job:?}: {e}");
                    raw.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds((config.delivery_backoff_secs * 2).max(1)).build());
                }
            }
        }
    });
    future::join_all(attempts).await;
}

/// Fans undispatched events out to their endpoints, a page at a time, oldest first.
pub async fn drain(env: &Env) -> worker::Result<usize> {
    let db = store::db(env)?;
    let queue = env.queue("EVENTS")?;
    let mut total = 0;
    for _ in 0..DRAIN_ROUNDS {
        let claimed = events::claim_undispatched(&db, platform::now_ms(), DRAIN_LEASE_MS, DRAIN_PAGE).await?;
        if claimed.is_empty() {
            return Ok(total);
        }
        let mut endpoints: HashMap<(String, i64), Vec<webhooks::EndpointRow>> = HashMap::new();
        let mut jobs = vec![];
        for ev in &claimed {
            let key = (ev.account_id.clone(), ev.livemode);
            if !endpoints.contains_key(&key) {
                let found = webhooks::active(&db, &ev.account_id, ev.livemode == 1).await?;
                endpoints.insert(key.clone(), found);
            }
            let facts = EventFacts {
                account_id: &ev.account_id,
                livemode: ev.livemode == 1,
                event_type: &ev.event_type,
                mailbox_id: ev.mailbox_id.as_deref(),
                created_at: ev.created_at,
            };
            for ep in &endpoints[&key] {
                let types = ep.event_types();
                let sub = Subscription {
                    account_id: &ep.account_id,
                    livemode: ep.livemode == 1,
                    events: &types,
                    mailbox_id: ep.mailbox_id.as_deref(),
                    created_at: ep.created_at,
                };
                if rules::wants(&sub, &facts) {
                    jobs.push(EventsJob::Deliver { event_id: ev.id.clone(), endpoint_id: ep.id.clone(), attempt: 1, due_at: None });
                }
            }
        }
        // Queue first, then mark: a drain that dies in between leaves the events to the next
        // one, and a repeated first attempt is a no-op (its row already exists).
        for chunk in jobs.chunks(100) {
            queue.send_batch(chunk.to_vec()).await?;
        }
        let ids: Vec<&str> = claimed.iter().map(|e| e.id.as_str()).collect();
        events::mark_dispatched(&db, &serde_json::to_string(&ids).expect("strings serialize"), platform::now_ms()).await?;
        total += claimed.len();
        if claimed.len() < DRAIN_PAGE as usize {
            return Ok(total);
        }
    }
    kick(env).await; // more than one drain's worth: the next message continues
    Ok(total)
}

/// One attempt of one delivery: claim it, call the endpoint, record the answer, schedule what
/// comes next.
async fn deliver(env: &Env, config: &Config, job: &EventsJob) -> worker::Result<Step> {
    let EventsJob::Deliver { event_id, endpoint_id, attempt, due_at } = job else { return Ok(Step::Done) };
    let attempt = *attempt;
    let now = platform::now_ms();
    if let Some(due) = due_at.filter(|d| *d > now + 1000) {
        enqueue(env, job.clone(), hop_delay_secs(due, now)).await?;
        return Ok(Step::Done);
    }
    let db = store::db(env)?;
    let (Some(ep), Some(ev)) = (webhooks::by_id(&db, endpoint_id).await?, events::get(&db, event_id).await?) else {
        return Ok(Step::Done);
    };
    let ep = crate::app::webhook_secrets::opened(env, ep)?;
    if webhooks::has_succeeded(&db, &ep.id, &ev.id).await? {
        return Ok(Step::Done);
    }
    let row_id = platform::new_id("whd");
    let row_id = if webhooks::claim_attempt(&db, &row_id, &ep.id, &ev.id, attempt, now).await? {
        row_id
    } else {
        // This attempt has a row: it ran, or it is running, or its worker died mid-call.
        match webhooks::attempt(&db, &ep.id, &ev.id, attempt).await? {
            Some(d) if d.status == AttemptStatus::Pending => {
                if !webhooks::take_over(&db, &d.id, now - STALE_ATTEMPT_MS, now).await? {
                    return Ok(Step::Later(60));
                }
                d.id
            }
            _ => return Ok(Step::Done),
        }
    };
    if ep.deleted_at.is_some() || ep.disabled_at.is_some() {
        let why = if ep.deleted_at.is_some() { "not attempted: the endpoint was deleted" } else { "not attempted: the endpoint is disabled" };
        let f = webhooks::Finish { status: AttemptStatus::Failed, response_code: None, latency_ms: None, error: Some(why), next_retry_at: None };
        webhooks::finish(&db, &row_id, &f, now).await?;
        return Ok(Step::Done);
    }

    let payload: Value = serde_json::from_str(&ev.payload).unwrap_or_else(|_| json!({}));
    let format = Format::parse(Some(&ep.format)).unwrap_or(Format::Standard);
    let out = rules::outgoing(format, &payload, &ep.signing_secrets(now), now / 1000);
    let started = platform::now_ms();
    // The name is resolved and judged first: a public-looking name that points inside is
    // refused before any connection is made.
    let called = match guard(env, config, &ep.url).await {
        Err(why) => Called::Refused(why),
        Ok(()) => call(&ep.url, &out).await,
    };
    let latency = platform::now_ms() - started;
    let answer = match &called {
        Called::Status { code, retry_after, .. } => Answer::Status { code: *code, retry_after: retry_after.as_deref() },
        Called::TimedOut => Answer::TimedOut,
        Called::Unreachable(_) | Called::Refused(_) => Answer::Unreachable,
    };
    let now = platform::now_ms();
    let verdict = rules::judge(attempt, &answer, now, config.webhook_retry_scale);
    let code = match &called {
        Called::Status { code, .. } => Some(i64::from(*code)),
        _ => None,
    };
    let what = called.describe();
    let mut f = webhooks::Finish { status: AttemptStatus::Failed, response_code: code, latency_ms: Some(latency), error: None, next_retry_at: None };
    let gave_up;
    match verdict {
        Verdict::Succeeded => {
            f.status = AttemptStatus::Succeeded;
            match webhooks::finish(&db, &row_id, &f, now).await {
                Ok(_) => {}
                Err(e) if store::is_unique_violation(&e) => {
                    // Another attempt of this delivery succeeded first (a taken-over attempt
                    // raced its original): record this one without a second success.
                    f.status = AttemptStatus::Failed;
                    f.error = Some("a concurrent attempt of this delivery had already succeeded");
                    webhooks::finish(&db, &row_id, &f, now).await?;
                }
                Err(e) => return Err(e),
            }
            return Ok(Step::Done);
        }
        Verdict::Retry { delay_secs } => {
            let next = now + i64::from(delay_secs) * 1000;
            f.status = AttemptStatus::Retrying;
            f.error = what.as_deref();
            f.next_retry_at = Some(next);
            webhooks::finish(&db, &row_id, &f, now).await?;
            let job = EventsJob::Deliver { event_id: ev.id.clone(), endpoint_id: ep.id.clone(), attempt: attempt + 1, due_at: Some(next) };
            // If this send is lost the cron's sweep finds the overdue retry and sends it.
            enqueue(env, job, hop_delay_secs(next, now)).await?;
            return Ok(Step::Done);
        }
        Verdict::GiveUp => {
            gave_up = format!("gave up after {attempt} attempts; last: {}", what.as_deref().unwrap_or("no answer"));
            f.error = Some(&gave_up);
            webhooks::finish(&db, &row_id, &f, now).await?;
        }
        Verdict::Disable => {
            let reason = "the endpoint answered 410 Gone";
            f.error = Some("410 Gone: the endpoint is now disabled");
            webhooks::finish(&db, &row_id, &f, now).await?;
            if webhooks::disable(&db, &ep.id, reason, now).await? {
                audit::record(env, audit::Facts {
                    account_id: ep.account_id.clone(),
                    livemode: ep.livemode == 1,
                    actor: "system:webhooks".into(),
                    action: "webhook.disabled".into(),
                    mailbox: ep.mailbox_id.clone(),
                    outcome: "disabled".into(),
                    detail: Some(format!("{} ({}): {reason}", ep.id, ep.url)),
                    ..Default::default()
                })
                .await;
            }
        }
    }
    Ok(Step::Done)
}

/// What happened when the endpoint was called.
enum Called {
    Status { code: u16, retry_after: Option<String>, body: Option<String>, location: Option<String> },
    TimedOut,
    Unreachable(String),
    /// Not attempted: the host resolved to an address webhooks may not reach.
    Refused(String),
}

impl Called {
    /// The attempt's `error`: `None` for a 2xx.
    fn describe(&self) -> Option<String> {
        let text = match self {
            Called::Status { code, .. } if (200..300).contains(code) => return None,
            Called::Status { code, location: Some(to), .. } if (300..400).contains(code) => {
                format!("answered {code}; redirects are not followed (Location: {to})")
            }
            Called::Status { code, body, .. } => match body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
                Some(b) => format!("answered {code}: {b}"),
                None => format!("answered {code}"),
            },
            Called::TimedOut => format!("no answer within {} s", rules::TIMEOUT_SECS),
            Called::Unreachable(e) => format!("could not connect: {e}"),
            Called::Refused(why) => format!("not attempted: {why}"),
        };
        // A short excerpt, with control characters (a receiver's answer is anyone's text) made
        // spaces, so nothing in it can forge lines in a log or a page.
        Some(text.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect())
    }
}

/// Resolves the endpoint's host name (an IP literal was judged when the endpoint was made) and
/// judges every address it resolves to.
async fn guard(env: &Env, config: &Config, url: &str) -> Result<(), String> {
    let Ok(parsed) = worker::Url::parse(url) else { return Err("the URL does not parse".into()) };
    match parsed.host() {
        Some(worker::url::Host::Domain(name)) => {
            let addresses = crate::app::domains::resolve_host(env, name).await?;
            rules::judge_resolved(&addresses, config.allow_http_loopback_webhooks)
        }
        _ => Ok(()),
    }
}

/// POSTs one attempt, giving up after `TIMEOUT_SECS`. Redirects are not followed (a redirect
/// could lead to an address the URL check would have refused).
async fn call(url: &str, out: &rules::Outgoing) -> Called {
    let controller = AbortController::default();
    let signal = controller.signal();
    let attempt = async {
        let headers = Headers::new();
        for (k, v) in &out.headers {
            headers.set(k, v)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_redirect(RequestRedirect::Manual)
            .with_body(Some(JsValue::from_str(&out.body)));
        let req = Request::new_with_init(url, &init)?;
        let mut resp = Fetch::Request(req).send_with_signal(&signal).await?;
        let code = resp.status_code();
        let header = |n: &str| resp.headers().get(n).ok().flatten();
        let (retry_after, location) = (header("Retry-After"), header("Location"));
        let body = if (200..300).contains(&code) { None } else { Some(head_of_body(&mut resp).await) };
        Ok::<_, worker::Error>(Called::Status { code, retry_after, body, location })
    };
    let timer = worker::Delay::from(Duration::from_secs(u64::from(rules::TIMEOUT_SECS)));
    let raced = future::select(Box::pin(attempt), Box::pin(timer)).await;
    let called = match raced {
        Either::Left((Ok(called), _)) => called,
        Either::Left((Err(e), _)) => Called::Unreachable(e.to_string()),
        Either::Right(_) => {
            controller.abort();
            Called::TimedOut
        }
    };
    called
}

/// The first `MAX_ERROR_BODY` bytes of an answer's body, read as text (the rest is not read).
async fn head_of_body(resp: &mut worker::Response) -> String {
    let mut head = Vec::new();
    if let Ok(mut stream) = resp.stream() {
        while head.len() < MAX_ERROR_BODY {
            match stream.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                _ => break,
            }
        }
    }
    head.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&head).into_owned()
}

/// The dead-letter queue: an attempt whose queue message kept failing (storage trouble) is
/// recorded as failed, so the delivery log tells the truth.
async fn give_up(env: &Env, job: &EventsJob) -> worker::Result<Step> {
    let EventsJob::Deliver { event_id, endpoint_id, attempt, .. } = job else { return Ok(Step::Done) };
    let db = store::db(env)?;
    let now = platform::now_ms();
    let row_id = platform::new_id("whd");
    let error = "gave up: this attempt could not be processed (see the worker's logs)";
    let f = webhooks::Finish { status: AttemptStatus::Failed, response_code: None, latency_ms: None, error: Some(error), next_retry_at: None };
    if webhooks::claim_attempt(&db, &row_id, endpoint_id, event_id, *attempt, now).await? {
        webhooks::finish(&db, &row_id, &f, now).await?;
    } else if let Some(d) = webhooks::attempt(&db, endpoint_id, event_id, *attempt).await?.filter(|d| d.status == AttemptStatus::Pending) {
        webhooks::finish(&db, &d.id, &f, now).await?;
    }
    Ok(Step::Done)
}

/// Housekeeping for the hourly cron: drain events whose kick was lost, and resend attempts
/// whose queue message was lost (an overdue retry, or an attempt whose worker died).
pub async fn sweep(env: &Env) -> worker::Result<usize> {
    let drained = drain(env).await?;
    let db = store::db(env)?;
    let now = platform::now_ms();
    let stalled = webhooks::stalled(&db, now - SWEEP_AFTER_MS, 500).await?;
    for d in &stalled {
        let attempt = if d.status == AttemptStatus::Pending { d.attempt } else { d.attempt + 1 } as u32;
        enqueue(env, EventsJob::Deliver { event_id: d.event_id.clone(), endpoint_id: d.endpoint_id.clone(), attempt, due_at: None }, 0).await?;
    }
    Ok(drained + stalled.len())
}
