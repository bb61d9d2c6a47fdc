#!/usr/bin/env bash
# Installs what building, running and testing need, and nothing that is already there:
# the wasm target, worker-build, wasm-bindgen-cli at exactly Cargo.lock's version, and (from the
# committed package-lock.json) wrangler, Node 22, binaryen's wasm-opt and esbuild; the Inngest
# example's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"

WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)

say() { printf '[tools] %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(worker-build --version 2>/dev/null | awk '{print $NF}')" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi

if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # --locked first; its lock file can name a crate version the registry no longer serves,
  # in which case resolve afresh (the CLI itself stays at the exact version).
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked \
    || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -x node_modules/.bin/wrangler ]; then
  say "installing node packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The Inngest example (examples/inngest) has its own package-lock.json: inngest, @inngest/test.
if [ ! -f examples/inngest/node_modules/.package-lock.json ] \
   || [ examples/inngest/package-lock.json -nt examples/inngest/node_modules/.package-lock.json ]; then
  say "installing the Inngest example's node packages from examples/inngest/package-lock.json"
  npm ci --prefix examples/inngest --no-audit --no-fund --loglevel=error
fi

# Console tests: Debian's Chromium (playwright-core drives it; browser downloads fail here).
if [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (Debian package) for the console's browser tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# Domain tests: a real DNS server (Knot DNS) behind dnsdist's DNS-over-HTTP listener, and dkimpy
# (with dnspython, and PyNaCl for ed25519) to check DKIM signatures independently.
if ! command -v knotd >/dev/null || ! command -v knotc >/dev/null || ! command -v dnsdist >/dev/null; then
  say "installing knot and dnsdist (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends knot dnsdist >/dev/null
fi
if ! python3 -c 'import dkim, dns.query, nacl' 2>/dev/null; then
  say "installing dkimpy, dnspython and PyNaCl (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check dkimpy dnspython pynacl
fi

# The API description's check (tests/reliability/api_description.test.mjs): schemathesis from
# PyPI, pinned, in its own virtual environment under .tools/.
SCHEMATHESIS_VERSION=4.32.5
if [ "$(.tools/st/bin/st --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION (PyPI) into .tools/st"
  python3 -m venv .tools/st
  .tools/st/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
