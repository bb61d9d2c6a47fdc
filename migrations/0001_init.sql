-- Accounts, keys and mailboxes: who may call, with what, on whose behalf.
CREATE TABLE accounts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  default_domain TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  livemode INTEGER NOT NULL,
  name TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,       -- SHA-256 hex of the whole key; the key itself is never stored
  prefix TEXT NOT NULL,
  last4 TEXT NOT NULL,
  scopes TEXT NOT NULL,                -- csv: read,send,oversight,admin
  mailboxes TEXT,                      -- JSON array of mailbox ids, NULL = every mailbox
  rate_limit_per_minute INTEGER,       -- NULL = the deployment default
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id, livemode, created_at);

CREATE TABLE rate_windows (
  key_id TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (key_id, window_start)
);

CREATE TABLE mailboxes (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  address TEXT NOT NULL,
  display_name TEXT,
  oversight_mode TEXT NOT NULL,
  oversight_email TEXT,
  approval_ttl_secs INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  deleted_at INTEGER
);
-- One live mailbox per address across the deployment (inbound mail is routed by address).
CREATE UNIQUE INDEX mailboxes_address_live ON mailboxes(address) WHERE deleted_at IS NULL;
CREATE INDEX mailboxes_account ON mailboxes(account_id, created_at);

-- A request to loosen a mailbox's mode, waiting for a human.
CREATE TABLE mode_changes (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  mailbox_id TEXT NOT NULL,
  from_mode TEXT NOT NULL,
  to_mode TEXT NOT NULL,
  status TEXT NOT NULL,                -- pending | approved | rejected | expired
  requested_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT
);
CREATE INDEX mode_changes_mailbox ON mode_changes(mailbox_id, status);

-- Messages of both directions; test and live never mix (livemode is part of every lookup).
CREATE TABLE messages (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  livemode INTEGER NOT NULL,
  mailbox_id TEXT NOT NULL,
  direction TEXT NOT NULL,             -- outbound | inbound
  thread_id TEXT NOT NULL,
  from_addr TEXT NOT NULL,
  to_json TEXT NOT NULL,
  cc_json TEXT NOT NULL DEFAULT '[]',
  bcc_json TEXT NOT NULL DEFAULT '[]',
  subject TEXT NOT NULL,
  oversight_mode TEXT NOT NULL,
  status TEXT NOT NULL,                -- queued | scheduled | sending | sent | failed | cancelled | …
  metadata TEXT NOT NULL DEFAULT '{}',
  send_at INTEGER,
  provider TEXT,
  provider_message_id TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  claimed_at INTEGER,
  idempotency_key TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  sent_at INTEGER
);
CREATE INDEX messages_account ON messages(account_id, livemode, mailbox_id, id);
CREATE INDEX messages_status ON messages(status, updated_at);

-- Large bodies live in their own rows: the RFC 5322 MIME and the provider-ready JSON.
CREATE TABLE message_blobs (
  message_id TEXT NOT NULL,
  kind TEXT NOT NULL,                  -- mime | outbound
  body TEXT NOT NULL,
  PRIMARY KEY (message_id, kind)
);

-- What happened to a message, in order: created, scheduled, each attempt, sent or failed.
CREATE TABLE message_timeline (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT
);
CREATE INDEX message_timeline_message ON message_timeline(message_id, seq);

-- The events outbox: written in the same batch as the change it reports, drained by the
-- events issue's fan-out.
CREATE TABLE events (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  livemode INTEGER NOT NULL,
  type TEXT NOT NULL,
  mailbox_id TEXT,
  message_id TEXT,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  dispatched_at INTEGER
);
CREATE INDEX events_pending ON events(dispatched_at, created_at);
CREATE INDEX events_message ON events(message_id);

CREATE TABLE idempotency (
  account_id TEXT NOT NULL,
  livemode INTEGER NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  status_code INTEGER,                 -- NULL while the first request runs
  body TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, livemode, key)
);
CREATE INDEX idempotency_created ON idempotency(created_at);
