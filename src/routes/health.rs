//! `GET /healthz`: the worker answers and D1 answers.

use serde_json::json;

use crate::app::Ctx;
use crate::http::{ApiError, ApiResult, Reply};
use crate::store;

pub async fn healthz(ctx: &Ctx) -> ApiResult<Reply> {
    match store::ping(&ctx.db).await {
        Ok(true) => Ok(Reply::ok(json!({"ok": true, "d1": "ok"}))),
        _ => Err(ApiError::new(503, "unavailable", "the database did not answer")),
    }
}
