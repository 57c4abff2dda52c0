"""A tiny scripted HTTP server on a real loopback socket, for client tests (nothing is mocked).

``with ScriptedServer() as srv: srv.url; srv.script(path, Canned(...))``. Responses are queued per
path (optionally per method), served once each in order, then a default; ``/oauth/token`` answers
``token_body``. Every request is recorded (method, path, query, Authorization, body).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Canned:
    status: int = 200
    body: bytes | str | Any = b"{}"
    headers: dict[str, str] = field(default_factory=dict)

    def raw(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Seen:
    method: str
    path: str
    query: str
    authorization: str | None
    at: float
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


#: A responder computes the answer from the request (for answers that depend on what was asked).
Responder = Callable[[Seen], Canned]

_NO_SCRIPT = Canned(404, {"message": "no script", "code": "not.found", "status": 404, "contextId": "ctx-404"})


class ScriptedServer:
    """Context manager: ``with ScriptedServer() as srv: srv.url; srv.script(path, Canned(...))``."""

    def __init__(self) -> None:
        self.token_body: dict[str, Any] = {
            "access_token": "tok-SECRET-abc",
            "token_type": "bearer",
            "expires_in": 3600,
            "scope": "predictive-engagement:view predictive-engagement:analytics:view",
        }
        self.token_status = 200
        self.requests: list[Seen] = []
        # Keyed by (method or "*", path).
        self._queues: dict[tuple[str, str], deque[Canned | Responder]] = defaultdict(deque)
        self._defaults: dict[tuple[str, str], Canned | Responder] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, canned: Canned) -> None:
                raw = canned.raw()
                self.send_response(canned.status)
                headers = {"Content-Type": "application/json", **canned.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(method, parts.path, parts.query, self.headers.get("Authorization"), time.monotonic(), body)
                with outer._lock:
                    outer.requests.append(seen)
                    if parts.path == "/oauth/token":
                        answer: Canned | Responder = Canned(outer.token_status, outer.token_body)
                    else:
                        answer = outer._next(method, parts.path)
                self._answer(answer(seen) if callable(answer) else answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _next(self, method: str, path: str) -> Canned | Responder:
        for key in ((method, path), ("*", path)):
            if self._queues[key]:
                return self._queues[key].popleft()
        for key in ((method, path), ("*", path)):
            if key in self._defaults:
                return self._defaults[key]
        return _NO_SCRIPT

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(
        self,
        path: str,
        *responses: Canned | Responder,
        default: Canned | Responder | None = None,
        method: str = "*",
    ) -> None:
        """Queue responses for ``path`` (served once each, in order); ``default`` after that.
        ``method`` restricts them to one HTTP method (a method's own script wins over ``*``)."""
        with self._lock:
            self._queues[(method, path)].extend(responses)
            if default is not None:
                self._defaults[(method, path)] = default

    def api_requests(self) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path != "/oauth/token"]

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
