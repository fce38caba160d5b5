"""Understudy's actors: the supervision runtime on Thespian.

The public API::

    from actors import Runtime, Worker
"""

from actors.core.runtime import Runtime
from actors.core.worker import Worker
from actors.errors import (
    ActorCrashed,
    ActorExited,
    ActorNotFound,
    AlreadyPresent,
    AlreadyStarted,
    AskTimeout,
    Backpressure,
    ChildNotFound,
    ChildRestarting,
    ChildRunning,
    NotSupported,
    RequestRejected,
    RuntimeStopped,
    StartFailed,
    SupervisorError,
)
from protocols.errors import TopologyError, UnderstudyError
from protocols.supervision import ChildCounts, ChildInfo, SupervisionEvent

__all__ = [
    "ActorCrashed",
    "ActorExited",
    "ActorNotFound",
    "AlreadyPresent",
    "AlreadyStarted",
    "AskTimeout",
    "Backpressure",
    "ChildCounts",
    "ChildInfo",
    "ChildNotFound",
    "ChildRestarting",
    "ChildRunning",
    "NotSupported",
    "RequestRejected",
    "Runtime",
    "RuntimeStopped",
    "StartFailed",
    "SupervisionEvent",
    "SupervisorError",
    "TopologyError",
    "UnderstudyError",
    "Worker",
]
