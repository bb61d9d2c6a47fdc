-- The audit trail: one hash chain per account and mode. Entries are never updated or deleted;
-- the triggers refuse it, and verify_audit_log finds it if someone drops them first.
CREATE TABLE audit_log (
  account_id TEXT NOT NULL,
  livemode INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL UNIQUE,
  at TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  mailbox TEXT,
  message_id TEXT,
  oversight_mode TEXT,
  outcome TEXT NOT NULL,
  status INTEGER,
  request_id TEXT,
  idempotency_key TEXT,
  ip TEXT,
  country TEXT,
  detail TEXT,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  PRIMARY KEY (account_id, livemode, seq)
);
CREATE INDEX audit_log_message ON audit_log(account_id, livemode, message_id);
CREATE INDEX audit_log_mailbox ON audit_log(account_id, livemode, mailbox);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
