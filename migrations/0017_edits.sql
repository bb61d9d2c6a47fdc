-- Approve with edits (issue 15): who edited a held message before approving it, and what
-- changed (JSON: fields, original_sha256, sent_sha256). The agent's version is kept in
-- message_blobs as kind 'original'; 'outbound' and 'mime' are then the version sent.
ALTER TABLE messages ADD COLUMN edited_by TEXT;
ALTER TABLE messages ADD COLUMN edit TEXT;
