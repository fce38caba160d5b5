"""An embedded OpenAI-compatible model server: deterministic answers, real HTTP, faults on demand.

Agents talk to it through the real ``openai`` client, so they run with no key and no network,
and experiments can make the "model" fail exactly when they want.

Endpoints (on 127.0.0.1 by default; ``start()`` returns the ``base_url`` ending in ``/v1``)
    POST   /v1/chat/completions   OpenAI's chat.completion schema; unknown fields are ignored
    GET    /v1/models             one model, ``understudy-stub``
    POST   /_control/faults       ``{"faults": [FaultSpec, ...]}`` queues faults
    DELETE /_control/faults       clears the queue
    GET    /_control/stats        requests, faults fired, pending faults, a request log
    GET    /_control/log          ``{"log": [RequestRecord, ...]}``: every chat request
With an API key, the control endpoints require it too (``Authorization: Bearer <key>``).

How it answers (every answer is a pure function of the request and the server's ``quality``
and ``seed``; it is a simulator for running offline and for experiments, not a language model)
    agent runs    the goal is read from the system prompt (``prompts.agent_system_prompt``) or
                  the first user message; its clauses (``protocols.goals``) become tool calls
                  (``write_file``, ``read_file``, ``list_directory``, ``run_command``), one per
                  turn; a write holds a valid artefact (``actors.model.writers``: prose, poems
                  of their form, JSON / YAML / CSV with the fields asked for, the catalogue's
                  programs); a failed tool call is tried again (twice at most); after the last
                  step comes a final text summary. A goal it does not understand is refused:
                  the answer's ``refusal`` (and content) says why
    quality       below 1, each criterion of a write is missed (deterministically, by a seeded
                  draw) with probability 1 - quality, except the criteria the goal's
                  constraints name: evolution's "This criterion was not met: ..." is followed
    evaluation    a message starting with ``UNDERSTUDY-EVALUATE``: JSON ``{score, met, unmet,
                  unverified, feedback}``, each criterion checked on the files' text
                  (``protocols.artefacts``); what the text cannot show is ``unverified``
    specification a message starting with ``UNDERSTUDY-SPECIFY``: JSON ``{goal, constraints,
                  acceptance_criteria, workspace_files}`` from the request's clauses

Faults (FaultSpec.kind; see ``actors.model.faults`` for when they fire)
    429 (Retry-After header), 500, 502, 503, 5xx (``status``), 401, 400
    (``context_length_exceeded`` by default), hang (held ``seconds`` or until the client
    disconnects, then answered), timeout (held ``seconds``, then closed without an answer),
    malformed_tool_call (a tool call whose ``arguments`` is not JSON), truncated (cut half-way,
    ``finish_reason: length``). Each spec fires on requests whose match text (system messages
    plus the first user message) contains ``match``: the next ``count``, every n-th, or each
    with a seeded probability; one fault per request, in queue order.
"""

from __future__ import annotations

import hmac
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ValidationError

from actors.model.brain import (
    Quality,
    Reply,
    respond,
)
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
    match_text,
    retry_after_seconds,
    truncate_completion,
)
from actors.model.wire import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
    FunctionCall,
    ToolCall,
)
from protocols import prompts
from protocols.prompts import estimate_tokens

__all__ = [
    "MAX_BODY_BYTES",
    "QUALITY_ENV",
    "SEED_ENV",
    "SERVED_MODEL",
    "ModelServer",
    "ServerStats",
    "quality_from_env",
    "serve_forever",
]

log = structlog.get_logger("understudy.model_server")

SERVED_MODEL: Final = "understudy-stub"
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
QUALITY_ENV: Final = "UNDERSTUDY_MODEL_QUALITY"
SEED_ENV: Final = "UNDERSTUDY_MODEL_SEED"


def quality_from_env(environ: Mapping[str, str]) -> tuple[float, int]:
    """Return (quality, seed) for an embedded server from ``UNDERSTUDY_MODEL_QUALITY`` (0..1,
    default 1) and ``UNDERSTUDY_MODEL_SEED`` (an integer, default 0).

    Raises:
        ValueError: a variable is set to something else (the message names it).
    """
    raw_quality, raw_seed = environ.get(QUALITY_ENV, "1"), environ.get(SEED_ENV, "0")
    try:
        quality = float(raw_quality)
    except ValueError:
        quality = -1.0
    if not 0.0 <= quality <= 1.0:
        msg = f"{QUALITY_ENV} must be a number from 0 to 1, got {raw_quality!r}"
        raise ValueError(msg)
    try:
        seed = int(raw_seed)
    except ValueError:
        msg = f"{SEED_ENV} must be an integer, got {raw_seed!r}"
        raise ValueError(msg) from None
    return quality, seed


# --- statistics ------------------------------------------------------------------


class ServerStats(BaseModel):
    """What ``GET /_control/stats`` and :meth:`ModelServer.stats` return (the fault proxy's
    too)."""

    requests: int
    served: int
    faults_fired: dict[str, int]
    pending_faults: list[FaultSpec]
    request_log: list[RequestRecord]

    @classmethod
    def of(cls, log: RequestLog, faults: FaultQueue) -> ServerStats:
        """Return the statistics of a request log and a fault queue."""
        requests, served, fired, records = log.snapshot()
        return cls(
            requests=requests,
            served=served,
            faults_fired=fired,
            pending_faults=faults.pending(),
            request_log=records,
        )


# --- HTTP -----------------------------------------------------------------------------------


def _prompt_tokens(request: ChatCompletionRequest) -> int:
    total = 0
    for message in request.messages:
        total += estimate_tokens(message.text()) + 1
        for call in message.tool_calls or []:
            total += estimate_tokens(call.function.name + call.function.arguments)
    for tool in request.tools or []:
        total += estimate_tokens(tool.function.model_dump_json())
    return total


class _State:
    """What the HTTP threads share: options, the fault queue, the statistics."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None,
        context_window: int | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        log_limit: int,
        quality: Quality,
    ) -> None:
        self.model, self.api_key, self.context_window = model, api_key, context_window
        self.quality = quality
        self.clock, self.monotonic = clock, monotonic
        self.faults = FaultQueue()
        self.log = RequestLog(log_limit)
        self.stopping = threading.Event()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def stats(self) -> ServerStats:
        return ServerStats.of(self.log, self.faults)

    def complete(self, request: ChatCompletionRequest, *, malformed: bool) -> ChatCompletion:
        prompt_tokens = _prompt_tokens(request)
        if self.context_window is not None and prompt_tokens > self.context_window:
            raise HttpError(
                400,
                f"This model's maximum context length is "
                f"{self.context_window} tokens, however you requested "
                f"{prompt_tokens} tokens.",
                code="context_length_exceeded",
                param="messages",
            )
        reply = respond(request, self.quality)
        if malformed:
            reply = _malformed(reply, request)
        finish: Literal["stop", "tool_calls", "length"] = "stop"
        calls = None
        content = reply.content
        if reply.tool_name is not None:
            arguments = reply.raw_arguments
            if arguments is None:
                arguments = json.dumps(reply.arguments, ensure_ascii=False)
            calls = [
                ToolCall(
                    id=reply.call_id,
                    function=FunctionCall(name=reply.tool_name, arguments=arguments),
                )
            ]
            finish = "tool_calls"
            completion_tokens = estimate_tokens(reply.tool_name + arguments)
        else:
            completion_tokens = estimate_tokens(content or "")
            limit = request.max_completion_tokens or request.max_tokens
            if limit is not None and completion_tokens > limit:
                content, completion_tokens, finish = (content or "")[: limit * 4], limit, "length"
        return ChatCompletion(
            id=f"chatcmpl-understudy-{self.next_id()}",
            created=int(self.clock()),
            model=request.model or self.model,
            choices=[
                Choice(
                    message=AssistantMessage(
                        content=content, tool_calls=calls, refusal=reply.refusal
                    ),
                    finish_reason=finish,
                )
            ],
            usage=CompletionUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )


def _malformed(reply: Reply, request: ChatCompletionRequest) -> Reply:
    """Turn a reply into a tool call whose arguments are cut off mid-JSON."""
    name = reply.tool_name or next((t.function.name for t in request.tools or []), "write_file")
    whole = json.dumps(reply.arguments or {"path": "", "content": reply.content or ""})
    return Reply(
        None,
        name,
        reply.arguments,
        reply.call_id or "call_malformed",
        raw_arguments=whole[: max(1, len(whole) // 2)],
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this inside its own except block: the error is the current one
        log.warning("model_request_failed", client=str(client_address), exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "UnderstudyModelServer/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request_logged", line=format % args)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("model_client_disconnected", path=self._path())

    def _body(self) -> Any:
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else -1
        if length < 0:
            raise HttpError(400, f"Content-Length must be a byte count, got {declared!r}")
        if length > MAX_BODY_BYTES:
            raise HttpError(
                413, f"request body must be at most {MAX_BODY_BYTES} bytes, got {length}"
            )
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def do_GET(self) -> None:
        path = self._path()
        state = self.server.state
        if path in {"/v1/models", "/models"}:
            self._send(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": state.model,
                            "object": "model",
                            "created": 0,
                            "owned_by": "understudy",
                        }
                    ],
                },
            )
        elif path == "/_control/stats":
            if self._control_allowed():
                self._send(200, state.stats().model_dump(mode="json"))
        elif path == "/_control/log":
            if self._control_allowed():
                records = state.log.records()
                self._send(200, {"log": [r.model_dump(mode="json") for r in records]})
        else:
            self._send(404, HttpError(404, f"no route GET {path}").body())

    def do_DELETE(self) -> None:
        if self._path() == "/_control/faults":
            if not self._control_allowed():
                return
            cleared = self.server.state.faults.clear()
            log.info("faults_cleared", cleared=cleared)
            self._send(200, {"cleared": cleared})
        else:
            self._send(404, HttpError(404, f"no route DELETE {self._path()}").body())

    def do_POST(self) -> None:
        path = self._path()
        if path in {"/v1/chat/completions", "/chat/completions"}:
            self._chat()
        elif path == "/_control/faults":
            if not self._control_allowed():
                return
            try:
                faults = FaultsRequest.model_validate(self._body()).faults
            except HttpError as exc:
                self._send(exc.status, exc.body())
                return
            except ValidationError as exc:
                self._send(400, HttpError(400, f"invalid faults: {exc}").body())
                return
            self.server.state.faults.add(faults)
            log.info("faults_queued", kinds=[f.kind for f in faults])
            self._send(200, {"queued": len(faults)})
        else:
            self._send(404, HttpError(404, f"no route POST {path}").body())

    def _chat(self) -> None:
        state = self.server.state
        state.log.begin()
        record: dict[str, Any] = {
            "at": state.clock(),
            "monotonic": state.monotonic(),
            "status": None,
            "agent": self.headers.get(AGENT_HEADER),
        }
        try:
            self._chat_with(state, record)
        finally:
            state.log.end(
                RequestRecord(
                    finished_at=state.clock(), finished_monotonic=state.monotonic(), **record
                )
            )

    def _chat_with(self, state: _State, record: dict[str, Any]) -> None:
        try:
            raw = self._body()
            text = match_text(raw) if isinstance(raw, Mapping) else ""
            record["conversation"] = conversation_digest(text)
            record["fingerprint"] = record["agent"] or record["conversation"]
            request = self._authorised_request(raw)
            spec = state.faults.take(text)
            if spec is not None and not self._apply(state, spec, record):
                return
            if spec is not None and spec.kind in STATUS_KINDS:
                raise fault_error(spec, request.model, _prompt_tokens(request))
            completion = self._complete(state, request, spec).model_dump(mode="json")
            if spec is not None and spec.kind == "truncated":
                completion = truncate_completion(completion)
        except HttpError as exc:
            record.update(status=exc.status, retry_after=retry_after_seconds(exc.headers))
            log.info("model_request_rejected", status=exc.status, code=exc.code, error=exc.message)
            self._send(exc.status, exc.body(), exc.headers)
            return
        choice = completion["choices"][0]
        calls = choice["message"].get("tool_calls") or []
        record.update(
            status=200,
            finish_reason=choice["finish_reason"],
            tool=calls[0]["function"]["name"] if calls else None,
        )
        log.info(
            "model_request_served",
            model=completion["model"],
            finish_reason=choice["finish_reason"],
            tool=record["tool"],
            prompt_tokens=completion["usage"]["prompt_tokens"],
            completion_tokens=completion["usage"]["completion_tokens"],
        )
        self._send(200, completion)

    def _apply(self, state: _State, spec: FaultSpec, record: dict[str, Any]) -> bool:
        """Record a fault and hold the request for a hang or timeout; return False when no
        answer is to be sent (the client left, the server is stopping, or a timeout)."""
        record["fault"] = spec.kind
        state.log.fired(spec.kind)
        log.info("fault_injected", kind=spec.kind, match=spec.match)
        if spec.kind not in {"hang", "timeout"}:
            return True
        if not hold_request(self.connection, spec.seconds, state.stopping):
            record["disconnected"] = True
            return False
        if spec.kind == "timeout":
            self.close_connection = True
            log.info("model_request_timed_out", seconds=spec.seconds)
            return False
        return True

    @staticmethod
    def _complete(
        state: _State, request: ChatCompletionRequest, spec: FaultSpec | None
    ) -> ChatCompletion:
        try:
            return state.complete(
                request, malformed=spec is not None and spec.kind == "malformed_tool_call"
            )
        except prompts.PromptFormatError as exc:
            raise HttpError(400, str(exc), code="invalid_prompt", param="messages") from exc
        except HttpError:
            raise
        except Exception as exc:  # a bug here must still answer, as a real server would
            log.exception("model_request_crashed")
            raise HttpError(
                500, f"the model server failed: {exc!r}", type_="server_error", code="server_error"
            ) from exc

    def _key_accepted(self) -> bool:
        """True when the server has no key, or the request carries it as its bearer token."""
        key = self.server.state.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), key.encode())

    def _control_allowed(self) -> bool:
        """Check the key on a control endpoint; answer 401 (and return False) without it."""
        if self._key_accepted():
            return True
        log.warning("control_request_refused", path=self._path(), client=self.client_address[0])
        self._send(
            401, HttpError(401, "Incorrect API key provided.", code="invalid_api_key").body()
        )
        return False

    def _authorised_request(self, raw: Any) -> ChatCompletionRequest:
        if not self._key_accepted():
            raise HttpError(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            request = ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            raise HttpError(400, f"invalid chat completion request: {exc}") from exc
        if request.stream:
            raise HttpError(
                400,
                "stream=true is not supported by the Understudy model server",
                code="unsupported_parameter",
                param="stream",
            )
        return request


# --- the embeddable server ------------------------------------------------------------------


class ModelServer(FaultControls):
    """An OpenAI-compatible model server running in a daemon thread.

    Example::

        with ModelServer() as server:
            client = openai.OpenAI(base_url=server.url, api_key="unused")
            server.inject("429", retry_after=0.5)
    """

    def __init__(
        self,
        *,
        model: str = SERVED_MODEL,
        api_key: str | None = None,
        context_window: int | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        log_limit: int = 10_000,
        quality: float = 1.0,
        seed: int = 0,
    ) -> None:
        """Configure a server (not started yet).

        Args:
            model: the model id ``/v1/models`` lists.
            api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
            context_window: when set, requests whose estimated prompt tokens exceed it get
                400 ``context_length_exceeded``.
            clock: wall-clock seconds for timestamps in the stats.
            monotonic: monotonic seconds for the request log's intervals.
            log_limit: how many request records the stats keep.
            quality: how well the model writes, 0 to 1 (see the module doc); 1: always well.
            seed: the seed of quality's draws.

        Raises:
            ValueError: quality is outside 0..1.
        """
        self._state = _State(
            model=model,
            api_key=api_key,
            context_window=context_window,
            clock=clock,
            monotonic=monotonic,
            log_limit=log_limit,
            quality=Quality(quality, seed),
        )
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving on ``host:port`` (0: a free port) and return the base URL (``.../v1``).

        Raises:
            RuntimeError: the server was already started.
            OSError: the address cannot be bound.
        """
        if self._httpd is not None:
            msg = f"the model server is already running at {self._url}"
            raise RuntimeError(msg)
        self._state.stopping.clear()
        httpd = _Server((host, port), self._state)
        bound_host, bound_port = httpd.server_address[:2]
        host_text = str(bound_host)
        shown = f"[{host_text}]" if ":" in host_text else host_text
        self._httpd, self._url = httpd, f"http://{shown}:{bound_port}/v1"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"model-server-{bound_port}",
            daemon=True,
        )
        self._thread.start()
        log.info("model_server_started", url=self._url)
        return self._url

    @property
    def url(self) -> str:
        """The base URL for ``openai.OpenAI(base_url=...)``.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._url is None:
            msg = "the model server is not running; call start() first"
            raise RuntimeError(msg)
        return self._url

    def stop(self) -> None:
        """Stop serving, end hanging requests, and wait for the threads (idempotent)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        self._state.log.wait_idle(5.0)
        log.info("model_server_stopped", url=self._url)
        self._httpd, self._thread, self._url = None, None, None

    def __enter__(self) -> ModelServer:
        """Start on a free port of 127.0.0.1 unless already started."""
        if self._httpd is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _fault_state(self) -> FaultState:
        return self._state

    def stats(self) -> ServerStats:
        """Return the request and fault counts and the request log."""
        return self._state.stats()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no chat request is in progress; return False on timeout."""
        return self._state.log.wait_idle(timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` chat requests have arrived in all; return False on timeout."""
        return self._state.log.wait_requests(count, timeout)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[str], None] | None = None,
    api_key: str | None = None,
    context_window: int | None = None,
    quality: float = 1.0,
    seed: int = 0,
) -> None:
    """Run a model server until SIGINT or SIGTERM (the ``understudy model-server`` command).

    Args:
        host: the address to bind.
        port: the port (0: a free one).
        ready: called with the base URL once the server accepts requests.
        api_key: require this bearer token.
        context_window: reject prompts estimated above this many tokens.
        quality: how well the model writes, 0 to 1 (1: always well).
        seed: the seed of quality's draws.
    """
    done = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            done.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    server = ModelServer(api_key=api_key, context_window=context_window, quality=quality, seed=seed)
    try:
        url = server.start(host, port)
        if ready is not None:
            ready(url)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
