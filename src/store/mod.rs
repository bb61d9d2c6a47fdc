//! D1, one module per table group. SQL lives here and nowhere else: the helpers that take SQL
//! text (`stmt`, `first`, `all`, `run`, `changed`) are private to this module and its children,
//! so code outside `store/` cannot pass a query. Constraint violations are recognised in one
//! place (`is_unique_violation`).

pub mod accounts;
pub mod audit;
pub mod changes;
pub mod domains;
pub mod events;
pub mod idempotency;
pub mod keys;
pub mod mailboxes;
pub mod messages;
pub mod mode_changes;
pub mod operators;
pub mod provider_events;
pub mod suppressions;
pub mod webhooks;

use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env, Result};

pub fn db(env: &Env) -> Result<D1Database> {
    env.d1("DB")
}

/// A value bindable to a D1 statement.
pub enum Arg<'a> {
    Str(&'a str),
    Int(i64),
    Null,
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Str(s)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Str(s)
    }
}
impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}
impl From<bool> for Arg<'_> {
    fn from(b: bool) -> Self {
        Arg::Int(b as i64)
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        s.map_or(Arg::Null, Arg::Str)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(n: Option<i64>) -> Self {
        n.map_or(Arg::Null, Arg::Int)
    }
}

impl Arg<'_> {
    fn to_js(&self) -> JsValue {
        match self {
            Arg::Str(s) => JsValue::from_str(s),
            Arg::Int(n) => JsValue::from_f64(*n as f64),
            Arg::Null => JsValue::NULL,
        }
    }
}

/// Prepares and binds a statement.
fn stmt(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<D1PreparedStatement> {
    let values: Vec<JsValue> = args.iter().map(Arg::to_js).collect();
    db.prepare(sql).bind(&values)
}

async fn first<T: DeserializeOwned>(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<Option<T>> {
    stmt(db, sql, args)?.first::<T>(None).await
}

async fn all<T: DeserializeOwned>(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<Vec<T>> {
    stmt(db, sql, args)?.all().await?.results::<T>()
}

async fn run(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<()> {
    stmt(db, sql, args)?.run().await.map(|_| ())
}

/// Runs a compare-and-set (an `UPDATE`/`INSERT … RETURNING` something) and says whether it
/// changed a row: the one way to ask "did this call win".
async fn changed(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<bool> {
    Ok(stmt(db, sql, args)?.first::<serde_json::Value>(None).await?.is_some())
}

/// Whether a query finds any row.
async fn exists(db: &D1Database, sql: &str, args: &[Arg<'_>]) -> Result<bool> {
    changed(db, sql, args).await
}

/// Whether D1 answers at all (`/healthz`).
pub async fn ping(db: &D1Database) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct One {
        ok: i64,
    }
    Ok(matches!(first::<One>(db, "SELECT 1 AS ok", &[]).await?, Some(One { ok: 1 })))
}

/// D1 reports constraint violations as text.
pub fn is_unique_violation(e: &worker::Error) -> bool {
    e.to_string().contains("UNIQUE constraint failed")
}

#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => { &[$($crate::store::Arg::from($x)),*] };
}
