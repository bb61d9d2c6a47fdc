//! The sender identity, public: `GET /.well-known/jwks.json` (the keys that sign the
//! `MultiMail-Identity` header) and `GET /verify_identity?jws=…` (checks one header).

use worker::Request;

use crate::app::{identity, Ctx};
use crate::http::{self, ApiError, ApiResult, Reply};

pub async fn jwks(ctx: &Ctx) -> ApiResult<Reply> {
    Ok(Reply::ok(identity::jwks(&ctx.env)?))
}

pub async fn verify_identity(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let q = http::query_params(req, &["jws"])?;
    let jws = q.get("jws").ok_or_else(|| ApiError::invalid_field("jws", "`jws` is required: the MultiMail-Identity header's value"))?;
    let v = identity::verify(&ctx.env, jws).await?;
    Ok(Reply::ok(serde_json::to_value(v).map_err(|_| ApiError::internal())?))
}
