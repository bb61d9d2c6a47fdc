//! MultiMail edge: agent-safe email under graduated human oversight, as a Cloudflare Worker.
//!
//! The layers, each pointing only down (checked by `scripts/check_layers.py` in `make test`;
//! `docs/architecture.md` draws them):
//! - `entry` (fetch, queue, email, scheduled) and `durable` (the Durable Object classes): where
//!   the runtime calls in; `cron` is the hourly housekeeping.
//! - `routes` (HTTP adapters: parse → app or domain → reply) and `consumers` (queue consumers).
//! - `app`: the workflows they share — outbound send, holds and decisions, mode changes,
//!   inbound ingest, event payloads, queue producers, the audit trail.
//! - `store` (every SQL string), `http` (request/response plumbing, `ApiError`), `platform`
//!   (clock, randomness, configuration) and `domain` (the pure core, unit-tested natively).

pub mod domain;

pub mod app;
pub mod consumers;
pub mod http;
pub mod platform;
pub mod routes;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod cron;
#[cfg(target_arch = "wasm32")]
mod durable;
#[cfg(target_arch = "wasm32")]
mod entry;
