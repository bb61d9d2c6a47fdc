-- Humans of an account (operators), their sign-in links and console sessions, and the changes
-- that weaken oversight and so wait for a human decision.

ALTER TABLE accounts ADD COLUMN owner_email TEXT;

CREATE TABLE operators (
  id TEXT PRIMARY KEY,                 -- op_…
  account_id TEXT NOT NULL,
  email TEXT NOT NULL,                 -- lower-cased addr-spec
  role TEXT NOT NULL,                  -- owner | approver | viewer
  invited_by TEXT,                     -- the operator who invited them (NULL: the account's creation)
  created_at INTEGER NOT NULL,
  removed_at INTEGER
);
CREATE UNIQUE INDEX operators_email ON operators(account_id, email) WHERE removed_at IS NULL;

-- Single-use sign-in links: only the SHA-256 of the token is kept.
CREATE TABLE sign_in_links (
  token_hash TEXT PRIMARY KEY,
  operator_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER
);

-- Console sessions: the cookie carries a random token; only its SHA-256 is kept.
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,                 -- ses_…
  token_hash TEXT NOT NULL UNIQUE,
  operator_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  csrf TEXT NOT NULL,                  -- the token every form of this session carries
  user_agent TEXT,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX sessions_operator ON sessions(operator_id, created_at);

-- Changes other than a mode that weaken oversight: a mailbox's oversight address, removing a
-- suppression, deleting a verified domain. Requested by a key, decided by a human (an oversight
-- key with `decide_email`, or the console); one winner by compare-and-set.
CREATE TABLE changes (
  id TEXT PRIMARY KEY,                 -- chg_…
  account_id TEXT NOT NULL,
  kind TEXT NOT NULL,                  -- oversight_email | remove_suppression | delete_domain
  mailbox_id TEXT,                     -- the mailbox it is about, when it is about one
  subject TEXT NOT NULL,               -- what it changes: the mailbox id, the address, the domain id
  value TEXT,                          -- the new value (oversight_email)
  status TEXT NOT NULL,                -- pending | approved | rejected | superseded
  requested_by TEXT NOT NULL,
  requested_livemode INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT
);
CREATE INDEX changes_pending ON changes(account_id, status, id);
