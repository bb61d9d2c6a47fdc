//! The pure core: values in, decisions out. Nothing here touches the Workers runtime, so every
//! module compiles and is unit-tested natively with `cargo test`.

pub mod address;
pub mod approval;
pub mod attachments;
pub mod audit;
pub mod batch;
pub mod authority;
pub mod changes;
pub mod delivery;
pub mod disclosure;
pub mod dkim;
pub mod edits;
pub mod doh;
pub mod domains;
pub mod error;
pub mod feedback;
pub mod ids;
pub mod idempotency;
pub mod identity;
pub mod inbound;
pub mod keys;
pub mod links;
pub mod message;
pub mod mime;
pub mod oversight;
pub mod ratelimit;
pub mod rules;
pub mod scan;
pub mod search;
pub mod sealed;
pub mod send;
pub mod suppression;
pub mod time;
pub mod webhooks;
