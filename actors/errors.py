"""The runtime's exception tree (all exported from ``actors``)::

UnderstudyError                  base; never raised itself
+ TopologyError                  a topology is invalid; raised before any actor starts
+ CodecError (+ DecodeError, UnknownMessageKind, MessageInvalid, MessageTooLarge)
+ AskTimeout                     no reply within .timeout seconds
+ ActorNotFound                  no live actor at .path
+ ActorExited                    the asked actor exited before answering; .reason says why
  + ActorCrashed                 the asked handler itself raised; .reason is the exit reason
+ RuntimeStopped                 the Runtime was shut down
+ SupervisorError                a child API call was refused (OTP's {error, _})
  + ChildNotFound                no child with that id
  + AlreadyStarted               start_child: the id exists and its child runs
  + AlreadyPresent               start_child: the id exists, terminated
  + ChildRunning                 restart_child / delete_child on a running child
  + ChildRestarting              restart_child / delete_child on a restarting child
  + NotSupported                 the call does not apply to this supervisor's strategy
+ RequestRejected                an actor answered with a typed error (.error, .detail)
+ StartFailed                    a child could not start; .child is its path
+ Backpressure                   a link's queue is full (``max_queue``): the receiver is slower
"""

from __future__ import annotations

from protocols.common import ErrorName, ErrorReply
from protocols.errors import (
    CodecError,
    DecodeError,
    MessageInvalid,
    TopologyError,
    UnderstudyError,
    UnknownMessageKind,
)


class AskTimeout(UnderstudyError):
    """No reply arrived within ``timeout`` seconds."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        super().__init__(f"no reply from {path!r} within {timeout} s")


class ActorNotFound(UnderstudyError):
    """No live actor answers at ``path``."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        super().__init__(f"no actor at {path!r}" + (f": {detail}" if detail else ""))


class ActorExited(UnderstudyError):
    """The asked actor exited (crashed on another message, was killed or stopped) before
    answering; ``reason`` is its exit reason. The request fails at once, never by timeout."""

    def __init__(self, path: str, reason: str, text: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(text or f"actor {path!r} exited before answering: {reason}")


class ActorCrashed(ActorExited):
    """The asked actor's handler raised; the actor exited with ``reason`` and is not retried."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason, f"actor {path!r} crashed handling the request: {reason}")


class RuntimeStopped(UnderstudyError):
    """The Runtime has been shut down; start a new one."""


class SupervisorError(UnderstudyError):
    """A supervisor refused a child API call."""


class ChildNotFound(SupervisorError):
    """The supervisor has no child with that id."""


class AlreadyStarted(SupervisorError):
    """A child with that id exists and is running."""


class AlreadyPresent(SupervisorError):
    """A child with that id exists, terminated; restart or delete it first."""


class ChildRunning(SupervisorError):
    """The child is running; terminate it first."""


class ChildRestarting(SupervisorError):
    """The child is being restarted; try again."""


class NotSupported(SupervisorError):
    """The call does not apply to this supervisor (e.g. delete_child on simple_one_for_one)."""


class RequestRejected(UnderstudyError):
    """An actor answered a request with a typed error of its own protocol.

    ``error`` is the error's name (e.g. ``InvalidTransition``), ``detail`` what was wrong.
    """

    def __init__(self, path: str, error: str, detail: str) -> None:
        self.path = path
        self.error = error
        self.detail = detail
        super().__init__(f"{path} rejected the request: {error}: {detail}")


class Backpressure(UnderstudyError):
    """A link's queue is full: the destination is slower than its senders."""


class StartFailed(UnderstudyError):
    """A child failed to start; ``child`` is its path and ``reason`` its exit reason."""

    def __init__(self, child: str, reason: str) -> None:
        self.child = child
        self.reason = reason
        super().__init__(f"child {child!r} failed to start: {reason}")


_BY_NAME: dict[str, type[UnderstudyError]] = {
    cls.__name__: cls
    for cls in (
        ChildNotFound,
        AlreadyStarted,
        AlreadyPresent,
        ChildRunning,
        ChildRestarting,
        NotSupported,
        DecodeError,
        MessageInvalid,
        TopologyError,
        UnderstudyError,
    )
}


def error_from_reply(reply: ErrorReply, path: str) -> UnderstudyError:
    """Turn an ErrorReply from the actor at ``path`` into the exception the caller raises."""
    if reply.error == ErrorName.ACTOR_CRASHED:
        return ActorCrashed(path, reply.reason or reply.message)
    if reply.error == ErrorName.ACTOR_EXITED:
        return ActorExited(path, reply.reason or reply.message)
    if reply.error == ErrorName.ACTOR_NOT_FOUND:
        return ActorNotFound(path, reply.message)
    if reply.error == ErrorName.START_FAILED:
        return StartFailed(reply.message, reply.reason or "")
    if reply.error == ErrorName.UNKNOWN_MESSAGE_KIND:
        return UnknownMessageKind(reply.message)
    if reply.error == ErrorName.MESSAGE_TOO_LARGE:
        return CodecError(reply.message)
    cls = _BY_NAME.get(reply.error)
    if cls is None:
        return RequestRejected(path, reply.error, reply.message)
    return cls(f"{path}: {reply.message}")


__all__ = [
    "ActorCrashed",
    "ActorExited",
    "ActorNotFound",
    "AlreadyPresent",
    "AlreadyStarted",
    "AskTimeout",
    "Backpressure",
    "ChildNotFound",
    "ChildRestarting",
    "ChildRunning",
    "NotSupported",
    "RequestRejected",
    "RuntimeStopped",
    "StartFailed",
    "SupervisorError",
    "error_from_reply",
]
