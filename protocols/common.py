"""Messages every actor understands: the typed error reply and the plain acknowledgement."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from protocols._base import Message

__all__ = ["ErrorName", "ErrorReply", "Ok"]


class ErrorName(StrEnum):
    """The ``error`` of an ``ErrorReply``: one name per failure, compared by constant only.

    The names are those of ``actors``' error tree (the Runtime raises the matching exception)
    and of the failures the system services and agents answer with.
    """

    ACTOR_CRASHED = "ActorCrashed"
    ACTOR_EXITED = "ActorExited"
    ACTOR_NOT_FOUND = "ActorNotFound"
    START_FAILED = "StartFailed"
    NOT_SUPPORTED = "NotSupported"
    ALREADY_STARTED = "AlreadyStarted"
    ALREADY_PRESENT = "AlreadyPresent"
    CHILD_NOT_FOUND = "ChildNotFound"
    CHILD_RUNNING = "ChildRunning"
    CHILD_RESTARTING = "ChildRestarting"
    TOPOLOGY_ERROR = "TopologyError"
    DECODE_ERROR = "DecodeError"
    UNKNOWN_MESSAGE_KIND = "UnknownMessageKind"
    MESSAGE_INVALID = "MessageInvalid"
    MESSAGE_TOO_LARGE = "MessageTooLarge"
    UNEXPECTED_MESSAGE = "UnexpectedMessage"
    INVALID_GOAL = "InvalidGoal"
    UNKNOWN_RUN = "UnknownRun"
    UNKNOWN_SESSION = "UnknownSession"
    INVALID_ANSWERS = "InvalidAnswers"
    AGENT_BUSY = "AgentBusy"
    MODEL_ERROR = "ModelError"
    SYNC_ABANDONED = "SyncAbandoned"
    PERMISSION_DENIED = "PermissionDenied"


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
