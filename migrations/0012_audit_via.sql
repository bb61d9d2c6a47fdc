-- How a call came in when not over plain HTTP (`mcp` for a tool call of the /mcp endpoint).
-- Part of the entry's hash when set; NULL (and left out of the hash) otherwise.
ALTER TABLE audit_log ADD COLUMN via TEXT;
