"""Model guards, pure: the classification of model errors, the agents' decider, the circuit
breaker and the rate limiter (no Thespian, no I/O).

Model errors (``classify``)
    retryable   429 (Retry-After honoured), 408, 409, 5xx, timeouts, connection errors, an
                open circuit
    fatal       every other 4xx (401, 403, 400 such as a context length, 404, 422)
    unknown     anything else (an unexpected response, a bug)
The deciders (``decide``, and ``decide_isolated`` which restarts the unclassified instead of
escalating) map an agent's exit reason built from those classes to a supervisor directive.
The circuit breaker (``CircuitBreaker``) counts consecutive retryable and unknown
model failures, opens after ``failures`` of them, lets one trial call through after
``cooldown`` seconds (half open) and closes on a success.

May import: ``protocols``, ``actors.core.restart`` (the directive type), the standard library
and openai's exception types.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import openai

from actors.core.restart import Directive
from protocols.agent import ErrorClass

__all__ = [
    "REASON_LIMIT",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "MalformedToolCall",
    "ModelFailure",
    "RateLimiter",
    "classify",
    "decide",
    "decide_isolated",
    "is_context_length_error",
    "parse_retry_after",
]

Clock = Callable[[], float]

REASON_LIMIT: Final = 300
_EPSILON: Final = 1e-6


# --- Error classification -------------------------------------------------------------------


class MalformedToolCall(Exception):
    """The model sent a second malformed tool call in one run."""


class CircuitOpen(Exception):
    """The model's circuit breaker is open: no call was made."""

    def __init__(self, retry_in: float) -> None:
        """Record how long until the breaker lets a trial call through."""
        super().__init__(f"the model's circuit breaker is open; next trial in {retry_in:.3g}s")
        self.retry_in = retry_in


@dataclass(frozen=True)
class ModelFailure:
    """A classified model error: its class, the exception's type name and message."""

    error_class: ErrorClass
    type_name: str
    message: str
    retry_after: float | None = None

    def error(self) -> str:
        """Return ``<Type>: <message>[; retry_after=<seconds>]`` (the AgentResult's error)."""
        text = f"{self.type_name}: {self.message}"
        if self.retry_after is not None:
            text += f"; retry_after={self.retry_after!r}"
        return text

    def exit_reason(self) -> str:
        """Return the agent's exit reason for this failure (see ``protocols.agent``)."""
        if self.error_class == "unknown":
            return f"error:{self.error()}"
        return f"error:{self.error_class}:{self.error()}"


_RETRYABLE_STATUS: Final = frozenset({408, 409, 429})


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Return the seconds a response asks to wait: ``retry-after-ms``, else ``retry-after``
    (seconds, or an HTTP date compared with ``now``, the wall clock); None when absent or
    unreadable. Negative waits are 0."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _one_line(text: str) -> str:
    # The retry_after suffix is ours alone: a message that imitates it must not be read as one.
    flat = " ".join(str(text).split()).replace("; retry_after=", "; retry-after=")
    return flat if len(flat) <= REASON_LIMIT else flat[: REASON_LIMIT - 3] + "..."


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    text = body.get("message") if isinstance(body, dict) else None
    return _one_line(f"HTTP {exc.status_code}: {text or exc.message}")


def classify(exc: BaseException, *, now: float | None = None) -> ModelFailure:
    """Classify an exception raised by a model call (see the module doc for the classes).

    Args:
        exc: what the ``openai`` client (or the run itself) raised.
        now: the wall clock, for a Retry-After given as an HTTP date.

    Returns:
        The failure: retryable, fatal or unknown, with the Retry-After when one was sent.
    """
    name = type(exc).__name__
    if isinstance(exc, CircuitOpen):
        return ModelFailure("retryable", name, _one_line(str(exc)), exc.retry_in)
    if isinstance(exc, MalformedToolCall):
        return ModelFailure("fatal", name, _one_line(str(exc)))
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return ModelFailure("retryable", name, _one_line(exc.message))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in _RETRYABLE_STATUS or 500 <= status <= 599:
            retry_after = parse_retry_after(exc.response.headers, now)
            return ModelFailure("retryable", name, _status_message(exc), retry_after)
        if 400 <= status <= 499:
            return ModelFailure("fatal", name, _status_message(exc))
        return ModelFailure("unknown", name, _status_message(exc))
    return ModelFailure("unknown", name, _one_line(str(exc) or repr(exc)))


def is_context_length_error(exc: BaseException) -> bool:
    """Return True for a provider's "the conversation is longer than my context" error: an
    HTTP 400 with code ``context_length_exceeded`` (OpenAI's), or one whose message says
    "maximum context length" (servers that copy OpenAI's wording without the code)."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code != 400:
        return False
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else {}
    inner = inner if isinstance(inner, dict) else {}
    code = exc.code if isinstance(exc.code, str) else inner.get("code")
    text = f"{exc.message} {inner.get('message', '')}"
    return code == "context_length_exceeded" or "maximum context length" in text


_RETRY_AFTER = re.compile(r"; retry_after=([0-9eE.+-]+)$")


def decide(reason: str) -> tuple[Directive, float]:
    """Map an agent's exit reason to a supervisor directive (a ChildSpec ``decider``).

    ``error:retryable:...`` restarts after its ``retry_after`` (0 without one; the spec's
    ``backoff`` adds exponential delay on top), ``error:fatal:...`` stops (the spec is kept),
    ``killed`` (the process died: SIGKILL, OOM, a timeout kill) restarts, anything else
    escalates.
    """
    if reason == "killed":
        return "restart", 0.0
    if reason.startswith("error:retryable:"):
        found = _RETRY_AFTER.search(reason)
        delay = 0.0
        if found is not None:
            try:
                delay = float(found.group(1))
            except ValueError:
                delay = 0.0
        return "restart", delay if math.isfinite(delay) and delay > 0 else 0.0
    if reason.startswith("error:fatal:"):
        return "stop", 0.0
    return "escalate", 0.0


def decide_isolated(reason: str) -> tuple[Directive, float]:
    """Like ``decide``, but an unclassified error restarts instead of escalating.

    The source's agent policy: one agent's failure never takes its siblings down. Pair it with
    a ``restart_limit`` (``reset_on: success``, ``on_limit: stop``) so that an agent failing
    again and again is stopped alone once over its limit. ``decide`` stays for trees that want
    OTP's escalation of the unexpected.
    """
    directive, delay = decide(reason)
    return ("restart", 0.0) if directive == "escalate" else (directive, delay)


# --- Circuit breaker, rate limiter, token account ---------------------------------------------

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Fail fast after repeated model failures; let one trial through after a cool-down.

    closed      calls pass; ``failures`` consecutive failures open it
    open        calls are refused until ``cooldown`` seconds have passed since it opened
    half_open   exactly one trial call passes; its success closes the breaker, its failure
                opens it again for another ``cooldown``
    """

    def __init__(
        self, failures: int = 3, cooldown: float = 5.0, *, clock: Clock = time.monotonic
    ) -> None:
        """Configure a closed breaker.

        Raises:
            ValueError: ``failures`` < 1 or ``cooldown`` < 0.
        """
        if failures < 1:
            msg = f"failures must be >= 1, got {failures}"
            raise ValueError(msg)
        if not cooldown >= 0:
            msg = f"cooldown must be >= 0, got {cooldown}"
            raise ValueError(msg)
        self.failures, self.cooldown, self._clock = failures, cooldown, clock
        self.consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down has passed is half open)."""
        if self._opened_at is None:
            return "closed"
        if self._trial or self._clock() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Return True if a call may be made now (in half open: the one trial call)."""
        if self._opened_at is None:
            return True
        if self._trial or self._clock() - self._opened_at < self.cooldown:
            return False
        self._trial = True
        return True

    def retry_in(self) -> float:
        """Seconds until ``allow`` may return True (0 when closed or half open)."""
        if self._opened_at is None or self._trial:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def record_success(self) -> None:
        """A call succeeded: close the breaker."""
        self.consecutive, self._opened_at, self._trial = 0, None, False

    def record_failure(self) -> None:
        """A call failed: count it; open the breaker at the threshold or after a failed trial."""
        self.consecutive += 1
        if self._opened_at is not None or self.consecutive >= self.failures:
            self._opened_at, self._trial = self._clock(), False


class RateLimiter:
    """Space calls at least ``1 / per_second`` seconds apart (None: no limit)."""

    def __init__(self, per_second: float | None, *, clock: Clock = time.monotonic) -> None:
        """Configure the limiter.

        Raises:
            ValueError: ``per_second`` is not positive.
        """
        if per_second is not None and not per_second > 0:
            msg = f"per_second must be > 0, got {per_second}"
            raise ValueError(msg)
        self.interval = 1.0 / per_second if per_second else 0.0
        self._clock = clock
        self._next = -math.inf

    def try_acquire(self) -> float:
        """Take the next slot if it is due and return 0; else return the seconds to wait."""
        now = self._clock()
        if now + _EPSILON >= self._next:
            self._next = now + self.interval
            return 0.0
        return self._next - now
