"""RunEvents: a follower whose orchestrator dies holding its request asks the replacement."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import pytest

from actors.core.runtime_runs import RunEvents
from actors.errors import ActorCrashed, ActorExited
from protocols import Message
from protocols.orchestrator import GetRunProgress, PhaseEvent, RunProgress


class _Orchestrator:
    """Stands in for the Runtime: answers each ask with the next scripted reply or error."""

    def __init__(self, *replies: Message | Exception) -> None:
        self.replies: deque[Message | Exception] = deque(replies)
        self.asked: list[GetRunProgress] = []

    def ask(self, path: str, request: GetRunProgress, timeout: float) -> Message:
        self.asked.append(request)
        reply = self.replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply


def _event(n: int) -> PhaseEvent:
    return PhaseEvent(n=n, time=float(n), phase="execution", what="progress")


def _follow(orchestrator: _Orchestrator) -> RunEvents:
    return RunEvents(cast(Any, orchestrator), "run-1", timeout=5.0, poll=0.5)


def test_a_request_lost_with_a_killed_orchestrator_is_asked_again_from_the_same_cursor() -> None:
    first = _event(1)
    orchestrator = _Orchestrator(
        RunProgress(run_id="run-1", events=[first]),
        ActorExited("root/orchestrator", "killed"),
        RunProgress(run_id="run-1", events=[_event(2)]),
    )
    events = _follow(orchestrator)

    assert first == next(events)
    assert 2 == next(events).n
    assert [0, 1, 1] == [request.since for request in orchestrator.asked]


def test_a_crash_of_the_orchestrator_on_the_request_is_not_retried() -> None:
    orchestrator = _Orchestrator(ActorCrashed("root/orchestrator", "error:ValueError: boom"))
    events = _follow(orchestrator)

    with pytest.raises(ActorCrashed):
        next(events)
    assert 1 == len(orchestrator.asked)
