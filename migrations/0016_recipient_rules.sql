-- Recipient rules (src/domain/rules.rs, docs/safety.md): allow and block patterns (an address,
-- or a domain with its subdomains) for sending, per mailbox or for the whole account (NULL).
CREATE TABLE recipient_rules (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  mailbox_id TEXT,
  direction TEXT NOT NULL,
  action TEXT NOT NULL,
  pattern TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL
);
CREATE UNIQUE INDEX recipient_rules_unique ON recipient_rules(account_id, IFNULL(mailbox_id, ''), direction, action, pattern);
-- In a gated mode, a send whose every recipient is allowed goes without a hold (opt-in, set by a human).
ALTER TABLE mailboxes ADD COLUMN allowlist_bypass INTEGER NOT NULL DEFAULT 0;
