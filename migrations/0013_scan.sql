-- The pre-send scan's policy per mailbox (src/domain/scan.rs, docs/safety.md): `hold` (a
-- finding holds the message for a human, in every mode), `block` (refused) or `off`.
ALTER TABLE mailboxes ADD COLUMN scan TEXT NOT NULL DEFAULT 'hold';
