-- Inbound attachments kept whole in the attachments bucket (R2, binding ATTACHMENTS; issue 16).
-- D1 keeps metadata only: what each message's parsed form lists (name, declared and detected
-- type, size, SHA-256), and here where each object lives, so the hourly cron can delete the
-- objects of a deleted mailbox's mail after ATTACHMENT_RETENTION_DAYS.
CREATE TABLE attachments (
  message_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  r2_key TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (message_id, idx)
);
