#!/usr/bin/env bash
# `make dev`: local D1 migrated, the worker under `wrangler dev` on 127.0.0.1:$PORT, a local dev
# account seeded once, and its keys printed. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8787}"

# Each secret of the deployment, generated once into .dev.vars (not committed): nothing is
# derived from ADMIN_TOKEN.
touch .dev.vars
secret() { # NAME  node-expression-that-prints-it
  if ! grep -q "^$1=" .dev.vars; then
    echo "$1='$(node -e "process.stdout.write($2)")'" >> .dev.vars
    echo "[dev] wrote a new $1 to .dev.vars (not committed)"
  fi
}
RAND='"adm_" + require("crypto").randomBytes(32).toString("hex")'
HEX='require("crypto").randomBytes(32).toString("hex")'
JWK='JSON.stringify(require("crypto").generateKeyPairSync("ec", {namedCurve: "prime256v1"}).privateKey.export({format: "jwk"}))'
secret ADMIN_TOKEN "$RAND"
secret APPROVAL_LINK_SECRET "$HEX"
secret DOMAIN_KEY_SECRET "$HEX"
secret IDENTITY_SIGNING_KEY "$JWK"
secret IDENTITY_TEST_SIGNING_KEY "$JWK"


CI=true wrangler d1 migrations apply multimail --local >/dev/null
echo "[dev] local D1 migrated"

# Every link the worker emails or hands out starts with PUBLIC_BASE_URL: this port's URL.
wrangler dev --ip 127.0.0.1 --port "$PORT" --inspector-port 0 --show-interactive-dev-session=false \
  --var "PUBLIC_BASE_URL:http://127.0.0.1:$PORT" &
WRANGLER=$!
trap 'kill $WRANGLER 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 $WRANGLER 2>/dev/null; then echo "[dev] wrangler dev exited" >&2; exit 1; fi
  sleep 0.5
done

node scripts/seed-dev.mjs "http://127.0.0.1:$PORT"
wait $WRANGLER
