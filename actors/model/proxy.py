"""A fault-injecting proxy for any OpenAI-compatible endpoint.

It forwards ``/v1/...`` requests to ``upstream`` unchanged (headers, ``Authorization``
included) and injects the embedded model's faults (``actors.model.faults``) on chat
completions: an HTTP error (429 with Retry-After, 500, 502, 503, 401, 400) instead of
forwarding, no answer for a while (``hang``), or the upstream's answer broken
(``malformed_tool_call``: the arguments no longer JSON; ``truncated``: cut half-way with
``finish_reason: length``). Control endpoints as the embedded model's::

    POST   /_control/faults       {"faults": [FaultSpec, ...]} queues faults
    DELETE /_control/faults       clears the queue
    GET    /_control/stats        requests, faults fired, pending faults, a request log

    python -m actors.model.proxy --upstream https://api.openai.com/v1 [--port 8701]

May import: pydantic and the standard library, and this package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from pydantic import ValidationError

from actors.model.faults import FaultQueue, FaultSpec, FaultsRequest, HttpError, fault_error

__all__ = ["FaultProxy", "serve_proxy"]

log = structlog.get_logger(__name__)

_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}
_UPSTREAM_TIMEOUT = 600.0


class _ProxyState:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = FaultQueue()
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.fired: dict[str, int] = {}
        self.stopping = threading.Event()


def _match_text(body: dict[str, Any]) -> str:
    """The system messages and the first user message (what a fault's ``match`` searches,
    and what names a conversation)."""
    messages = body.get("messages") or []
    parts = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return "\n".join(parts + users[:1])


def _broken(completion: dict[str, Any], kind: str) -> dict[str, Any]:
    choice = completion["choices"][0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    if kind == "truncated":
        if isinstance(message.get("content"), str):
            message["content"] = message["content"][: len(message["content"]) // 2]
        for call in calls:
            arguments = call["function"]["arguments"]
            call["function"]["arguments"] = arguments[: len(arguments) // 2]
        choice["finish_reason"] = "length"
    elif calls:  # malformed_tool_call
        for call in calls:
            call["function"]["arguments"] = call["function"]["arguments"].rstrip("}") + ",,"
    return completion


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged through structlog, not to stderr."""

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        state = self.server.state
        if self.path.startswith("/_control/stats"):
            with state.lock:
                stats = {
                    "requests": len(state.log),
                    "faults_fired": dict(state.fired),
                    "pending_faults": [f.model_dump() for f in state.faults.pending()],
                    "request_log": list(state.log),
                }
            self._json(200, stats)
            return
        self._forward(b"")

    def do_DELETE(self) -> None:
        if self.path.startswith("/_control/faults"):
            self._json(200, {"cleared": self.server.state.faults.clear()})
            return
        self._json(404, {"error": {"message": f"no such path {self.path}"}})

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/_control/faults"):
            try:
                faults = FaultsRequest.model_validate_json(body).faults
            except ValidationError as exc:
                self._json(400, HttpError(400, f"invalid faults: {exc}").body())
                return
            self.server.state.faults.add(faults)
            self._json(200, {"queued": len(faults)})
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        state = self.server.state
        record: dict[str, Any] = {"at": time.time(), "status": None, "fault": None}
        spec = None
        request: dict[str, Any] = {}
        if self.path.rstrip("/").endswith("/chat/completions") and body:
            try:
                request = json.loads(body)
            except ValueError:
                request = {}
            text = _match_text(request)
            record["conversation"] = hashlib.sha256(text.encode()).hexdigest()[:16]
            spec = state.faults.take(text)
        try:
            self._answer(spec, request, body, record)
        finally:
            record["finished_at"] = time.time()
            with state.lock:
                state.log.append(record)

    def _answer(
        self,
        spec: FaultSpec | None,
        request: dict[str, Any],
        body: bytes,
        record: dict[str, Any],
    ) -> None:
        state = self.server.state
        if spec is not None:
            record["fault"] = spec.kind
            with state.lock:
                state.fired[spec.kind] = state.fired.get(spec.kind, 0) + 1
            log.info("proxy_fault_injected", kind=spec.kind)
            if spec.kind == "hang":
                state.stopping.wait(spec.seconds)
                record["disconnected"] = True
                self.close_connection = True
                return
            if spec.kind not in {"malformed_tool_call", "truncated"}:
                error = fault_error(spec, str(request.get("model", "?")), 0)
                record["status"] = error.status
                self._json(error.status, error.body(), error.headers)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        target = state.upstream + self.path.removeprefix("/v1")
        outgoing = urllib.request.Request(  # noqa: S310 - the upstream the user configured
            target, data=body or None, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(outgoing, timeout=_UPSTREAM_TIMEOUT) as reply:  # noqa: S310
                status, payload = reply.status, reply.read()
                passed = {k: v for k, v in reply.headers.items() if k.lower() == "retry-after"}
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
            passed = {k: v for k, v in exc.headers.items() if k.lower() == "retry-after"}
        except (urllib.error.URLError, OSError) as exc:
            error = HttpError(
                502, f"upstream {state.upstream} unreachable: {exc}", type_="server_error"
            )
            record["status"] = 502
            self._json(502, error.body())
            return
        if spec is not None and status == 200:
            payload = json.dumps(_broken(json.loads(payload), spec.kind)).encode()
        record["status"] = status
        self._send(status, payload, passed)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _ProxyState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class FaultProxy:
    """The proxy (see the module doc); a context manager that stops it on exit."""

    def __init__(self, upstream: str) -> None:
        self._state = _ProxyState(upstream)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the proxy's base URL (``http://HOST:PORT/v1``)."""
        httpd = _Server((host, port), self._state)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self.url = f"http://{host}:{httpd.server_address[1]}/v1"
        log.info("fault_proxy_started", url=self.url, upstream=self._state.upstream)
        return self.url

    def stop(self) -> None:
        """Stop listening (a hung request is let go)."""
        self._state.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FaultProxy:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, kind: str | int, count: int = 1, **options: Any) -> FaultSpec:
        """Queue a fault (``actors.model.faults.FaultSpec``) for the next matching calls."""
        spec = FaultSpec.model_validate({"kind": kind, "count": count, **options})
        self._state.faults.add([spec])
        return spec

    def clear_faults(self) -> int:
        """Drop the queued faults; return how many pending firings were dropped."""
        return self._state.faults.clear()

    def request_log(self) -> list[dict[str, Any]]:
        """Every request so far: ``at``, ``finished_at``, ``status``, ``fault``,
        ``conversation``."""
        with self._state.lock:
            return list(self._state.log)


def serve_proxy() -> None:
    """``python -m actors.model.proxy --upstream URL [--host H] [--port N]``."""
    parser = argparse.ArgumentParser(description="A fault-injecting OpenAI-compatible proxy")
    parser.add_argument("--upstream", required=True, help="the endpoint to forward to (…/v1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream)
    proxy.start(args.host, args.port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    serve_proxy()
