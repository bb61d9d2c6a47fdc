-- Full-text search over messages (issue 16, `search_emails`): the subject, the addresses and
-- the text body of every message of kind 'message', both directions, in an FTS5 index.
--
-- `search_docs` gives each indexed message a persistent integer (an INTEGER PRIMARY KEY, which
-- VACUUM never renumbers), the FTS row's rowid: updates and deletes find the row by rowid, never
-- by scanning the index. Triggers keep the index with the data, in the same statement as the
-- write, so no code path can forget it:
-- - the body arrives with the message's `outbound` blob (an outbound message, and the reviewer's
--   version after an approval with edits) or its `parsed` blob (an inbound one);
-- - a changed subject or recipient list (an edit) updates the row;
-- - a deleted message or blob takes its row out.
-- Addresses are indexed as a plain list (the JSON arrays' brackets and quotes taken out).
-- Scoping (account, mode, mailbox, direction, held mail) is by a join with `messages`.

CREATE TABLE search_docs (
  doc INTEGER PRIMARY KEY,
  message_id TEXT NOT NULL UNIQUE
);

CREATE VIRTUAL TABLE message_search USING fts5(
  subject, addresses, body,
  tokenize = 'unicode61 remove_diacritics 2'
);

-- The text body (the HTML when there is no text), at most 200,000 characters of it.
CREATE TRIGGER message_search_blob_insert AFTER INSERT ON message_blobs
WHEN NEW.kind IN ('outbound', 'parsed')
  AND EXISTS (SELECT 1 FROM messages WHERE id = NEW.message_id AND kind = 'message')
BEGIN
  INSERT OR IGNORE INTO search_docs (message_id) VALUES (NEW.message_id);
  DELETE FROM message_search WHERE rowid = (SELECT doc FROM search_docs WHERE message_id = NEW.message_id);
  INSERT INTO message_search (rowid, subject, addresses, body)
    SELECT d.doc, m.subject, m.from_addr || ' ' || replace(replace(replace(replace(m.to_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(m.cc_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(m.bcc_json, '","', ', '), '["', ''), '"]', ''), '[]', ''),
           substr(coalesce(json_extract(NEW.body, '$.text'), json_extract(NEW.body, '$.html'), ''), 1, 200000)
    FROM messages m JOIN search_docs d ON d.message_id = m.id WHERE m.id = NEW.message_id;
END;

-- A new version of the body (a reviewer's edits); the subject and addresses follow `messages`.
CREATE TRIGGER message_search_blob_update AFTER UPDATE OF body ON message_blobs
WHEN NEW.kind IN ('outbound', 'parsed')
  AND EXISTS (SELECT 1 FROM search_docs WHERE message_id = NEW.message_id)
BEGIN
  UPDATE message_search
    SET body = substr(coalesce(json_extract(NEW.body, '$.text'), json_extract(NEW.body, '$.html'), ''), 1, 200000)
  WHERE rowid = (SELECT doc FROM search_docs WHERE message_id = NEW.message_id);
END;

CREATE TRIGGER message_search_blob_delete AFTER DELETE ON message_blobs
WHEN OLD.kind IN ('outbound', 'parsed')
BEGIN
  DELETE FROM message_search WHERE rowid = (SELECT doc FROM search_docs WHERE message_id = OLD.message_id);
  DELETE FROM search_docs WHERE message_id = OLD.message_id;
END;

CREATE TRIGGER message_search_message_update AFTER UPDATE OF subject, to_json, cc_json, bcc_json ON messages
WHEN EXISTS (SELECT 1 FROM search_docs WHERE message_id = NEW.id)
BEGIN
  UPDATE message_search SET subject = NEW.subject,
    addresses = NEW.from_addr || ' ' || replace(replace(replace(replace(NEW.to_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(NEW.cc_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(NEW.bcc_json, '","', ', '), '["', ''), '"]', ''), '[]', '')
  WHERE rowid = (SELECT doc FROM search_docs WHERE message_id = NEW.id);
END;

CREATE TRIGGER message_search_message_delete AFTER DELETE ON messages
BEGIN
  DELETE FROM message_search WHERE rowid = (SELECT doc FROM search_docs WHERE message_id = OLD.id);
  DELETE FROM search_docs WHERE message_id = OLD.id;
END;

-- The messages already stored.
INSERT INTO search_docs (message_id)
  SELECT m.id FROM messages m WHERE m.kind = 'message'
    AND EXISTS (SELECT 1 FROM message_blobs b WHERE b.message_id = m.id AND b.kind IN ('outbound', 'parsed'));
INSERT INTO message_search (rowid, subject, addresses, body)
  SELECT d.doc, m.subject, m.from_addr || ' ' || replace(replace(replace(replace(m.to_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(m.cc_json, '","', ', '), '["', ''), '"]', ''), '[]', '') || ' ' || replace(replace(replace(replace(m.bcc_json, '","', ', '), '["', ''), '"]', ''), '[]', ''),
         substr(coalesce(json_extract(b.body, '$.text'), json_extract(b.body, '$.html'), ''), 1, 200000)
  FROM search_docs d JOIN messages m ON m.id = d.message_id
  JOIN message_blobs b ON b.message_id = m.id AND b.kind IN ('outbound', 'parsed');
