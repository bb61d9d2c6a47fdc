//! The `Approval` Durable Object: one per held message, the single owner of its decision.
//! Commands (decide, cancel, expire) run one at a time and go through the pure state machine
//! in `domain::approval`; the decision is stored here first, then mirrored to D1 (status,
//! timeline, `email.decided`), and an approval enqueues delivery. An alarm at the absolute
//! expiry time expires it. If mirroring fails, the record remembers and the next request or a
//! retry alarm finishes the job.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, ScheduledTime, State, Storage};

use crate::app::oversight::{apply_decision_effects, DoRequest, DoResponse, Hold, HoldOutcome};
use crate::domain::approval::{apply, Approval as ApprovalState, Command, Outcome, Status};
use crate::platform;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    hold: Hold,
    approval: ApprovalState,
    effects_applied: bool,
    /// Who decided and whether the decision should be audited here (link and expiry
    /// decisions; API decisions are audited by the router).
    audit_here: bool,
}

#[durable_object]
pub struct Approval {
    state: State,
    env: Env,
}

fn at(ms: i64) -> ScheduledTime {
    ScheduledTime::new(worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(ms as f64)))
}

async fn run(storage: Storage, env: Env, req: DoRequest) -> Result<DoResponse> {
    let mut rec = match storage.get::<Record>("record").await? {
        Some(r) => r,
        None => {
            let rec = Record { approval: ApprovalState::pending(req.hold.expires_at), hold: req.hold.clone(), effects_applied: true, audit_here: false };
            storage.put("record", &rec).await?;
            storage.set_alarm(at(rec.hold.expires_at)).await?;
            rec
        }
    };
    if !rec.effects_applied {
        if let Err(e) = finish(&storage, &env, &mut rec, false).await {
            worker::console_error!("approval {}: mirroring the decision failed, will retry: {e}", rec.hold.message_id);
        }
    }
    let Some(cmd) = req.command else {
        return Ok(DoResponse { outcome: HoldOutcome::Held, approval: rec.approval });
    };
    let audit_here = matches!(cmd, Command::Expire { .. }) || req.audit_here;
    match apply(&rec.approval, cmd) {
        Outcome::Decided { approval, enqueue_delivery } => {
            rec.approval = approval;
            rec.effects_applied = false;
            rec.audit_here = audit_here;
            storage.put("record", &rec).await?;
            // The decision is final once stored; mirroring it is retried by the alarm if it fails.
            if let Err(e) = finish(&storage, &env, &mut rec, enqueue_delivery).await {
                worker::console_error!("approval {}: mirroring the decision failed, will retry: {e}", rec.hold.message_id);
            }
            Ok(DoResponse { outcome: HoldOutcome::Decided, approval: rec.approval })
        }
        Outcome::AlreadyDecided(a) => Ok(DoResponse { outcome: HoldOutcome::AlreadyDecided, approval: a }),
        Outcome::Ignored => Ok(DoResponse { outcome: HoldOutcome::Ignored, approval: rec.approval }),
    }
}

/// Mirrors the decision to D1 and enqueues delivery; marks the record done only once that worked.
async fn finish(storage: &Storage, env: &Env, rec: &mut Record, enqueue: bool) -> Result<()> {
    let enqueue = enqueue || rec.approval.status == Status::Approved;
    match apply_decision_effects(env, &rec.hold, &rec.approval, enqueue, rec.audit_here).await {
        Ok(()) => {
            rec.effects_applied = true;
            storage.put("record", &*rec).await?;
            let _ = storage.delete_alarm().await;
            Ok(())
        }
        Err(e) => {
            // Try again shortly; the decision itself is already final.
            storage.set_alarm(Duration::from_secs(5)).await?;
            Err(e)
        }
    }
}

impl DurableObject for Approval {
    fn new(state: State, env: Env) -> Self {
        platform::set_clock(&env);
        Approval { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let body: DoRequest = req.json().await?;
        let fut = run(self.state.storage(), self.env.clone(), body);
        let out = self.state.block_concurrency_while(fut).await?;
        Response::from_json(&out)
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let Some(rec) = storage.get::<Record>("record").await? else { return Response::ok("empty") };
        let req = DoRequest { hold: rec.hold, command: Some(Command::Expire { at: platform::now_ms() }), audit_here: true };
        let fut = run(storage, self.env.clone(), req);
        self.state.block_concurrency_while(fut).await?;
        Response::ok("done")
    }
}
