//! The approval Durable Object: one per held message, the single owner of its decision.
//! Declared now so the binding exists from the first deploy; the oversight issue wires it to
//! `send_email` and `decide_email`. What it already guarantees: the first decision is final and
//! every later one is answered with that first decision.

use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub decision: String,
    pub decided_by: String,
    pub decided_at: i64,
    pub reason: Option<String>,
}

#[durable_object]
pub struct Approval {
    state: State,
}

impl DurableObject for Approval {
    fn new(state: State, _env: Env) -> Self {
        Approval { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let storage = self.state.storage();
        let current: Option<Decision> = storage.get("decision").await?;
        if req.method() == worker::Method::Post {
            if let Some(d) = current {
                return Ok(Response::from_json(&d)?.with_status(409));
            }
            let d: Decision = req.json().await?;
            storage.put("decision", &d).await?;
            return Ok(Response::from_json(&d)?.with_status(200));
        }
        match current {
            Some(d) => Response::from_json(&d),
            None => Ok(Response::from_json(&serde_json::json!({"decision": null}))?),
        }
    }
}
