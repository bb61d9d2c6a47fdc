// Seeds the local dev account once and prints its keys. The keys live in .dev-keys.json (not
// committed); if they no longer work (local state was wiped), a fresh account is created.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const base = process.argv[2];
const adminToken = readFileSync('.dev.vars', 'utf8').match(/^ADMIN_TOKEN=(.*)$/m)[1].trim().replace(/^'|'$/g, '');

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
  const ownerEmail = process.env.OWNER_EMAIL || 'owner@dev.example';
  const acct = await call('/admin/create_account', adminToken, { name: 'dev', owner_email: ownerEmail });
  if (acct.status !== 201) throw new Error(`create_account: ${JSON.stringify(acct.body)}`);
  const testKey = acct.body.api_keys.find((k) => !k.livemode).key;
  // Oversight keys come from humans: here the deployment operator (ADMIN_TOKEN), in the
  // console an operator. No API key can mint one.
  const oversight = await call('/admin/create_api_key', adminToken, {
    account: acct.body.account.id, name: 'dev oversight', scopes: ['oversight', 'read'], livemode: false,
  });
  if (oversight.status !== 201) throw new Error(`admin/create_api_key: ${JSON.stringify(oversight.body)}`);
  keys = {
    account_id: acct.body.account.id,
    default_domain: acct.body.account.default_domain,
    owner_email: ownerEmail,
    test_key: testKey,
    oversight_key: oversight.body.key,
  };
  writeFileSync('.dev-keys.json', JSON.stringify(keys, null, 2) + '\n', { mode: 0o600 });
}

// Mail stays in the sandbox here, so the owner's console sign-in link is printed instead.
const link = await call('/admin/create_sign_in_link', adminToken, { account: keys.account_id });
const signIn = link.status === 201 ? link.body.url : `(no sign-in link: ${JSON.stringify(link.body)})`;

console.log(`
MultiMail edge is running at ${base}
  account          ${keys.account_id}
  default domain   ${keys.default_domain}
  test key         ${keys.test_key}      (read, send, admin)
  oversight key    ${keys.oversight_key}      (oversight, read; test mode)
  console          ${signIn}
                   (sign in as ${keys.owner_email ?? 'the owner'}; single use, 10 minutes)

  export MM=${base} KEY=${keys.test_key}
  curl -s -X POST $MM/create_mailbox -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{"address": "agent@${keys.default_domain}"}'
`);
