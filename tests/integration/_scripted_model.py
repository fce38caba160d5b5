"""A scripted chat-completions endpoint: it answers each request with what the test queued.

Used where the embedded model's fixed behaviour is not what a test needs (an unclassified
error, a context-length error, a chosen interview rating). Each request's JSON body is kept in
``requests``, in arrival order. With nothing queued it answers ``default`` (a plain final
answer unless the test sets another).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion (``content``, ``tool_calls``), or an HTTP error
    (``status`` >= 400 with ``error``), or a raw ``body`` sent as is."""

    content: str | None = "done"
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None
    body: Any = None
    prompt_tokens: int = 10
    completion_tokens: int = 5

    def payload(self, number: int) -> Any:
        """The JSON document to send."""
        if self.body is not None:
            return self.body
        if self.status >= 400:
            return {"error": self.error or {"message": "scripted error", "type": "test"}}
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call-{number}-{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(self.tool_calls)
            ]
        return {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if self.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }


def context_length_exceeded() -> Reply:
    """HTTP 400 with code context_length_exceeded, as OpenAI sends it."""
    return Reply(
        status=400,
        error={
            "message": "This model's maximum context length is 100 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        },
    )


Responder = Callable[[dict[str, Any]], Reply]


class ScriptedModel:
    """The endpoint; use as a context manager (``with ScriptedModel() as model: model.url``)."""

    def __init__(self, default: Responder | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.default: Responder = default or (lambda _request: Reply())
        self._queue: deque[Reply | Responder] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *replies: Reply | Responder) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._queue.extend(replies)

    def __enter__(self) -> ScriptedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, request: dict[str, Any]) -> tuple[Reply, int]:
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            queued = self._queue.popleft() if self._queue else self.default
        reply = queued if isinstance(queued, Reply) else queued(request)
        return reply, number

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                reply, number = model._answer(request)
                data = json.dumps(reply.payload(number)).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
