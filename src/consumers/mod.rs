//! The queue consumers: `delivery` (the `DELIVERY` queue and its dead-letter queue: hand each
//! message to its provider) and `events` (the `EVENTS` queue: the outbox's fan-out to webhooks
//! and Inngest). Their jobs are written by `app::queues`.

pub mod delivery;
pub mod events;
