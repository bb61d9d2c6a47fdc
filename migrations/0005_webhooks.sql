-- Webhook endpoints and every attempt to deliver an event to one of them.

-- Where an account's events go, per mode: a Standard Webhooks URL or an Inngest Event API URL.
CREATE TABLE webhook_endpoints (
  id TEXT PRIMARY KEY,                 -- whk_…
  account_id TEXT NOT NULL REFERENCES accounts(id),
  livemode INTEGER NOT NULL,
  url TEXT NOT NULL,
  events TEXT NOT NULL,                -- JSON array of event types, or ["*"]
  mailbox_id TEXT,                     -- NULL = every mailbox of the account
  format TEXT NOT NULL,                -- standard | inngest
  secret TEXT,                         -- whsec_… (standard); NULL for inngest
  previous_secret TEXT,                -- still signs until previous_secret_expires_at (rotation)
  previous_secret_expires_at INTEGER,
  disabled_at INTEGER,                 -- set when the receiver answered 410 Gone
  disabled_reason TEXT,
  created_at INTEGER NOT NULL,
  deleted_at INTEGER
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints(account_id, livemode, id);

-- One row per attempt. An attempt is claimed by inserting its row (the UNIQUE below makes a
-- redelivered queue message a no-op), and one (endpoint, event) succeeds at most once.
CREATE TABLE webhook_deliveries (
  id TEXT PRIMARY KEY,                 -- whd_…
  endpoint_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,            -- 1 for the first try
  status TEXT NOT NULL,                -- pending | succeeded | failed | retrying
  response_code INTEGER,
  latency_ms INTEGER,
  error TEXT,
  next_retry_at INTEGER,               -- when status = retrying
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (endpoint_id, event_id, attempt)
);
CREATE UNIQUE INDEX webhook_deliveries_one_success ON webhook_deliveries(endpoint_id, event_id) WHERE status = 'succeeded';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
CREATE INDEX webhook_deliveries_status ON webhook_deliveries(status, updated_at);

-- The outbox's fan-out takes events under a short lease, so two drains never fan out the same
-- event at once and a drain that dies mid-way is picked up by the next.
ALTER TABLE events ADD COLUMN claimed_at INTEGER;
