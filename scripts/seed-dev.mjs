// Seeds the local dev account once and prints its keys. The keys live in .dev-keys.json (not
// committed); if they no longer work (local state was wiped), a fresh account is created.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const base = process.argv[2];
const adminToken = readFileSync('.dev.vars', 'utf8').match(/^ADMIN_TOKEN=(.*)$/m)[1].trim();

async function call(path, key, body) {
  const res = await fetch(base + path, {
    method: body ? 'POST' : 'GET',
    headers: { Authorization: `Bearer ${key}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}

let keys = existsSync('.dev-keys.json') ? JSON.parse(readFileSync('.dev-keys.json', 'utf8')) : null;
if (keys && (await call('/list_mailboxes', keys.test_key)).status !== 200) keys = null;

if (!keys) {
  const acct = await call('/admin/create_account', adminToken, { name: 'dev' });
  if (acct.status !== 201) throw new Error(`create_account: ${JSON.stringify(acct.body)}`);
  const testKey = acct.body.api_keys.find((k) => !k.livemode).key;
  const oversight = await call('/create_api_key', testKey, { name: 'dev oversight', scopes: ['oversight', 'read'], livemode: false });
  if (oversight.status !== 201) throw new Error(`create_api_key: ${JSON.stringify(oversight.body)}`);
  keys = {
    account_id: acct.body.account.id,
    default_domain: acct.body.account.default_domain,
    test_key: testKey,
    oversight_key: oversight.body.key,
  };
  writeFileSync('.dev-keys.json', JSON.stringify(keys, null, 2) + '\n', { mode: 0o600 });
}

console.log(`
MultiMail edge is running at ${base}
  account          ${keys.account_id}
  default domain   ${keys.default_domain}
  test key         ${keys.test_key}      (read, send, admin)
  oversight key    ${keys.oversight_key}      (oversight, read)

  export MM=${base} KEY=${keys.test_key}
  curl -s -X POST $MM/create_mailbox -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{"address": "agent@${keys.default_domain}"}'
`);
