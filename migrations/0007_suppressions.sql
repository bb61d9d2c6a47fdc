-- Addresses an account must not send to: unsubscribes, hard bounces, complaints, manual.
CREATE TABLE suppressions (
  account_id TEXT NOT NULL,
  address TEXT NOT NULL,              -- lower-cased addr-spec
  reason TEXT NOT NULL,               -- unsubscribe | hard_bounce | complaint | manual
  source TEXT,                        -- the message, provider event or key it came from
  created_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, address)
);
-- Outbound messages' category (`marketing` carries List-Unsubscribe).
ALTER TABLE messages ADD COLUMN category TEXT;
CREATE INDEX messages_provider_id ON messages(provider, provider_message_id);
