//! MultiMail edge: agent-safe email under graduated human oversight, as a Cloudflare Worker.
pub mod domain;
