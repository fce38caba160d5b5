"""Flows: multi-step conversations with other actors, written top to bottom.

A worker's handler must not block waiting for another actor, so a conversation of several
requests would be a chain of callbacks. A flow is a generator that yields steps and receives
their results, the way the supervisor's operations do::

    def provision(self, name: str) -> Flow:
        info = yield Call("root/agents", StartChild(args={"name": name}))
        yield Call("root/system/access", EnsurePermissions(agent=info.id, ...))
        results = yield Gather([Call(p, Ping()) for p in peers])   # in parallel, in order
        outcomes = yield All([self.subtask(t) for t in tasks])     # sub-flows, in parallel
        yield Sleep(0.5)
        return info

    self.run_flow(self.provision("a1"))      # from any handler

A reply that is an ErrorReply is raised inside the flow (``RequestRejected``, ``ActorCrashed``
...); a Call with a timeout raises ``AskTimeout`` when no reply comes in time; in a Gather
each failed call's exception is returned in its place instead. An exception escaping a flow
is logged (``flow_failed``); it does not crash the worker.

``run_flow`` returns the flow's id; ``cancel_flow(id, error)`` stops waiting for whatever the
flow (and every sub-flow of its ``All``) waits for, closes the sub-flows, and raises ``error``
inside the flow at its current step: cancellation reaches every part of the conversation at
once, and replies that arrive later go to the worker as unsolicited messages.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from actors.errors import ActorNotFound, AskTimeout, error_from_reply
from protocols._base import Message
from protocols._lifecycle import _Gone
from protocols.common import ErrorReply

__all__ = [
    "All",
    "Call",
    "Flow",
    "Flows",
    "Gather",
    "Sleep",
    "Step",
]

if TYPE_CHECKING:
    from actors.core.worker import WorkerActor

log = structlog.get_logger("understudy.flow")


@dataclass(frozen=True)
class Call:
    """Send ``message`` to ``path`` and wait for its reply (at most ``timeout`` seconds)."""

    path: str
    message: Message
    timeout: float | None = 30.0


@dataclass(frozen=True)
class Gather:
    """Run calls in parallel; the result is the list of replies (or exceptions), in order."""

    calls: list[Call]


@dataclass(frozen=True)
class All:
    """Run sub-flows concurrently; the result is the list of their return values (or the
    exceptions they raised), in order."""

    flows: list[Flow]


@dataclass(frozen=True)
class Sleep:
    """Resume the flow after ``seconds`` (other messages are handled meanwhile)."""

    seconds: float


Step = Call | Gather | Sleep | All
Flow = Generator[Any, Any, Any]


@dataclass
class _Running:
    flow: Flow
    waiting: dict[int, int] = field(default_factory=dict)  # request id -> slot
    results: list[Any] = field(default_factory=list)
    gather: bool = False
    timers: dict[int, int] = field(default_factory=dict)  # request id -> timer token
    paths: dict[int, str] = field(default_factory=dict)
    parent: tuple[_Running, int] | None = None  # (the flow that runs this one in All, slot)
    children_left: int = 0
    children: list[_Running] = field(default_factory=list)
    sleep: int | None = None  # the key of the Sleep it waits in
    key: int = 0  # the id of a top-level flow (0 for a sub-flow)


_flow_ids = itertools.count(1)


class Flows:
    """The flows running in one worker host."""

    def __init__(self, host: WorkerActor) -> None:
        self._host = host
        self._by_request: dict[int, _Running] = {}
        self._sleeping: dict[int, _Running] = {}
        self._top: dict[int, _Running] = {}

    def start(self, flow: Flow) -> int:
        """Start ``flow`` and run it to its first wait; return its id (for ``cancel``)."""
        running = _Running(flow, key=next(_flow_ids))
        self._top[running.key] = running
        self._advance(running, None, None)
        return running.key

    def cancel(self, flow_id: int, error: Exception) -> bool:
        """Raise ``error`` in the flow ``flow_id`` at the step it waits in, after dropping
        every wait of it and of its sub-flows (closed). False if it has already ended."""
        running = self._top.get(flow_id)
        if running is None:
            return False
        self._release(running)
        self._advance(running, None, error)
        return True

    def _release(self, running: _Running) -> None:
        """Stop every wait of ``running`` and close its sub-flows (recursively)."""
        for rid in list(running.waiting):
            self._by_request.pop(rid, None)
            running.paths.pop(rid, None)
            token = running.timers.pop(rid, None)
            if token is not None:
                self._host.cancel_timer(token)
            self._host.forget_request(rid)
        running.waiting.clear()
        if running.sleep is not None:
            self._sleeping.pop(running.sleep, None)
            running.sleep = None
        children, running.children = running.children, []
        running.children_left = 0
        for child in children:
            self._release(child)
            child.parent = None
            child.flow.close()

    def on_reply(self, request_id: int, reply: Message) -> bool:
        """Route a reply to the flow waiting for it; False if no flow waits for it."""
        running = self._by_request.pop(request_id, None)
        if running is None:
            return False
        token = running.timers.pop(request_id, None)
        if token is not None:
            self._host.cancel_timer(token)
        path = running.paths.pop(request_id, "?")
        outcome: Any = reply
        if isinstance(reply, ErrorReply):
            outcome = error_from_reply(reply, path)
        elif isinstance(reply, _Gone):
            outcome = ActorNotFound(path, "it exited before answering")
        self._deliver(running, request_id, outcome)
        return True

    def on_timer(self, payload: tuple[str, int, int]) -> None:
        """A Call's timeout or a Sleep ended."""
        what, key, timeout_ms = payload
        if what == "sleep":
            running = self._sleeping.pop(key, None)
            if running is not None:
                running.sleep = None
                self._advance(running, None, None)
            return
        running = self._by_request.pop(key, None)
        if running is None:
            return
        running.timers.pop(key, None)
        path = running.paths.pop(key, "?")
        self._host.forget_request(key)
        self._deliver(running, key, AskTimeout(path, timeout_ms / 1000))

    def _finished(self, running: _Running, outcome: Any) -> None:
        if running.key:
            self._top.pop(running.key, None)
        if running.parent is None:
            return
        parent, slot = running.parent
        parent.results[slot] = outcome
        parent.children_left -= 1
        if parent.children_left == 0:
            parent.children = []
            self._advance(parent, parent.results, None)

    def _deliver(self, running: _Running, request_id: int, outcome: Any) -> None:
        slot = running.waiting.pop(request_id)
        running.results[slot] = outcome
        if running.waiting:
            return
        if running.gather:
            self._advance(running, running.results, None)
        elif isinstance(outcome, Exception):
            self._advance(running, None, outcome)
        else:
            self._advance(running, outcome, None)

    def _advance(self, running: _Running, value: Any, error: Exception | None) -> None:
        try:
            step = running.flow.throw(error) if error is not None else running.flow.send(value)
        except StopIteration as stop:
            self._finished(running, stop.value)
            return
        except Exception as exc:  # noqa: BLE001 - a failed flow is logged, the worker goes on
            if running.parent is None:
                log.error("flow_failed", actor=self._host.describe(), error=repr(exc))
            self._finished(running, exc)
            return
        if isinstance(step, All):
            running.results = [None] * len(step.flows)
            running.children_left = len(step.flows)
            running.children = [
                _Running(flow, parent=(running, slot)) for slot, flow in enumerate(step.flows)
            ]
            if not step.flows:
                self._advance(running, [], None)
            for child in list(running.children):
                if child.parent is not None:  # not closed by a cancel meanwhile
                    self._advance(child, None, None)
            return
        if isinstance(step, Sleep):
            key = next(_flow_ids)
            running.sleep = key
            self._sleeping[key] = running
            self._host.set_timer(step.seconds, ("flow", ("sleep", key, 0)))
            return
        calls = step.calls if isinstance(step, Gather) else [step]
        running.gather = isinstance(step, Gather)
        running.results = [None] * len(calls)
        running.waiting.clear()
        if not calls:
            self._advance(running, [], None)
            return
        for slot, call in enumerate(calls):
            rid = self._host.send_to_path(call.path, call.message, expect_reply=True)
            running.waiting[rid] = slot
            running.paths[rid] = call.path
            self._by_request[rid] = running
            if call.timeout is not None:
                running.timers[rid] = self._host.set_timer(
                    call.timeout, ("flow", ("timeout", rid, int(call.timeout * 1000)))
                )
