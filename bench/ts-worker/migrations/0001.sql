CREATE TABLE messages (
  id         TEXT PRIMARY KEY,
  from_addr  TEXT NOT NULL,
  to_json    TEXT NOT NULL,
  subject    TEXT NOT NULL,
  text       TEXT NOT NULL,
  status     TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
