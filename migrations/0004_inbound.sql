-- Inbound mail and threads: the RFC 5322 Message-ID of every message (ours are
-- <msg_…@domain>), read state, tags and a preview.
ALTER TABLE messages ADD COLUMN message_id_header TEXT;
ALTER TABLE messages ADD COLUMN read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN snippet TEXT;
-- The same Message-ID delivered twice to one mailbox is stored once.
CREATE UNIQUE INDEX messages_inbound_once ON messages(mailbox_id, livemode, message_id_header)
  WHERE direction = 'inbound' AND message_id_header IS NOT NULL;
CREATE INDEX messages_by_message_id ON messages(account_id, livemode, message_id_header);
CREATE INDEX messages_thread ON messages(thread_id, id);
