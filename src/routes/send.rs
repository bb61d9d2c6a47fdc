//! `POST /send_email`: parse and validate the body, then the outbound path (`app::outbound`).
//! Answers 202.

use serde_json::Value;

use crate::app::{outbound, Ctx};
use crate::domain::send::SendEmailRequest;
use crate::http::{self, ApiResult, Reply};

pub async fn send_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: SendEmailRequest = http::from_body(body)?;
    let v = input.validate(ctx.now)?;
    outbound::send_validated(ctx, &v, None).await
}
