"""A small blocking client of a master's REST API for tests: JSON in and
out, any credentials (the admin's certificate, another user's, a bearer
token, none), status codes returned rather than raised."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from control_plane.client.credentials import INSECURE, ClientCredentials

Body = dict[str, Any]


class Api:
    def __init__(self, base: str, credentials: ClientCredentials = INSECURE, token: str = ""):
        self.base = base
        self.credentials = credentials
        self.token = token or credentials.token
        self._context: ssl.SSLContext | None = credentials.ssl_context()

    def _request(self, path: str, data: bytes | None, method: str) -> urllib.request.Request:
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    @contextmanager
    def open(self, path: str, timeout: float = 30, method: str = "GET", data: bytes | None = None) -> Iterator[Any]:
        """The raw response (a file-like object), for streams and non-JSON bodies."""
        with urllib.request.urlopen(self._request(path, data, method), timeout=timeout, context=self._context) as r:
            yield r

    def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", raw: bytes | None = None
    ) -> tuple[int, Body]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = self._request(path, data, method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Body:
        code, out = self.call(method, path, body, **kw)
        assert code < 300, f"{method} {path}: {code} {out}"
        return out

    def watch(self, path: str, events: int, timeout: float = 20) -> list[Body]:
        out: list[Body] = []
        with self.open(path, timeout) as resp:
            for line in resp:
                out.append(json.loads(line))
                if len(out) >= events:
                    break
        return out
