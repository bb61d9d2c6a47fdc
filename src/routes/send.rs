//! `POST /send_email`: parse and validate the body, then the outbound path (`app::outbound`).
//! Answers 202. `POST /send_batch`: up to 500 of them in one call (`app::batch`).

use serde_json::Value;

use worker::Request;

use crate::app::{batch, outbound, Ctx};
use crate::http::auth;
use crate::domain::send::SendEmailRequest;
use crate::http::{self, ApiResult, Reply};

pub async fn send_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: SendEmailRequest = http::from_body(body)?;
    let v = input.validate(ctx.now)?;
    outbound::send_validated(ctx, &v, None).await
}

pub async fn send_batch(ctx: &Ctx, req: &Request, body: &Value) -> ApiResult<Reply> {
    let caller = auth::presented_key(req)?.0;
    batch::send_batch(ctx, body, &caller).await
}
