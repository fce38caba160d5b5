"""The supervision protocol: the child API, what it returns, events, and exit reasons.

Exit reasons are strings, as in OTP:
    normal | shutdown | shutdown:<detail>   the normal class (transient children stay down)
    killed                                  the process died (SIGKILL, brutal_kill)
    error:<Type>: <message>                 a handler or on_start raised
    anything else                           what the worker passed to ``stop(reason)``

The messages that travel only between Understudy's own actors are in ``protocols._lifecycle``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from protocols._base import Message
from protocols.topology import AnyChildSpec, RestartType

__all__ = [
    "KILLED",
    "NORMAL",
    "SHUTDOWN",
    "ChildCounts",
    "ChildInfo",
    "ChildStatus",
    "ChildType",
    "Children",
    "CountChildren",
    "DeleteChild",
    "EventName",
    "Events",
    "GetEvents",
    "RestartChild",
    "StartChild",
    "SubscribeEvents",
    "SupervisionEvent",
    "TerminateChild",
    "WhichChildren",
    "error_reason",
    "exited_path",
    "is_normal_exit",
]

NORMAL = "normal"
SHUTDOWN = "shutdown"
NOCONNECTION = "noconnection"
"""The exit reason of a child lost with its host (Erlang's reason for a lost node)."""
KILLED = "killed"

ChildStatus = Literal["running", "restarting", "stopped"]
ChildType = Literal["worker", "supervisor"]
EventName = Literal[
    "child_started",
    "child_exited",
    "child_restarted",
    "child_terminated",
    "child_deleted",
    "start_failed",
    "intensity_exceeded",
    "restart_limit_exceeded",
    "supervisor_shutdown",
    "auto_shutdown",
    "host_up",
    "host_suspect",
    "host_down",
]


def is_normal_exit(reason: str) -> bool:
    """Return True for the normal class of exit reasons: normal, shutdown, shutdown:<detail>."""
    return reason in (NORMAL, SHUTDOWN) or reason.startswith(SHUTDOWN + ":")


def exited_path(event: SupervisionEvent) -> str | None:
    """Return the path of the actor whose process an event says is gone, or None.

    ``child_exited``, ``child_terminated`` and ``start_failed`` name a child of
    ``event.supervisor``; ``supervisor_shutdown`` names the supervisor itself (and so everything
    below it).
    """
    if event.event in ("child_exited", "child_terminated", "start_failed"):
        return None if event.child_id is None else f"{event.supervisor}/{event.child_id}"
    if event.event == "supervisor_shutdown":
        return event.supervisor
    return None


def error_reason(exc: BaseException) -> str:
    """Return the exit reason for an exception raised by a handler or ``on_start``."""
    return f"error:{type(exc).__name__}: {exc}"


# --- What the child API returns -------------------------------------------------------------


class ChildInfo(Message):
    """One child of a supervisor, as ``which_children`` lists it."""

    kind: Literal["supervision.child_info"] = "supervision.child_info"
    id: str
    status: ChildStatus
    type: ChildType
    restart: RestartType
    restarts: int = 0
    pid: int | None = None
    host: str | None = None
    """The host its process runs on (None on simpleSystemBase)."""
    reason: str | None = None
    """Why it is ``restarting`` when it waits for a host its placement allows."""


class Children(Message):
    """The reply to WhichChildren, in start order."""

    kind: Literal["supervision.children"] = "supervision.children"
    children: list[ChildInfo]


class ChildCounts(Message):
    """The reply to CountChildren, as OTP's ``count_children``."""

    kind: Literal["supervision.child_counts"] = "supervision.child_counts"
    specs: int
    active: int
    supervisors: int
    workers: int


class SupervisionEvent(Message):
    """One supervision fact; ``seq`` orders all events of a runtime."""

    kind: Literal["supervision.event"] = "supervision.event"
    seq: int
    time: float
    supervisor: str
    child_id: str | None
    event: EventName
    reason: str | None = None
    host: str | None = None
    """The host the event is about (host events), or the child's host."""


class Events(Message):
    """The reply to GetEvents."""

    kind: Literal["supervision.events"] = "supervision.events"
    events: list[SupervisionEvent]
    exit_reason: str | None = None


# --- Commands to a supervisor ------------------------------------------------------------------


class WhichChildren(Message):
    """List a supervisor's children."""

    kind: Literal["supervision.which_children"] = "supervision.which_children"


class CountChildren(Message):
    """Count a supervisor's children."""

    kind: Literal["supervision.count_children"] = "supervision.count_children"


class StartChild(Message):
    """Start a child: from a spec, or (simple_one_for_one) from the template with extra args."""

    kind: Literal["supervision.start_child"] = "supervision.start_child"
    spec: AnyChildSpec | None = None
    args: dict[str, Any] | None = None


class TerminateChild(Message):
    """Stop a child; its spec stays (except simple_one_for_one and temporary children)."""

    kind: Literal["supervision.terminate_child"] = "supervision.terminate_child"
    child_id: str


class RestartChild(Message):
    """Start a terminated child again from its kept spec."""

    kind: Literal["supervision.restart_child"] = "supervision.restart_child"
    child_id: str


class DeleteChild(Message):
    """Remove a terminated child's spec."""

    kind: Literal["supervision.delete_child"] = "supervision.delete_child"
    child_id: str


class GetEvents(Message):
    """Ask the guardian for the events after ``since``.

    ``barrier`` maps a supervisor incarnation to the event count it had reported in a reply
    the caller has seen; the guardian answers once it holds those events (or after
    ``barrier_timeout``), so a caller always sees the events its own calls caused.
    """

    kind: Literal["supervision.get_events"] = "supervision.get_events"
    since: int = 0
    barrier: dict[str, int] = Field(default_factory=dict)
    barrier_timeout: float = 2.0
    wait_event: str | None = None
    wait_child: str | None = None
    wait_supervisor: str | None = None

    def wanted(self, event: SupervisionEvent) -> bool:
        """Return True if ``event`` is one this request waits for."""
        return (
            event.seq > self.since
            and event.event == self.wait_event
            and (self.wait_child is None or event.child_id == self.wait_child)
            and (self.wait_supervisor is None or event.supervisor == self.wait_supervisor)
        )


class SubscribeEvents(Message):
    """Actor -> guardian: send me every supervision event from now on (and past ones if
    ``replay``), as SupervisionEvent messages, until the actor at ``path`` exits."""

    kind: Literal["supervision.subscribe_events"] = "supervision.subscribe_events"
    path: str
    replay: bool = False
