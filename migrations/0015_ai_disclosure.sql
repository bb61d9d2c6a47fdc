-- AI disclosure per mailbox (src/domain/disclosure.rs, docs/safety.md): `none`, `header`
-- (AI-Disclosure: mode=ai-originated) or `footer` (the header and a line in the body).
ALTER TABLE mailboxes ADD COLUMN ai_disclosure TEXT NOT NULL DEFAULT 'none';
