-- Pause (the kill switch): while a mailbox or its account is paused, new sends wait in status
-- `paused`, and queued or scheduled messages wait there instead of reaching the provider.
-- Resuming (a human's decision) releases them in the order they were made.
ALTER TABLE mailboxes ADD COLUMN paused_at INTEGER;
ALTER TABLE accounts ADD COLUMN paused_at INTEGER;
CREATE INDEX messages_paused ON messages(account_id, status) WHERE status = 'paused';
