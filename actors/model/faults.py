"""Model faults: what to inject, when it fires, the request log, and the retry-budget check.

Kinds (``FaultSpec.kind``)
    429                 rate limited, with a ``Retry-After: <retry_after>`` header
    500 502 503 5xx     a server error; ``5xx`` answers with ``status`` (500 to 599)
    401 400             a bad key; a context length exceeded
    hang                hold the request ``seconds``, then answer normally
    timeout             hold the request ``seconds``, then close it without an answer
    malformed_tool_call an answer whose tool call's ``arguments`` is not JSON
    truncated           an answer cut half-way (text or tool-call arguments) with
                        ``finish_reason: length``
When (among the requests whose match text contains ``match``)
    by default          the next ``count`` requests
    every_nth=n         the n-th, 2n-th, ... matching request, ``count`` times
    probability=p       each matching request with probability p (``random.Random(seed)``)
``count=None`` keeps a spec armed until it is cleared. One fault per request: the first armed
spec in queue order that fires. The k-th matching request a spec sees is hit or not as a pure
function of the spec (see :func:`planned_hits`); which HTTP request is the k-th one depends on
the order requests arrive in.

May import: pydantic and the standard library only (no core, no services, no agents).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import random
import select
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AGENT_HEADER",
    "RETRY_AFTER_TOLERANCE",
    "STATUS_KINDS",
    "FaultControls",
    "FaultKind",
    "FaultQueue",
    "FaultSpec",
    "FaultState",
    "FaultsRequest",
    "HttpError",
    "RequestLog",
    "RequestRecord",
    "check_llm_budget",
    "conversation_digest",
    "fault_error",
    "hold_request",
    "malform_completion",
    "match_text",
    "planned_hits",
    "retry_after_seconds",
    "truncate_completion",
]

log = structlog.get_logger("understudy.model")


FaultKind = Literal[
    "429",
    "500",
    "502",
    "503",
    "5xx",
    "401",
    "400",
    "hang",
    "timeout",
    "malformed_tool_call",
    "truncated",
]
STATUS_KINDS: Final[frozenset[str]] = frozenset({"429", "500", "502", "503", "5xx", "401", "400"})
"""The kinds answered with an HTTP error instead of a completion."""

AGENT_HEADER: Final = "X-Understudy-Agent"
"""A request header naming the client; when present it is the request's fingerprint."""

RETRY_AFTER_TOLERANCE: Final = 0.05
"""Seconds a retry may come before its Retry-After has passed in :func:`check_llm_budget`:
the log's times are taken when the server starts and finishes handling a request, not when the
client sends or receives, so scheduling and clock granularity shift them by milliseconds."""


# --- what to inject -------------------------------------------------------------------------


class FaultSpec(BaseModel):
    """A fault to inject into matching chat requests (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    count: int | None = Field(default=1, ge=1)
    """How many requests it hits; None: every one that fires until the queue is cleared."""
    retry_after: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    """429: the Retry-After header, in seconds."""
    seconds: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    """hang and timeout: how long the request is held."""
    status: int | None = Field(default=None, ge=500, le=599)
    """5xx: the status to answer with (500 when unset)."""
    match: str | None = None
    message: str | None = None
    code: str | None = None
    probability: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """Each matching request is hit with this probability (seeded by ``seed``), up to
    ``count`` hits; without it the next ``count`` matching requests are."""
    seed: int = 0
    every_nth: int | None = Field(default=None, ge=1)
    """Hit the n-th, 2n-th, ... matching request (up to ``count`` hits)."""

    @field_validator("kind", mode="before")
    @classmethod
    def _status_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.probability is not None and self.every_nth is not None:
            msg = "probability and every_nth are exclusive, got both"
            raise ValueError(msg)
        if self.status is not None and self.kind not in {"5xx", "500", "502", "503"}:
            msg = f"status is for the 5xx kinds, got kind {self.kind!r}"
            raise ValueError(msg)
        if self.status is not None and self.kind != "5xx" and self.status != int(self.kind):
            msg = f"status must be {self.kind} for kind {self.kind!r}, got {self.status}"
            raise ValueError(msg)
        return self

    @property
    def http_status(self) -> int | None:
        """The status a status kind answers with; None for the other kinds."""
        if self.kind == "5xx":
            return self.status or 500
        return int(self.kind) if self.kind in STATUS_KINDS else None


class FaultsRequest(BaseModel):
    """The body of ``POST /_control/faults``."""

    model_config = ConfigDict(extra="forbid")

    faults: list[FaultSpec]


@dataclass
class _Armed:
    """A queued spec and its trigger state."""

    spec: FaultSpec
    remaining: int | None
    seen: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.spec.seed)  # noqa: S311 - reproducible faults, not security

    def fires(self) -> bool:
        """Count one more matching request; return whether this spec hits it."""
        self.seen += 1
        if self.spec.every_nth is not None:
            return self.seen % self.spec.every_nth == 0
        if self.spec.probability is not None:
            return self.rng.random() < self.spec.probability
        return True

    def spend(self) -> bool:
        """Use one hit; return True when none are left."""
        if self.remaining is None:
            return False
        self.remaining -= 1
        return self.remaining == 0


def planned_hits(spec: FaultSpec, requests: int) -> list[int]:
    """Return which of the first ``requests`` matching requests ``spec`` alone hits (0-based)."""
    armed = _Armed(spec, spec.count)
    hits: list[int] = []
    for index in range(requests):
        if armed.fires():
            hits.append(index)
            if armed.spend():
                break
    return hits


class FaultQueue:
    """Queued faults, consumed in order by matching requests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Armed] = []

    def add(self, specs: Iterable[FaultSpec]) -> None:
        with self._lock:
            self._queue.extend(_Armed(spec, spec.count) for spec in specs)

    def clear(self) -> int:
        """Drop every spec; return the firings dropped (an unlimited spec counts once)."""
        with self._lock:
            cleared = sum(1 if a.remaining is None else a.remaining for a in self._queue)
            self._queue.clear()
            return cleared

    def take(self, text: str) -> FaultSpec | None:
        """Return the fault for a request whose match text is ``text``, if one fires."""
        with self._lock:
            for armed in self._queue:
                if armed.spec.match is not None and armed.spec.match not in text:
                    continue
                if not armed.fires():
                    continue
                if armed.spend():
                    self._queue.remove(armed)
                return armed.spec
            return None

    def pending(self) -> list[FaultSpec]:
        with self._lock:
            return [a.spec.model_copy(update={"count": a.remaining}) for a in self._queue]


# --- how a fault answers ----------------------------------------------------------------------


class HttpError(Exception):
    """An HTTP error answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


_SERVER_ERRORS: Final = {
    500: ("The server had an error while processing your request.", "server_error"),
    502: ("Bad gateway.", "bad_gateway"),
    503: ("The engine is currently overloaded, please try again later.", "overloaded"),
    504: ("Gateway timeout.", "gateway_timeout"),
}


def fault_error(spec: FaultSpec, model: str, prompt_tokens: int) -> HttpError:
    """Return the HTTP error a status fault answers with (429, 401, 400 or a 5xx)."""
    if spec.kind == "429":
        seconds = format(spec.retry_after, "g")
        return HttpError(
            429,
            spec.message or f"Rate limit reached for {model}: please try again in {seconds}s.",
            type_="requests",
            code=spec.code or "rate_limit_exceeded",
            headers={"Retry-After": seconds},
        )
    if spec.kind == "401":
        return HttpError(
            401, spec.message or "Incorrect API key provided.", code=spec.code or "invalid_api_key"
        )
    if spec.kind == "400":
        return HttpError(
            400,
            spec.message
            or "This model's maximum context length is "
            f"{max(1, prompt_tokens - 1)} tokens, however you requested "
            f"{prompt_tokens} tokens.",
            code=spec.code or "context_length_exceeded",
            param="messages",
        )
    status = spec.http_status or 500
    message, code = _SERVER_ERRORS.get(status, (f"Server error {status}.", "server_error"))
    return HttpError(status, spec.message or message, type_="server_error", code=spec.code or code)


def truncate_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """Cut a chat.completion (JSON) half-way, as a server does at its output limit: half of
    each choice's text and of each tool call's arguments (no longer JSON), and
    ``finish_reason: length``. Changes and returns ``completion``."""
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            message["content"] = message["content"][: len(message["content"]) // 2]
        for call in message.get("tool_calls") or []:
            arguments = str(call["function"].get("arguments") or "")
            call["function"]["arguments"] = arguments[: len(arguments) // 2]
        choice["finish_reason"] = "length"
    return completion


def malform_completion(completion: dict[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """Make a chat.completion's (JSON) first choice a tool call whose arguments stop mid-JSON:
    its own tool calls cut, or else a call of the request's first tool (``write_file`` without
    tools) carrying half of the text. Changes and returns ``completion``."""
    choices = completion.get("choices") or []
    if not choices:
        return completion
    message = choices[0].setdefault("message", {"role": "assistant"})
    calls = message.get("tool_calls") or []
    if not calls:
        tools = request.get("tools") or [{}]
        name = str((tools[0].get("function") or {}).get("name") or "write_file")
        whole = json.dumps({"content": message.get("content") or ""})
        calls = [{"id": "call_malformed", "type": "function", "function": {"name": name}}]
        calls[0]["function"]["arguments"] = whole
        message["content"] = None
        choices[0]["finish_reason"] = "tool_calls"
    for call in calls:
        arguments = str(call["function"].get("arguments") or "")
        call["function"]["arguments"] = arguments[: max(1, len(arguments) // 2)]
    message["tool_calls"] = calls
    return completion


def hold_request(conn: socket.socket, seconds: float, stopping: threading.Event) -> bool:
    """Hold a request ``seconds``; return False early when the client hangs up or ``stopping``
    is set (a hang or timeout fault)."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if stopping.is_set():
            return False
        readable, _, _ = select.select([conn], [], [], min(remaining, 0.05))
        if readable:
            try:
                if not conn.recv(1, socket.MSG_PEEK):
                    return False
            except OSError:
                return False
            stopping.wait(min(remaining, 0.05))  # data, not EOF: keep polling gently
    return True


# --- the request log ----------------------------------------------------------------------


def match_text(request: Mapping[str, Any]) -> str:
    """Return a chat request's (JSON) system and developer messages and its first user
    message, joined by newlines: what ``FaultSpec.match`` searches, and what names a
    conversation."""
    messages = [m for m in request.get("messages") or [] if isinstance(m, Mapping)]
    texts = [_text(m) for m in messages if m.get("role") in {"system", "developer"}]
    texts.append(next((_text(m) for m in messages if m.get("role") == "user"), ""))
    return "\n".join(texts)


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def conversation_digest(text: str) -> str:
    """Return the 16-hex-digit digest of a request's match text: a retry of a request, or the
    next turn of one agent's conversation, has the same one."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return the wait a response's headers ask for (``retry-after-ms``, else ``retry-after``
    in seconds or as an HTTP date); None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(lowered[name]) / divisor
        except (KeyError, ValueError):
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(lowered["retry-after"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RequestRecord(BaseModel):
    """One chat request as the server or proxy handled it."""

    at: float
    """Wall-clock seconds when handling began."""
    finished_at: float
    monotonic: float | None = None
    """``time.monotonic()`` when handling began (comparable within one process only)."""
    finished_monotonic: float | None = None
    status: int | None
    """The status answered; None when no answer was sent (a timeout, a client gone)."""
    fault: FaultKind | None = None
    retry_after: float | None = None
    """The Retry-After the answer carried, in seconds."""
    fingerprint: str | None = None
    """Who asked: the ``X-Understudy-Agent`` header, else the conversation digest."""
    agent: str | None = None
    conversation: str | None = None
    """The digest of the request's system and first user messages
    (:func:`conversation_digest`)."""
    disconnected: bool = False
    finish_reason: str | None = None
    tool: str | None = None


class RequestLog:
    """The chat requests a server or proxy handled: counts, faults fired and a bounded record
    list (thread-safe; waits are on a condition, never polled)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Condition()
        self._requests = 0
        self._in_flight = 0
        self._served = 0
        self._fired: Counter[str] = Counter()
        self._records: deque[RequestRecord] = deque(maxlen=limit)

    def begin(self) -> None:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._lock.notify_all()

    def end(self, record: RequestRecord) -> None:
        with self._lock:
            self._in_flight -= 1
            self._served += record.status == 200
            self._records.append(record)
            self._lock.notify_all()

    def fired(self, kind: str) -> None:
        with self._lock:
            self._fired[kind] += 1

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def snapshot(self) -> tuple[int, int, dict[str, int], list[RequestRecord]]:
        """Return at one instant the requests seen, those answered 200, the faults fired by
        kind and the records."""
        with self._lock:
            return self._requests, self._served, dict(self._fired), list(self._records)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._requests >= count, timeout)


# --- the invariant ---------------------------------------------------------------------------


def _times(before: RequestRecord, after: RequestRecord) -> tuple[float, float]:
    """The end of ``before`` and the start of ``after`` on one clock: monotonic when both
    have it, else the wall clock."""
    if before.finished_monotonic is not None and after.monotonic is not None:
        return before.finished_monotonic, after.monotonic
    return before.finished_at, after.at


def _start(record: RequestRecord) -> float:
    return record.monotonic if record.monotonic is not None else record.at


def _faulted(record: RequestRecord) -> bool:
    return record.fault is not None or record.status != 200


def _client_violations(
    who: str, requests: Sequence[RequestRecord], max_retries: int, tolerance: float
) -> tuple[list[tuple[float, dict[str, Any]]], int, int]:
    """One client's violations (each with when it happened), its 429s retried, and its
    longest run of faulted attempts; ``requests`` in the order they started."""
    violations: list[tuple[float, dict[str, Any]]] = []
    limited = worst = 0
    run: list[RequestRecord] = []
    for index, record in enumerate(requests):
        run = [*run, record] if _faulted(record) else []
        worst = max(worst, len(run))
        if len(run) == max_retries + 2:
            counterexample = {
                "rule": "max_retries",
                "fingerprint": who,
                "max_retries": max_retries,
                "attempts": [r.model_dump(mode="json") for r in run],
            }
            violations.append((_start(record), counterexample))
        previous = requests[index - 1] if index else None
        if previous is None or previous.status != 429 or previous.retry_after is None:
            continue
        limited += 1
        answered, started = _times(previous, record)
        if started - answered < previous.retry_after - tolerance:
            counterexample = {
                "rule": "retry_after",
                "fingerprint": who,
                "retry_after": previous.retry_after,
                "waited": round(started - answered, 6),
                "limited": previous.model_dump(mode="json"),
                "next": record.model_dump(mode="json"),
            }
            violations.append((started, counterexample))
    return violations, limited, worst


def check_llm_budget(
    log: Iterable[RequestRecord | Mapping[str, Any]],
    max_retries: int,
    *,
    tolerance: float = RETRY_AFTER_TOLERANCE,
) -> tuple[bool, str, dict[str, Any] | None]:
    """Check that clients kept their retry budget, per fingerprint (``fingerprint``, else
    ``conversation``; records with neither are not checked).

    1. The request after a 429 carrying Retry-After R started at least R - ``tolerance``
       seconds after the 429 was answered (see :data:`RETRY_AFTER_TOLERANCE`).
    2. No more than ``max_retries + 1`` consecutive attempts were faulted (a fault applied,
       or any status but 200, or no answer); a 200 without a fault ends a run.

    Args:
        log: request records (:class:`RequestRecord` or their JSON), in any order.
        max_retries: the retries a client may make after its first faulted attempt.
        tolerance: seconds a retry may come early.

    Returns:
        ``(ok, detail, counterexample)``; the counterexample (None when ok) is the earliest
        violation: ``rule`` (``retry_after`` or ``max_retries``), ``fingerprint`` and the
        records involved.

    Raises:
        pydantic.ValidationError: a record is not a request record.
    """
    records = [r if isinstance(r, RequestRecord) else RequestRecord.model_validate(r) for r in log]
    by_client: dict[str, list[RequestRecord]] = {}
    for record in records:
        who = record.fingerprint or record.conversation
        if who is not None:
            by_client.setdefault(who, []).append(record)
    violations: list[tuple[float, dict[str, Any]]] = []
    limited = worst = 0
    for who, requests in by_client.items():
        requests.sort(key=_start)
        found, waited_out, longest = _client_violations(who, requests, max_retries, tolerance)
        violations += found
        limited, worst = limited + waited_out, max(worst, longest)
    if violations:
        _, first = min(violations, key=lambda v: v[0])
        if first["rule"] == "retry_after":
            detail = (
                f"client {first['fingerprint']} retried {first['waited']:.3f} s after a 429 "
                f"that asked for {first['retry_after']:g} s (tolerance {tolerance:g} s)"
            )
        else:
            detail = (
                f"client {first['fingerprint']} made {len(first['attempts'])} consecutive "
                f"faulted attempts; at most {max_retries + 1} allowed"
            )
        return False, f"{detail}; {len(violations)} violation(s) in all", first
    detail = (
        f"{len(records)} chat request(s) from {len(by_client)} client(s); each of {limited} "
        f"retried 429(s) waited out its Retry-After (tolerance {tolerance:g} s); at most "
        f"{worst} consecutive faulted attempt(s), {max_retries + 1} allowed"
    )
    return True, detail, None


class FaultState(Protocol):
    """What a fault-injecting endpoint keeps: its fault queue and its request log."""

    faults: FaultQueue
    log: RequestLog


class FaultControls:
    """Queue, clear and read the faults and requests of an endpoint (the embedded model
    server and the fault-injecting proxy share them)."""

    def _fault_state(self) -> FaultState:
        raise NotImplementedError

    def inject(self, kind: FaultKind | int, count: int | None = 1, **options: Any) -> FaultSpec:
        """Queue a fault for matching requests.

        Args:
            kind: a :data:`~actors.model.faults.FaultKind` (status codes may be ints).
            count: how many requests it hits (None: until cleared).
            **options: the other :class:`~actors.model.faults.FaultSpec` fields:
                ``retry_after`` (429), ``seconds`` (hang, timeout), ``status`` (5xx),
                ``match`` (a substring of the system messages or first user message),
                ``probability`` and ``seed``, ``every_nth``, ``message``, ``code``.

        Returns:
            The queued spec.

        Raises:
            pydantic.ValidationError: an unknown kind or option, or an out-of-range value.
        """
        return self.inject_specs([{"kind": kind, "count": count, **options}])[0]

    def inject_specs(self, specs: Iterable[FaultSpec | Mapping[str, Any]]) -> list[FaultSpec]:
        """Queue faults (:class:`~actors.model.faults.FaultSpec`, or their JSON), in order.

        Raises:
            pydantic.ValidationError: a spec is invalid (then none is queued).
        """
        queued = [FaultSpec.model_validate(spec) for spec in specs]
        self._fault_state().faults.add(queued)
        log.info("faults_queued", kinds=[spec.kind for spec in queued])
        return queued

    def clear(self) -> int:
        """Drop every queued fault; return how many pending firings were dropped."""
        cleared = self._fault_state().faults.clear()
        log.info("faults_cleared", cleared=cleared)
        return cleared

    clear_faults = clear

    def log(self) -> list[RequestRecord]:
        """Return the request log: one record per chat request, oldest first."""
        return self._fault_state().log.records()
