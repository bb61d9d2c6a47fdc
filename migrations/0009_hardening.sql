-- Provider events already applied, by the provider's own id (Resend's svix-id, Postmark's record
-- id): a replayed webhook changes nothing. Pruned by the hourly cron after 7 days.
CREATE TABLE provider_event_ids (
  provider TEXT NOT NULL,
  event_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (provider, event_id)
);
CREATE INDEX provider_event_ids_created ON provider_event_ids(created_at);
