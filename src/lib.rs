//! MultiMail edge: agent-safe email under graduated human oversight, as a Cloudflare Worker.
//!
//! `domain` is the pure core (native unit tests); everything else is the thin shell around it:
//! `routes` (the HTTP API), `http` (request/response plumbing), `store` (D1), `delivery` (the
//! queue consumer), `approval` (the Durable Object), `platform` (clock, randomness, config).

pub mod domain;

#[cfg(target_arch = "wasm32")]
mod approval;
#[cfg(target_arch = "wasm32")]
mod audit_chain;
#[cfg(target_arch = "wasm32")]
mod wasm_entry;

pub mod audit;
pub mod delivery;
pub mod domains;
pub mod events;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod oversight;
pub mod platform;
pub mod routes;
pub mod store;
