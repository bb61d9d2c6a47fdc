//! The `AuditChain` Durable Object: one per account and mode, the only writer of its chain.
//! Requests record entries in D1's `audit_pending` (no round trip to this object); the object
//! seals what is pending, oldest first, in one D1 batch per pass (`POST /seal`, called by the
//! log's readers and by the cron). Passes run one at a time (`block_concurrency_while`), so
//! every entry links to the one before it. The head `(seq, hash)` is kept in the object's
//! storage, so a tail deleted from D1 is still noticed by `verify_audit_log`.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State, Storage};

use crate::domain::audit;
use crate::{platform, store};

type Head = Option<(i64, String)>;

/// Entries sealed per D1 batch.
const PASS: u32 = 200;
/// Passes per call: a backlog larger than this is finished by the next call.
const MAX_PASSES: u32 = 25;

#[durable_object]
pub struct AuditChain {
    state: State,
    env: Env,
    head: Rc<RefCell<Option<Head>>>,
}

#[derive(Deserialize)]
struct Chain {
    account_id: String,
    livemode: bool,
}

async fn load_head(storage: &Storage, db: &store::Db, c: &Chain) -> Result<Head> {
    if let Some(h) = storage.get::<(i64, String)>("head").await? {
        return Ok(Some(h));
    }
    store::audit::head(db, &c.account_id, c.livemode).await
}

/// Seals everything pending in the chain; returns how many entries it sealed.
async fn seal(storage: Storage, env: Env, cache: Rc<RefCell<Option<Head>>>, chain: Chain) -> Result<u64> {
    let db = store::db(&env)?;
    let mut sealed_count = 0u64;
    let mut conflicts = 0;
    for _ in 0..MAX_PASSES {
        let pending = store::audit::pending(&db, &chain.account_id, chain.livemode, PASS).await?;
        let Some(last_pid) = pending.last().map(|(pid, _)| *pid) else { break };
        let cached = cache.borrow().clone();
        let mut head = match cached {
            Some(h) => h,
            None => load_head(&storage, &db, &chain).await?,
        };
        let mut sealed = Vec::with_capacity(pending.len());
        for (_, entry) in pending.iter() {
            let e = audit::seal(entry.clone(), head.as_ref().map(|(s, h)| (*s, h.as_str())));
            head = Some((e.seq, e.hash.clone()));
            sealed.push(e);
        }
        match store::audit::seal(&db, &sealed, &chain.account_id, chain.livemode, last_pid, platform::now_ms()).await {
            Ok(()) => {
                if let Some(h) = &head {
                    storage.put("head", h).await?;
                }
                *cache.borrow_mut() = Some(head);
                sealed_count += sealed.len() as u64;
                if pending.len() < PASS as usize {
                    break;
                }
            }
            // Our idea of the head was stale (storage lost, or a restore): re-read it from D1.
            Err(e) if store::is_unique_violation(&e) && conflicts < 3 => {
                conflicts += 1;
                let h = store::audit::head(&db, &chain.account_id, chain.livemode).await?;
                *cache.borrow_mut() = Some(h);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sealed_count)
}

impl DurableObject for AuditChain {
    fn new(state: State, env: Env) -> Self {
        platform::set_clock(&env);
        AuditChain { state, env, head: Rc::new(RefCell::new(None)) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.method() == worker::Method::Get {
            // The head this chain has written, for verification.
            let head: Head = self.state.storage().get("head").await?;
            return Response::from_json(&serde_json::json!({"seq": head.as_ref().map(|h| h.0), "hash": head.map(|h| h.1)}));
        }
        let chain: Chain = req.json().await?;
        let fut = seal(self.state.storage(), self.env.clone(), self.head.clone(), chain);
        let sealed = self.state.block_concurrency_while(fut).await?;
        Response::from_json(&serde_json::json!({ "sealed": sealed }))
    }
}
