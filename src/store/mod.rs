//! D1, one module per table group. SQL lives here and nowhere else: the helpers that take SQL
//! text (`stmt`, `first`, `all`, `run`, `changed`) are private to this module and its children,
//! so code outside `store/` cannot pass a query. Constraint violations are recognised in one
//! place (`is_unique_violation`).

pub mod accounts;
pub mod attachments;
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
pub mod rules;
pub mod search;
pub mod suppressions;
pub mod webhooks;

use std::cell::Cell;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result, Env, Result};

pub fn db(env: &Env) -> Result<Db> {
    Ok(Db { inner: env.d1("DB")?, cost: Rc::new(Cost::default()) })
}

/// The D1 binding, counting its round trips: every query, statement and batch goes through
/// `Db` (the helpers below, `batch`, `exec`), so `cost()` says how many round trips a request
/// made and how long they took (the `Server-Timing` header's `d1` metric).
pub struct Db {
    inner: D1Database,
    cost: Rc<Cost>,
}

/// Round trips and their time, per kind of storage, for one request (or one consumer batch).
#[derive(Default)]
pub struct Cost {
    pub d1: Meter,
    pub queue: Meter,
    pub durable_object: Meter,
}

/// A count of round trips and their summed wall time in milliseconds.
#[derive(Default)]
pub struct Meter {
    count: Cell<u32>,
    ms: Cell<f64>,
}

impl Meter {
    /// Awaits one round trip and counts it.
    pub async fn time<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        let start = worker::js_sys::Date::now();
        let out = fut.await;
        self.count.set(self.count.get() + 1);
        self.ms.set(self.ms.get() + (worker::js_sys::Date::now() - start));
        out
    }
    pub fn count(&self) -> u32 {
        self.count.get()
    }
    pub fn ms(&self) -> f64 {
        self.ms.get()
    }
}

impl std::ops::Deref for Db {
    type Target = D1Database;
    /// For `prepare`: building a statement is not a round trip.
    fn deref(&self) -> &D1Database {
        &self.inner
    }
}

impl Db {
    /// Runs statements in one round trip (one transaction).
    pub async fn batch(&self, statements: Vec<D1PreparedStatement>) -> Result<Vec<D1Result>> {
        self.cost.d1.time(self.inner.batch(statements)).await
    }

    /// Runs one prepared statement.
    pub async fn exec(&self, statement: D1PreparedStatement) -> Result<()> {
        self.cost.d1.time(statement.run()).await.map(|_| ())
    }

    /// What this request has spent so far.
    pub fn cost(&self) -> &Rc<Cost> {
        &self.cost
    }
}

/// Whose account a statement is about: an id, or the account of the API key with this hash
/// (for statements that run in the authentication batch, before the account is known).
#[derive(Clone, Copy)]
pub enum AccountOf<'a> {
    Id(&'a str),
    KeyHash(&'a str),
}

impl AccountOf<'_> {
    /// The SQL expression for the account id, bound to `?1`.
    pub(crate) fn expr(self) -> &'static str {
        match self {
            AccountOf::Id(_) => "?1",
            AccountOf::KeyHash(_) => "(SELECT account_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL)",
        }
    }
    pub(crate) fn value(&self) -> &str {
        match self {
            AccountOf::Id(v) | AccountOf::KeyHash(v) => v,
        }
    }
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

async fn first<T: DeserializeOwned>(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<Option<T>> {
    let s = stmt(db, sql, args)?;
    db.cost.d1.time(s.first::<T>(None)).await
}

async fn all<T: DeserializeOwned>(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<Vec<T>> {
    let s = stmt(db, sql, args)?;
    db.cost.d1.time(s.all()).await?.results::<T>()
}

async fn run(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<()> {
    db.exec(stmt(db, sql, args)?).await
}

/// Runs a compare-and-set (an `UPDATE`/`INSERT … RETURNING` something) and says whether it
/// changed a row: the one way to ask "did this call win".
async fn changed(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<bool> {
    Ok(first::<serde_json::Value>(db, sql, args).await?.is_some())
}

/// Whether a query finds any row.
async fn exists(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<bool> {
    changed(db, sql, args).await
}

/// Whether D1 answers at all (`/healthz`).
pub async fn ping(db: &Db) -> Result<bool> {
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
