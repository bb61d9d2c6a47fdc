-- Held messages: when they expire and how they were decided (mirrored from the Approval
-- Durable Object, which owns the decision).
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
ALTER TABLE messages ADD COLUMN decision TEXT;
ALTER TABLE messages ADD COLUMN decided_by TEXT;
ALTER TABLE messages ADD COLUMN decided_at INTEGER;
ALTER TABLE messages ADD COLUMN decision_reason TEXT;
-- `message`, or `notification` for the approval requests sent to oversight addresses.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
CREATE INDEX messages_pending ON messages(status, expires_at);
CREATE INDEX messages_pending_account ON messages(account_id, livemode, status, id);
