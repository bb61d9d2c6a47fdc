//! The workflows shared by routes, queue consumers, the cron and the Durable Objects: sending
//! (`outbound`), holding and deciding (`oversight`), mode changes (`mode_changes`), inbound mail
//! (`inbound`), what events say (`payloads`), putting work on the queues (`queues`), the audit
//! trail (`audit`), the sender identity (`identity`), custom domains (`domains`) and what a key
//! may see (`access`). Nothing here imports `routes`, `consumers` or `durable`.

pub mod access;
pub mod attachments;
pub mod audit;
pub mod batch;
pub mod changes;
pub mod domains;
pub mod edits;
pub mod identity;
pub mod inbound;
pub mod keys;
pub mod mailboxes;
pub mod mode_changes;
pub mod operators;
pub mod outbound;
pub mod oversight;
pub mod pause;
pub mod payloads;
pub mod queues;
pub mod rules;
pub mod webcrypto;
pub mod webhook_secrets;

use crate::store::Db;
use std::cell::{Cell, RefCell};

use worker::{D1PreparedStatement, D1Result, Env};

use crate::domain::idempotency;
use crate::http::auth::Principal;
use crate::http::{ApiResult, Reply};
use crate::platform::Config;
use crate::store::idempotency as idem_store;

/// Everything a workflow run on behalf of one request may use.
pub struct Ctx {
    pub env: Env,
    pub db: Db,
    pub config: Config,
    pub request_id: String,
    pub now: i64,
    principal: Option<Principal>,
    idem: Option<IdemSlot>,
    prefetched: RefCell<Option<Prefetched>>,
    /// The audit facts of this API call, for a handler that records them in its own batch.
    audit: Option<audit::Facts>,
    audited: Cell<bool>,
}

/// Reads a route asks for before its handler runs, so that they ride in the authentication
/// batch (one D1 round trip fewer): the statements, which find the account through the key's
/// hash, and a key saying what they were for. The handler uses the results only when it
/// would have asked the same (`Ctx::take_prefetched` with its own key).
pub struct Prefetch {
    pub statements: Vec<D1PreparedStatement>,
    pub key: String,
}

/// A route's reads, prefetched with the key's lookup: `(db, key hash, JSON body, now)`.
pub type Prefetcher = fn(&Db, &str, &serde_json::Value, i64) -> Option<Prefetch>;

struct Prefetched {
    key: String,
    results: Vec<D1Result>,
}

/// The idempotency key this request holds, and whether its answer is already stored.
struct IdemSlot {
    key: String,
    completed: Cell<bool>,
}

impl Ctx {
    pub fn new(env: Env, db: Db, config: Config, request_id: &str, now: i64, principal: Option<Principal>) -> Ctx {
        Ctx { env, db, config, request_id: request_id.to_string(), now, principal, idem: None, prefetched: RefCell::new(None), audit: None, audited: Cell::new(false) }
    }

    /// The facts the router will record about this call.
    pub fn set_audit_facts(&mut self, f: Option<audit::Facts>) {
        self.audit = f;
    }

    /// The statement that records this call's audit entry with `reply` as its answer, for a
    /// handler's own write batch; call `audited` once the batch is stored. `None` when the call
    /// is not audited.
    pub fn audit_entry(&self, reply: &Reply) -> ApiResult<Option<D1PreparedStatement>> {
        let Some(mut f) = self.audit.clone() else { return Ok(None) };
        audit::answered(&mut f, reply.status, Some(&reply.body), false);
        Ok(Some(audit::pending(&self.db, f)?))
    }

    /// One audit entry per message of a call that sent many (`send_batch`): the call's facts,
    /// each with its message, mailbox and mode, in order. Empty when the call is not audited.
    pub fn audit_entries_for(&self, reply: &Reply, answers: &[&serde_json::Value]) -> Vec<crate::domain::audit::AuditEntry> {
        let Some(base) = self.audit.clone() else { return vec![] };
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut f = base.clone();
                audit::answered(&mut f, reply.status, Some(a), false);
                f.detail = Some(format!("item {} of {}", i + 1, answers.len()));
                audit::entry(f)
            })
            .collect()
    }

    /// `audit_entry` with a detail (what the call changed, beyond its answer).
    pub fn audit_entry_with_detail(&self, reply: &Reply, detail: String) -> ApiResult<Option<D1PreparedStatement>> {
        let Some(mut f) = self.audit.clone() else { return Ok(None) };
        audit::answered(&mut f, reply.status, Some(&reply.body), false);
        f.detail = Some(detail);
        Ok(Some(audit::pending(&self.db, f)?))
    }

    /// The handler stored the audit entry with its batch: the router records nothing more.
    pub fn audited(&self) {
        self.audited.set(self.audit.is_some());
    }

    pub fn was_audited(&self) -> bool {
        self.audited.get()
    }

    /// Keeps what the authentication batch read for the handler.
    pub fn set_prefetched(&mut self, key: String, results: Vec<D1Result>) {
        *self.prefetched.get_mut() = Some(Prefetched { key, results });
    }

    /// The prefetched results, when they were read for `key` (once).
    pub fn take_prefetched(&self, key: &str) -> Option<Vec<D1Result>> {
        let mut slot = self.prefetched.borrow_mut();
        if slot.as_ref().is_some_and(|p| p.key == key) {
            slot.take().map(|p| p.results)
        } else {
            None
        }
    }

    /// The caller's key; only routes with `Access::Key` reach handlers that call this.
    pub fn principal(&self) -> &Principal {
        self.principal.as_ref().expect("keyed route has a principal")
    }

    pub fn has_principal(&self) -> bool {
        self.principal.is_some()
    }

    /// From here on this request owns `key`: its answer is stored under it.
    pub fn hold_idempotency_key(&mut self, key: &str) {
        self.idem = Some(IdemSlot { key: key.to_string(), completed: Cell::new(false) });
    }

    /// The scope of an idempotency key of this caller.
    pub fn idem_scope<'a>(&'a self, key: &'a str) -> idem_store::Scope<'a> {
        let p = self.principal();
        idem_store::Scope { account_id: &p.account_id, livemode: p.livemode, key }
    }

    /// The statement that stores this answer for replay, for a handler to put in its own write
    /// batch (so the answer and the change commit together). `None` without an idempotency key.
    pub fn idempotency_completion(&self, reply: &Reply) -> ApiResult<Option<D1PreparedStatement>> {
        let Some(slot) = &self.idem else { return Ok(None) };
        if !idempotency::is_stored(reply.status) {
            return Ok(None);
        }
        let stmt = idem_store::complete(&self.db, &self.idem_scope(&slot.key), reply.status, &reply.body.to_string())?;
        slot.completed.set(true);
        Ok(Some(stmt))
    }

    /// Whether a handler already stored the answer with its own batch.
    pub fn idempotency_completed(&self) -> bool {
        self.idem.as_ref().is_some_and(|s| s.completed.get())
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        self.idem.as_ref().map(|s| s.key.as_str())
    }
}
