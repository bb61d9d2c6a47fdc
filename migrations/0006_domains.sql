-- Custom sending domains, proven over DNS. One live row per domain across the deployment
-- (a domain belongs to one account); a deleted row keeps its history.
CREATE TABLE domains (
  id TEXT PRIMARY KEY,                 -- dom_…
  account_id TEXT NOT NULL REFERENCES accounts(id),
  domain TEXT NOT NULL,                -- lower-case ASCII (punycode for IDNs)
  status TEXT NOT NULL,                -- pending | verified | failed
  records TEXT NOT NULL,               -- JSON: [{type, name, value, purpose, required, status, found}]
  dkim_ed25519_public TEXT NOT NULL,   -- base64, the mm1e record's p=
  dkim_ed25519_private TEXT NOT NULL,  -- the 32-byte seed, sealed (AES-256-GCM, see docs/domains.md)
  dkim_rsa_public TEXT NOT NULL,       -- base64 SubjectPublicKeyInfo, the mm1r record's p=
  dkim_rsa_private TEXT NOT NULL,      -- PKCS#8 DER, sealed
  created_at INTEGER NOT NULL,
  verified_at INTEGER,                 -- when it last became verified
  last_checked_at INTEGER,
  deleted_at INTEGER
);
CREATE UNIQUE INDEX domains_domain_live ON domains(domain) WHERE deleted_at IS NULL;
CREATE INDEX domains_account ON domains(account_id, id);
CREATE INDEX domains_recheck ON domains(status, last_checked_at) WHERE deleted_at IS NULL;
