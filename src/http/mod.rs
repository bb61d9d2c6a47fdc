//! Requests in, responses out: JSON bodies with a size cap and a required content type, query
//! strings, and replies that always carry a `Request-Id`.

pub mod auth;
pub mod error;

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;
use worker::{Headers, Request, Response};

pub use error::{ApiError, ApiResult};

/// Bodies above this are refused with 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// `send_email`'s body: a message of 25 MB as sent (`MAX_LARGE_MESSAGE_BYTES`) with its JSON.
pub const MAX_SEND_BODY_BYTES: usize = 28 * 1024 * 1024;

/// A successful answer: status, JSON body and any extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
    /// A non-JSON body (for example JSON Lines); `headers` then names its Content-Type.
    pub raw: Option<String>,
    /// A binary body (a downloaded attachment); `headers` names its Content-Type.
    pub bytes: Option<Binary>,
}

/// A binary body: bytes in hand, or a stream the runtime passes to the client without the
/// worker reading it (an object in the attachments bucket).
#[derive(Debug, Clone)]
pub enum Binary {
    Bytes(Vec<u8>),
    Stream(worker::web_sys::ReadableStream),
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply { status: 200, body, headers: vec![], raw: None, bytes: None }
    }
    pub fn created(body: Value) -> Self {
        Reply { status: 201, body, headers: vec![], raw: None, bytes: None }
    }
    pub fn accepted(body: Value) -> Self {
        Reply { status: 202, body, headers: vec![], raw: None, bytes: None }
    }
    /// A body that is not a JSON value (a page, JSON Lines, a stored document), with the
    /// headers that describe it (its Content-Type; JSON when none is given).
    pub fn raw(status: u16, body: String, headers: Vec<(String, String)>) -> Self {
        Reply { status, body: Value::Null, headers, raw: Some(body), bytes: None }
    }
    /// 200 with a binary body of `content_type`, and more headers.
    pub fn bytes(body: Binary, content_type: &str, mut headers: Vec<(String, String)>) -> Self {
        headers.push(("Content-Type".into(), content_type.into()));
        Reply { status: 200, body: Value::Null, headers, raw: None, bytes: Some(body) }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

pub fn json_response(status: u16, body: &[u8], request_id: &str, extra: &[(String, String)]) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json; charset=utf-8")?;
    headers.set("Request-Id", request_id)?;
    headers.set("Cache-Control", "no-store")?;
    for (k, v) in extra {
        headers.set(k, v)?;
    }
    Ok(Response::from_bytes(body.to_vec())?.with_status(status).with_headers(headers))
}

/// A binary answer: its bytes, or its stream handed to the runtime as it is.
pub fn binary_response(status: u16, body: Binary, request_id: &str, extra: &[(String, String)]) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("Request-Id", request_id)?;
    headers.set("Cache-Control", "no-store")?;
    for (k, v) in extra {
        headers.set(k, v)?;
    }
    let body = match body {
        Binary::Bytes(b) => worker::ResponseBody::Body(b),
        Binary::Stream(s) => worker::ResponseBody::Stream(s),
    };
    Ok(Response::from_body(body)?.with_status(status).with_headers(headers))
}

pub fn error_response(err: &ApiError, request_id: &str, timing: Option<(String, String)>) -> worker::Result<Response> {
    let mut extra: Vec<(String, String)> = timing.into_iter().collect();
    if let Some(secs) = err.retry_after {
        extra.push(("Retry-After".to_string(), secs.to_string()));
    }
    if let Some(allow) = &err.allow {
        extra.push(("Allow".to_string(), allow.clone()));
    }
    if err.status == 401 && err.code == "invalid_api_key" {
        // RFC 6750: say how to authenticate (MCP clients read it too).
        extra.push(("WWW-Authenticate".to_string(), "Bearer realm=\"MultiMail\"".to_string()));
    }
    json_response(err.status, err.body(request_id).to_string().as_bytes(), request_id, &extra)
}

/// The request's declared `Content-Length`.
pub fn content_length(req: &Request) -> Option<usize> {
    req.headers().get("Content-Length").ok().flatten().and_then(|l| l.parse::<usize>().ok())
}

/// Reads a JSON object body: `Content-Type: application/json`, at most `limit` bytes.
pub async fn read_json_object(req: &mut Request, limit: usize) -> ApiResult<Value> {
    let ct = req.headers().get("Content-Type").ok().flatten().unwrap_or_default();
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "application/json" {
        return Err(ApiError::new(415, "unsupported_media_type", "POST bodies must be JSON with `Content-Type: application/json`"));
    }
    let too_large = || ApiError::new(413, "payload_too_large", format!("the request body is larger than {limit} bytes"));
    let bytes = read_capped(req, limit, too_large, "invalid_json").await?;
    parse_json_object(&bytes)
}

/// The body's bytes, refused with `too_large()` above `limit` (by its Content-Length before
/// reading, and by what arrived). `unreadable`: the error code when it cannot be read.
pub async fn read_capped(req: &mut Request, limit: usize, too_large: impl Fn() -> ApiError, unreadable: &'static str) -> ApiResult<Vec<u8>> {
    if let Some(len) = content_length(req) {
        if len > limit {
            return Err(too_large());
        }
    }
    let bytes = req.bytes().await.map_err(|_| ApiError::bad_request(unreadable, "the body could not be read"))?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Bodies of our own pages' forms are small.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Reads an `application/x-www-form-urlencoded` body (one of our pages' forms). An unreadable
/// body is an empty form: the page then says what is missing.
pub async fn read_form(req: &mut Request) -> ApiResult<Vec<(String, String)>> {
    let too_large = || ApiError::new(413, "payload_too_large", format!("a form is at most {MAX_FORM_BYTES} bytes"));
    let bytes = match read_capped(req, MAX_FORM_BYTES, too_large, "invalid_request").await {
        Ok(b) => b,
        Err(e) if e.status == 413 => return Err(e),
        Err(_) => vec![],
    };
    Ok(worker::url::form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
}

pub fn parse_json_object(bytes: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object"));
    }
    Ok(v)
}

/// Deserializes a body into a request type, naming the offending field on failure
/// (unknown fields and fields of the wrong type alike).
pub fn from_body<T: DeserializeOwned>(v: &Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if let Some(rest) = inner.strip_prefix("unknown field `") {
            rest.split('`').next().unwrap_or("").to_string()
        } else if let Some(rest) = inner.strip_prefix("missing field `") {
            rest.split('`').next().unwrap_or("").to_string()
        } else {
            path.clone()
        };
        let message = if inner.starts_with("unknown field") {
            format!("`{field}` is not a field of this call")
        } else if path == "." || path.is_empty() {
            inner
        } else {
            format!("`{path}`: {inner}")
        };
        let code = if message.contains("is not a field") { "unknown_field" } else { "invalid_request" };
        let err = ApiError::new(400, code, message);
        if field.is_empty() || field == "." { err } else { err.with_field(field) }
    })
}

/// Query parameters; each name may appear once and must be one the call knows.
pub fn query_params(req: &Request, allowed: &[&str]) -> ApiResult<HashMap<String, String>> {
    let url = req.url().map_err(|_| ApiError::bad_request("invalid_request", "the URL could not be parsed"))?;
    let mut out = HashMap::new();
    for (k, v) in url.query_pairs() {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::new(400, "unknown_field", format!("`{k}` is not a parameter of this call")).with_field(k.to_string()));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::invalid_field(&k, format!("`{k}` is given more than once")));
        }
    }
    Ok(out)
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value of one cookie of the request.
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    let header = req.headers().get("Cookie").ok().flatten()?;
    header.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// `limit` for list calls: 1..=max, default `default`.
pub fn parse_limit(q: &HashMap<String, String>, default: u32, max: u32) -> ApiResult<u32> {
    match q.get("limit") {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_field("limit", format!("`limit` must be a whole number from 1 to {max}"))),
        },
    }
}

/// Reads an optional string field of a JSON body.
pub fn opt_str<'a>(v: &'a Value, field: &str) -> ApiResult<Option<&'a str>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_field(field, format!("`{field}` must be a string"))),
    }
}
