"""A JWKS server, an echo upstream and one Envoy in front of them, started and stopped together."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Callable

import httpx

from .envoy import Envoy, filter_config
from .keys import SigningKey
from .servers import EchoServer, JwksServer

CLIENT_TIMEOUT = 20.0


class Stack:
    def __init__(
        self,
        workdir: Path,
        keys: list[SigningKey],
        concurrency: int = 1,
        configure: Callable[[dict], None] | None = None,
        filter_json: Callable[[int, int], str] | None = None,
        prepare_jwks: Callable[[JwksServer], None] | None = None,
        name: str = "envoy",
        upstream_port: int | None = None,
        normalize: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.keys = keys
        self.concurrency = concurrency
        self.configure = configure
        self.filter_json = filter_json
        self.prepare_jwks = prepare_jwks
        self.name = name
        self.upstream_port = upstream_port  # None: the in-process echo server is the upstream
        self.normalize = normalize
        self.jwks: JwksServer | None = None
        self.echo: EchoServer | None = None
        self.envoy: Envoy | None = None
        self.client: httpx.Client | None = None
        self._exit = contextlib.ExitStack()

    def _filter_cfg(self, listener_port: int) -> dict:
        cfg = filter_config(self.jwks.port, listener_port)
        if self.configure:
            self.configure(cfg)
        return cfg

    def _build(self) -> Envoy:
        self.jwks = self._exit.enter_context(JwksServer(self.keys))
        if self.prepare_jwks:
            self.prepare_jwks(self.jwks)
        self.echo = self._exit.enter_context(EchoServer())
        raw = None
        if self.filter_json is not None:
            raw = lambda listener_port: self.filter_json(self.jwks.port, listener_port)  # noqa: E731
        envoy = Envoy(
            self.workdir, upstream_port=self.upstream_port or self.echo.port, jwks_port=self.jwks.port,
            filter_cfg=self._filter_cfg, filter_json=raw, concurrency=self.concurrency, name=self.name,
            normalize=self.normalize,
        )
        self._exit.callback(envoy.stop)
        self.envoy = envoy
        return envoy

    def start(self) -> "Stack":
        try:
            self._build()
            self.envoy.start()
            self.client = self._exit.enter_context(httpx.Client(base_url=self.envoy.url, timeout=CLIENT_TIMEOUT))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._exit.close()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, token: str | None = None, headers: dict | None = None, **kw) -> tuple[httpx.Response, str]:
        """Sends one request through Envoy with a unique `x-test-id`; returns (response, test id)."""
        test_id = uuid.uuid4().hex
        hdrs = {"x-test-id": test_id}
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        return self.client.request(method, path, headers=hdrs, **kw), test_id

    def get(self, path: str, token: str | None = None, **kw):
        return self.request("GET", path, token, **kw)

    def upstream_saw(self, test_id: str) -> list[dict]:
        return self.echo.seen(test_id)
