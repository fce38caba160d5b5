"""A fault-injecting proxy for any OpenAI-compatible endpoint.

It forwards ``/v1/...`` requests to ``upstream`` unchanged (method, body and headers,
``Authorization`` included; the answer's status, headers and body back, streamed) and injects
the embedded model's faults (``actors.model.faults``) into chat completions: an HTTP error
instead of forwarding (429 with Retry-After, 500, 502, 503, 5xx, 401, 400), a held request
(``hang``: then forwarded; ``timeout``: then closed without an answer), or the upstream's
answer broken (``malformed_tool_call``; ``truncated``: cut half-way, ``finish_reason:
length``; both on non-streamed JSON answers only). Every chat request is logged
(:class:`~actors.model.faults.RequestRecord`). Control endpoints, as the embedded model's
(with ``control_key`` set they require ``Authorization: Bearer <control_key>``)::

    POST   /_control/faults       {"faults": [FaultSpec, ...]} queues faults
    DELETE /_control/faults       clears the queue
    GET    /_control/log          {"log": [RequestRecord, ...]}
    GET    /_control/stats        requests, faults fired, pending faults, the request log

    python -m actors.model.proxy --upstream https://api.openai.com/v1 [--port 8701] [--log-json]

The command logs ``fault_proxy_ready`` with the proxy's ``url`` (stderr) and runs until SIGINT
or SIGTERM.

May import: pydantic and the standard library, and this package.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from http.client import HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final

import structlog
from pydantic import ValidationError

from actors.logs import configure_logging
from actors.model.faults import (
    AGENT_HEADER,
    STATUS_KINDS,
    FaultControls,
    FaultQueue,
    FaultSpec,
    FaultsRequest,
    FaultState,
    HttpError,
    RequestLog,
    RequestRecord,
    conversation_digest,
    fault_error,
    hold_request,
    malform_completion,
    match_text,
    retry_after_seconds,
    truncate_completion,
)
from actors.model.server import MAX_BODY_BYTES, ServerStats

__all__ = ["FaultProxy", "serve_proxy"]

log = structlog.get_logger("understudy.fault_proxy")

_HOP_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",  # the proxy reads answers to break them: ask for them uncompressed
    }
)
_CHUNK: Final = 64 * 1024


class _ProxyState:
    def __init__(
        self, upstream: str, control_key: str | None, timeout: float, log_limit: int
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.control_key, self.timeout = control_key, timeout
        self.faults = FaultQueue()
        self.log = RequestLog(log_limit)
        self.stopping = threading.Event()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _ProxyState) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this inside its own except block: the error is the current one
        log.warning("proxy_request_failed", client=str(client_address), exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "UnderstudyFaultProxy/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request_logged", line=format % args)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _send(self, status: int, payload: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("proxy_client_disconnected", path=self._path())

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        extra = [("Content-Type", "application/json"), *(headers or {}).items()]
        self._send(status, json.dumps(body).encode(), extra)

    def _error(self, error: HttpError) -> None:
        self._json(error.status, error.body(), error.headers)

    def _body(self) -> bytes:
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            raise HttpError(
                400, f"Content-Length must be at most {MAX_BODY_BYTES}, got {declared!r}"
            )
        return self.rfile.read(int(declared)) if int(declared) else b""

    def _control_allowed(self) -> bool:
        key = self.server.state.control_key
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if key is None or hmac.compare_digest(given.encode(), key.encode()):
            return True
        log.warning("control_request_refused", path=self._path(), client=self.client_address[0])
        self._error(HttpError(401, "Incorrect control key provided.", code="invalid_api_key"))
        return False

    # --- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, state = self._path(), self.server.state
        if path == "/_control/log":
            if self._control_allowed():
                self._json(200, {"log": [r.model_dump(mode="json") for r in state.log.records()]})
        elif path == "/_control/stats":
            if self._control_allowed():
                self._json(200, ServerStats.of(state.log, state.faults).model_dump(mode="json"))
        else:
            self._relay(b"", None, None)

    def do_DELETE(self) -> None:
        if self._path() != "/_control/faults":
            body = self._read_or_answer()
            if body is not None:
                self._relay(body, None, None)
        elif self._control_allowed():
            cleared = self.server.state.faults.clear()
            log.info("faults_cleared", cleared=cleared)
            self._json(200, {"cleared": cleared})

    def do_POST(self) -> None:
        body = self._read_or_answer()
        if body is None:
            return
        path = self._path()
        if path == "/_control/faults":
            if self._control_allowed():
                self._queue(body)
        elif path.endswith("/chat/completions"):
            self._chat(body)
        else:
            self._relay(body, None, None)

    def _read_or_answer(self) -> bytes | None:
        try:
            return self._body()
        except HttpError as exc:
            self._error(exc)
            return None

    def _queue(self, body: bytes) -> None:
        try:
            faults = FaultsRequest.model_validate_json(body or b"null").faults
        except ValidationError as exc:
            self._error(HttpError(400, f"invalid faults: {exc}"))
            return
        self.server.state.faults.add(faults)
        log.info("faults_queued", kinds=[f.kind for f in faults])
        self._json(200, {"queued": len(faults)})

    # --- chat completions -----------------------------------------------------------------

    def _chat(self, body: bytes) -> None:
        state = self.server.state
        state.log.begin()
        record: dict[str, Any] = {
            "at": time.time(),
            "monotonic": time.monotonic(),
            "status": None,
            "agent": self.headers.get(AGENT_HEADER),
        }
        try:
            self._chat_with(body, record)
        finally:
            state.log.end(
                RequestRecord(
                    finished_at=time.time(), finished_monotonic=time.monotonic(), **record
                )
            )

    def _chat_with(self, body: bytes, record: dict[str, Any]) -> None:
        state = self.server.state
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            request = None
        if not isinstance(request, dict):
            request = {}
        text = match_text(request)
        record["conversation"] = conversation_digest(text)
        record["fingerprint"] = record["agent"] or record["conversation"]
        spec = state.faults.take(text)
        if spec is not None:
            record["fault"] = spec.kind
            state.log.fired(spec.kind)
            log.info("fault_injected", kind=spec.kind, match=spec.match)
            if spec.kind in {"hang", "timeout"}:
                if not hold_request(self.connection, spec.seconds, state.stopping):
                    record["disconnected"] = True
                    return
                if spec.kind == "timeout":
                    self.close_connection = True
                    log.info("proxy_request_timed_out", seconds=spec.seconds)
                    return
            if spec.kind in STATUS_KINDS:
                model = str(request.get("model") or "the model")
                error = fault_error(spec, model, max(1, len(body) // 4))
                record.update(status=error.status, retry_after=retry_after_seconds(error.headers))
                self._error(error)
                return
        self._relay(body, spec, record, request)

    # --- forwarding -----------------------------------------------------------------------

    def _relay(
        self,
        body: bytes,
        spec: FaultSpec | None,
        record: dict[str, Any] | None,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        """Forward the request upstream and its answer back, broken when ``spec`` says so."""
        state = self.server.state
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        target = state.upstream + self.path.removeprefix("/v1")
        outgoing = urllib.request.Request(  # noqa: S310 - the upstream the user configured
            target,
            data=body if self.command != "GET" else None,
            headers=headers,
            method=self.command,
        )
        try:
            reply: HTTPResponse = urllib.request.urlopen(outgoing, timeout=state.timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            with exc:  # an error answer: passed on whole
                passed = _passed(exc.headers.items())
                if record is not None:
                    record.update(status=exc.code, retry_after=retry_after_seconds(dict(passed)))
                self._send(exc.code, exc.read(), passed)
            return
        except (urllib.error.URLError, OSError) as exc:
            log.warning("upstream_unreachable", upstream=state.upstream, error=str(exc))
            if record is not None:
                record["status"] = 502
            message = f"upstream {state.upstream} unreachable: {exc}"
            self._error(HttpError(502, message, type_="server_error", code="bad_gateway"))
            return
        with reply:
            passed = _passed(reply.headers.items())
            if record is not None:
                record.update(status=reply.status, retry_after=retry_after_seconds(dict(passed)))
            if spec is not None and spec.kind in {"truncated", "malformed_tool_call"}:
                self._broken(reply, passed, spec, record, request or {})
            else:
                self._stream(reply, passed, record)

    def _broken(
        self,
        reply: HTTPResponse,
        headers: list[tuple[str, str]],
        spec: FaultSpec,
        record: dict[str, Any] | None,
        request: Mapping[str, Any],
    ) -> None:
        payload, status = reply.read(), reply.status
        try:
            completion = json.loads(payload) if status == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            completion = None  # a streamed answer: passed on whole
        if isinstance(completion, dict) and completion.get("choices"):
            if spec.kind == "truncated":
                completion = truncate_completion(completion)
            else:
                completion = malform_completion(completion, request)
            payload = json.dumps(completion).encode()
            _note_answer(record, completion)
        self._send(status, payload, headers)

    def _stream(
        self,
        reply: HTTPResponse,
        headers: list[tuple[str, str]],
        record: dict[str, Any] | None,
    ) -> None:
        length = reply.headers.get("Content-Length")
        try:
            self.send_response(reply.status)
            for name, value in headers:
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            while chunk := reply.read1(_CHUNK):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("proxy_client_disconnected", path=self._path())
            if record is not None:
                record["disconnected"] = True


def _passed(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The answer headers the proxy passes back (not the hop-by-hop ones)."""
    return [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]


def _note_answer(record: dict[str, Any] | None, completion: Mapping[str, Any]) -> None:
    """Record a broken answer's finish reason and tool."""
    if record is None:
        return
    choice = (completion.get("choices") or [{}])[0]
    calls = (choice.get("message") or {}).get("tool_calls") or []
    record.update(
        finish_reason=choice.get("finish_reason"),
        tool=calls[0]["function"].get("name") if calls else None,
    )


class FaultProxy(FaultControls):
    """The fault-injecting proxy (see the module doc), in daemon threads.

    Example::

        with FaultProxy("https://api.example.com/v1") as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key=key)
            proxy.inject("429", retry_after=2, probability=0.05, seed=7, count=None)
            ...
            ok, detail, counterexample = check_llm_budget(proxy.log(), max_retries=3)
    """

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control_key: str | None = None,
        timeout: float = 600.0,
        log_limit: int = 10_000,
    ) -> None:
        """Configure a proxy (not started yet).

        Args:
            upstream: the endpoint's base URL (``.../v1``); ``/v1/x`` is forwarded to
                ``upstream + /x``.
            host: the address to bind.
            port: the port (0: a free one).
            control_key: when set, the control endpoints require it as a bearer token.
            timeout: seconds to wait for the upstream.
            log_limit: how many request records the log keeps.
        """
        self._state = _ProxyState(upstream, control_key, timeout, log_limit)
        self._address = (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    def start(self, host: str | None = None, port: int | None = None) -> str:
        """Start listening and return the proxy's base URL (``http://HOST:PORT/v1``).

        Raises:
            RuntimeError: the proxy was already started.
            OSError: the address cannot be bound.
        """
        if self._httpd is not None:
            msg = f"the fault proxy is already running at {self._url}"
            raise RuntimeError(msg)
        address = (host or self._address[0], self._address[1] if port is None else port)
        self._state.stopping.clear()
        httpd = _Server(address, self._state)
        bound_host, bound_port = str(httpd.server_address[0]), httpd.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._httpd, self._url = httpd, f"http://{shown}:{bound_port}/v1"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fault-proxy-{bound_port}",
            daemon=True,
        )
        self._thread.start()
        log.info("fault_proxy_started", url=self._url, upstream=self._state.upstream)
        return self._url

    @property
    def url(self) -> str:
        """The base URL for ``openai.OpenAI(base_url=...)``.

        Raises:
            RuntimeError: the proxy is not running.
        """
        if self._url is None:
            msg = "the fault proxy is not running; call start() first"
            raise RuntimeError(msg)
        return self._url

    def stop(self) -> None:
        """Stop listening, let held requests go, wait for the threads (idempotent)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        self._state.log.wait_idle(5.0)
        log.info("fault_proxy_stopped", url=self._url)
        self._httpd, self._thread, self._url = None, None, None

    def __enter__(self) -> FaultProxy:
        """Start unless already started."""
        if self._httpd is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy."""
        self.stop()

    def _fault_state(self) -> FaultState:
        return self._state

    def request_log(self) -> list[dict[str, Any]]:
        """Return the request log as JSON objects."""
        return [record.model_dump(mode="json") for record in self.log()]

    def stats(self) -> ServerStats:
        """Return the request and fault counts and the request log."""
        return ServerStats.of(self._state.log, self._state.faults)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no chat request is in progress; return False on timeout."""
        return self._state.log.wait_idle(timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` chat requests have arrived in all; return False on timeout."""
        return self._state.log.wait_requests(count, timeout)


def serve_proxy(argv: list[str] | None = None) -> None:
    """Run the proxy until SIGINT or SIGTERM:
    ``python -m actors.model.proxy --upstream URL [--host H] [--port N]``."""
    parser = argparse.ArgumentParser(description="A fault-injecting OpenAI-compatible proxy")
    parser.add_argument("--upstream", required=True, help="the endpoint to forward to (.../v1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701, help="0: a free port")
    parser.add_argument("--control-key-env", help="an environment variable holding the key")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    key = os.environ.get(args.control_key_env) if args.control_key_env else None
    proxy = FaultProxy(args.upstream, args.host, args.port, control_key=key)
    try:
        url = proxy.start()
        log.info("fault_proxy_ready", url=url, upstream=args.upstream)
        while not done.wait(0.5):
            pass
    finally:
        proxy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    serve_proxy()
