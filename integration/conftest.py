"""Fixtures for the mcp-authz integration suite.

- `keys`: one signing key per accepted algorithm (RSA 2048 for RS*/PS*, P-256, P-384, Ed25519).
- `stack_factory`: starts a fresh JWKS server + echo upstream + Envoy (stopped at test end).
- `module_stack(request, tmp_path_factory, keys)`: helper for one shared stack per test module.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

import pytest

from harness import envoy as envoy_mod
from harness.keys import ALGORITHMS, SigningKey, make_key
from harness.stack import Stack


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    return {alg: make_key(alg, kid=f"{alg.lower()}-1") for alg in ALGORITHMS}


@pytest.fixture(scope="session", autouse=True)
def _built_artifacts() -> None:
    # Fail early and clearly (not as a skip: CI must not pass without the filter or Envoy).
    envoy_mod.envoy_binary()
    envoy_mod.wasm_path()


@pytest.fixture
def stack_factory(tmp_path, keys) -> Iterator[Callable[..., Stack]]:
    """`stack_factory(keys=[...], concurrency=1, configure=fn(cfg), prepare_jwks=fn(jwks))` -> started Stack."""
    with contextlib.ExitStack() as exit_stack:
        counter = iter(range(1000))

        def make(key_list: list[SigningKey] | None = None, **kw) -> Stack:
            n = next(counter)
            stack = Stack(tmp_path / f"stack{n}", list(keys.values()) if key_list is None else key_list, name=f"envoy{n}", **kw)
            exit_stack.callback(stack.stop)
            return stack.start()

        yield make


@contextlib.contextmanager
def shared_stack(tmp_path_factory, key_list: list[SigningKey], **kw) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("shared"), key_list, **kw) as stack:
        yield stack


def pytest_configure(config) -> None:
    # SIGTERM (e.g. a CI timeout) becomes KeyboardInterrupt, so fixtures tear down and stop every process.
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)


def pytest_sessionfinish(session, exitstatus) -> None:
    envoy_mod._stop_all()
