"""The embedded model's fault queue: faults injected on demand for tests and experiments.

May import: pydantic and the standard library only (no core, no services, no agents).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["FaultKind", "FaultQueue", "FaultSpec", "FaultsRequest", "HttpError", "fault_error"]


FaultKind = Literal[
    "429", "500", "502", "503", "401", "400", "hang", "malformed_tool_call", "truncated"
]


class FaultSpec(BaseModel):
    """A fault to inject into the next ``count`` matching chat requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1)
    retry_after: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    seconds: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    match: str | None = None
    message: str | None = None
    code: str | None = None
    probability: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """Each matching request is hit with this probability (seeded by ``seed``), up to
    ``count`` hits; without it the next ``count`` matching requests are."""
    seed: int = 0

    @field_validator("kind", mode="before")
    @classmethod
    def _status_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class FaultsRequest(BaseModel):
    """The body of ``POST /_control/faults``."""

    model_config = ConfigDict(extra="forbid")

    faults: list[FaultSpec]


class FaultQueue:
    """Queued faults, consumed in order by matching requests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[list[Any]] = []  # [spec, remaining, its random generator]

    def add(self, specs: Sequence[FaultSpec]) -> None:
        with self._lock:
            self._queue.extend(
                [spec, spec.count, random.Random(spec.seed)]  # noqa: S311 - not for security
                for spec in specs
            )

    def clear(self) -> int:
        with self._lock:
            cleared: int = sum(remaining for _, remaining, _ in self._queue)
            self._queue.clear()
            return cleared

    def take(self, text: str) -> FaultSpec | None:
        with self._lock:
            for entry in self._queue:
                spec: FaultSpec = entry[0]
                if spec.match is None or spec.match in text:
                    if spec.probability is not None and entry[2].random() >= spec.probability:
                        continue
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._queue.remove(entry)
                    return spec
            return None

    def pending(self) -> list[FaultSpec]:
        with self._lock:
            return [spec.model_copy(update={"count": n}) for spec, n, _ in self._queue]


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


def fault_error(spec: FaultSpec, model: str, prompt_tokens: int) -> HttpError:
    """Return the HTTP error an injected fault answers with (429, 401, 400, 500, 502 or 503)."""
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
    if spec.kind == "502":
        return HttpError(
            502,
            spec.message or "Bad gateway.",
            type_="server_error",
            code=spec.code or "bad_gateway",
        )
    if spec.kind == "503":
        return HttpError(
            503,
            spec.message or "The engine is currently overloaded, please try again later.",
            type_="server_error",
            code=spec.code or "overloaded",
        )
    return HttpError(
        500,
        spec.message or "The server had an error while processing your request.",
        type_="server_error",
        code=spec.code or "server_error",
    )
