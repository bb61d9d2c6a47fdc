-- Audit entries as they are recorded, before the account's AuditChain object seals them into
-- the hash chain (audit_log). A request writes its entry here in the same D1 batch as the
-- change it records (or in one write after its answer), so recording costs no Durable Object
-- round trip; the chain object seals whatever is pending, in order, in one batch, when the log
-- is read and every minute from the cron.
CREATE TABLE audit_pending (
  pid INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id TEXT NOT NULL,
  livemode INTEGER NOT NULL,
  entry TEXT NOT NULL
);
CREATE INDEX audit_pending_chain ON audit_pending(account_id, livemode, pid);
