//! `GET /healthz`: the worker answers and D1 answers.

use serde::Deserialize;
use serde_json::json;

use super::Ctx;
use crate::http::{ApiError, ApiResult, Reply};

pub async fn healthz(ctx: &Ctx) -> ApiResult<Reply> {
    #[derive(Deserialize)]
    struct One {
        ok: i64,
    }
    match crate::store::first::<One>(&ctx.db, "SELECT 1 AS ok", &[]).await {
        Ok(Some(One { ok: 1 })) => Ok(Reply::ok(json!({"ok": true, "d1": "ok"}))),
        _ => Err(ApiError::new(503, "unavailable", "the database did not answer")),
    }
}
