-- A domain belongs to the account that verifies it first: pending claims of several accounts
-- may coexist (a claim proves nothing until its account's own DKIM keys are published), and
-- one account holds one live claim per domain.
DROP INDEX IF EXISTS domains_domain_live;
CREATE UNIQUE INDEX domains_account_domain ON domains(account_id, domain) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX domains_verified ON domains(domain) WHERE deleted_at IS NULL AND status = 'verified';
