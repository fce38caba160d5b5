"""Messages every actor understands: the typed error reply and the plain acknowledgement."""

from __future__ import annotations

from typing import Literal

from protocols._base import Message


class ErrorReply(Message):
    """A request failed; ``error`` names the exception class the caller raises.

    ``error`` is one of the names of ``actors``' error tree (``ActorCrashed``, ``ChildNotFound``,
    ``MessageInvalid`` ...); ``reason`` carries the exit reason when the error is a crash.
    """

    kind: Literal["understudy.error"] = "understudy.error"
    error: str
    message: str
    reason: str | None = None


class Ok(Message):
    """A request succeeded and has nothing to return."""

    kind: Literal["understudy.ok"] = "understudy.ok"
