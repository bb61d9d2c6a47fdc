//! The Durable Object classes: `Approval` (one per held message, the single owner of its
//! decision) and `AuditChain` (one per account and mode, the only writer of its chain).

pub mod approval;
pub mod audit_chain;
