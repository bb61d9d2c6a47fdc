//! `POST /send_email`: parse and validate the body, then the outbound path (`app::outbound`).
//! Answers 202. `POST /send_batch`: up to 500 of them in one call (`app::batch`).

use serde_json::Value;

use worker::Request;

use crate::app::{batch, outbound, Ctx};
use crate::http::auth;
use crate::domain::send::{self, SendEmailRequest};
use crate::http::{self, ApiResult, Reply};

pub async fn send_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    // The attachments are decoded straight from the body, never copied first (25 MB of them).
    let (light, contents) = send::split_contents(body);
    let input: SendEmailRequest = http::from_body(&light)?;
    let v = input.validate_with(ctx.now, Some(&contents))?;
    drop((input, light));
    outbound::send_validated(ctx, v, None).await
}

pub async fn send_batch(ctx: &Ctx, req: &Request, body: &Value) -> ApiResult<Reply> {
    let caller = auth::presented_key(req)?.0;
    batch::send_batch(ctx, body, &caller).await
}
