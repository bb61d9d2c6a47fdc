# The two commands of the README: `make dev` runs the worker locally, `make test` runs every test.
# Both install whatever is missing first (scripts/tools.sh) and reinstall nothing on a second run.
SHELL := bash
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(CURDIR)/node_modules/.bin:$(CARGO_BIN):$(PATH)
export WRANGLER_SEND_METRICS := false
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/binaryen/bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/.bin/esbuild
PORT ?= 8787

SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock openapi.json

.PHONY: dev test tools build unit integration browser inngest reliability bench bench-batch bench-large clean

tools:
	@scripts/tools.sh

# worker-build keeps the wasm's names section (function names for stack traces); it is a third
# of the module's size, so it is stripped here (bench/README.md, "Size").
WASM_FEATURES := $(addprefix --enable-,mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling)
build/index.js: $(SOURCES)
	worker-build --release
	$(WASM_OPT_BIN) build/index_bg.wasm $(WASM_FEATURES) --strip-debug -o build/index_bg.wasm

build: build/index.js

dev: tools build
	@PORT=$(PORT) scripts/dev.sh

unit: tools
	python3 scripts/check_layers.py
	cargo test --lib --quiet
	node scripts/gen-api-docs.mjs --check

integration: tools build
	node --test --test-concurrency=1 "tests/integration/*.test.mjs"

# The console in headless Chromium (Debian's chromium, driven by playwright-core), with axe-core
# on every page; screenshots land in tests/artifacts/console/.
browser: tools build
	node --test --test-concurrency=1 "tests/browser/*.test.mjs"

# The Inngest example's four flows, run by @inngest/test against the real worker (docs/inngest.md).
inngest: tools build
	cd examples/inngest && node --test --test-concurrency=1 "test/*.test.ts"

# Promises proven under faults (issue 17, docs/reliability.md): concurrency on one mailbox, a
# hard kill of workerd mid-load, provider faults, webhook receivers down for a simulated day,
# a 60-second load at 32 clients, time-driven promises with a moved clock, and the API
# description checked by schemathesis. Each scenario is bounded in time and requests.
reliability: tools build
	node --test --test-concurrency=1 "tests/reliability/*.test.mjs"

test: unit integration browser inngest reliability

bench: tools build
	node bench/send_email.mjs

# send_batch: the time to accept 500 emails (bench/README.md).
bench-batch: tools build
	node bench/send_batch.mjs

bench-large: tools build
	node bench/large_send.mjs

clean:
	rm -rf build target/wasm32-unknown-unknown .wrangler tests/.state
