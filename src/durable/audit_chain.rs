//! The `AuditChain` Durable Object: one per account and mode, the only writer of its chain.
//! Appends run one at a time (`block_concurrency_while`), so every entry links to the one
//! before it. The head `(seq, hash)` is kept in the object's storage, so a tail deleted from D1
//! is still noticed by `verify_audit_log`.

use std::cell::RefCell;
use std::rc::Rc;

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State, Storage};

use crate::domain::audit::{self, AuditEntry};
use crate::{platform, store};

type Head = Option<(i64, String)>;

#[durable_object]
pub struct AuditChain {
    state: State,
    env: Env,
    head: Rc<RefCell<Option<Head>>>,
}

async fn load_head(storage: &Storage, env: &Env, e: &AuditEntry) -> Result<Head> {
    if let Some(h) = storage.get::<(i64, String)>("head").await? {
        return Ok(Some(h));
    }
    store::audit::head(&store::db(env)?, &e.account_id, e.livemode).await
}

async fn append(storage: Storage, env: Env, cache: Rc<RefCell<Option<Head>>>, entry: AuditEntry) -> Result<AuditEntry> {
    let db = store::db(&env)?;
    for _ in 0..3 {
        let head = match cache.borrow().clone() {
            Some(h) => h,
            None => load_head(&storage, &env, &entry).await?,
        };
        let sealed = audit::seal(entry.clone(), head.as_ref().map(|(s, h)| (*s, h.as_str())));
        match store::audit::insert(&db, &sealed, platform::now_ms()).await {
            Ok(()) => {
                let new_head = (sealed.seq, sealed.hash.clone());
                storage.put("head", &new_head).await?;
                *cache.borrow_mut() = Some(Some(new_head));
                return Ok(sealed);
            }
            // Our idea of the head was stale (storage lost, or a restore): re-read it from D1.
            Err(e) if store::is_unique_violation(&e) => {
                let h = store::audit::head(&db, &entry.account_id, entry.livemode).await?;
                *cache.borrow_mut() = Some(h);
            }
            Err(e) => return Err(e),
        }
    }
    Err(worker::Error::RustError("audit append kept conflicting".into()))
}

impl DurableObject for AuditChain {
    fn new(state: State, env: Env) -> Self {
        AuditChain { state, env, head: Rc::new(RefCell::new(None)) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.method() == worker::Method::Get {
            // The head this chain has written, for verification.
            let head: Head = self.state.storage().get("head").await?;
            return Response::from_json(&serde_json::json!({"seq": head.as_ref().map(|h| h.0), "hash": head.map(|h| h.1)}));
        }
        let entry: AuditEntry = req.json().await?;
        let fut = append(self.state.storage(), self.env.clone(), self.head.clone(), entry);
        let sealed = self.state.block_concurrency_while(fut).await?;
        Response::from_json(&sealed)
    }
}
