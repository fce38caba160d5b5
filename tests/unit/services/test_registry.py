"""The Registry worker called directly with a stubbed host (Akka's "stubbed" style): logs,
sweeps with a controlled clock, backpressure, supervision events, deferred replies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from actors.errors import Backpressure
from actors.services.registry import Registry
from protocols import Message
from protocols.common import ErrorReply
from protocols.registry import (
    AgentCard,
    AgentFound,
    AgentRegistered,
    AgentSkill,
    DeliverToAgent,
    EventsSynced,
    GetAgent,
    GetRegistryStatistics,
    ListAgents,
    MessageForwarded,
    MessageHeld,
    RegisterAgent,
    RegistryStatistics,
    SyncEvents,
    UpdateStatus,
    _Sweep,
)
from protocols.supervision import SupervisionEvent, WhichChildren

PATH = "root/system/registry"

Logs = list[MutableMapping[str, Any]]


class Memo(Message):
    kind: Literal["test.registry_worker_memo"] = "test.registry_worker_memo"
    n: int


class FakeHost:
    """Records what the worker sends; ``refuse_after`` sends raise Backpressure."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.subscriptions: list[bool] = []
        self.deferred: list[list[Message]] = []
        self.refuse_after: int | None = None
        self.timers: dict[int, tuple[float, Any]] = {}
        self.cancelled: list[int] = []

    def send_to_path(self, path: str, message: Message, *, expect_reply: bool = False) -> int:
        if self.refuse_after is not None and len(self.sent) >= self.refuse_after:
            raise Backpressure(f"queue to {path} is full")
        self.sent.append((path, message))
        return len(self.sent)

    def subscribe_events(self, *, replay: bool) -> None:
        self.subscriptions.append(replay)

    def defer_reply(self) -> Callable[[Message], None]:
        replies: list[Message] = []
        self.deferred.append(replies)
        return replies.append

    def set_timer(self, seconds: float, payload: Any) -> int:
        token = len(self.timers) + 1
        self.timers[token] = (seconds, payload)
        return token

    def cancel_timer(self, token: int) -> None:
        self.cancelled.append(token)

    def request_stop(self, reason: str) -> None:
        raise AssertionError(f"the registry must not stop itself ({reason})")


class ClockedRegistry(Registry):
    """A registry whose clock the test moves."""

    now = 0.0

    def _clock(self) -> float:
        return self.now


def start(**args: Any) -> tuple[ClockedRegistry, FakeHost]:
    worker = ClockedRegistry()
    host = FakeHost()
    worker.args = args
    worker.child_id = "registry"
    worker.path = PATH
    worker.state_dir = Path("/nonexistent")
    worker._host = host  # type: ignore[assignment]
    worker.on_start()
    return worker, host


def card(name: str, **fields: Any) -> AgentCard:
    values: dict[str, Any] = {
        "name": name,
        "description": "d",
        "version": "1",
        "path": f"root/agents/{name}",
        "skills": [AgentSkill(id="s", name="s", description="d", tags=["t"])],
        **fields,
    }
    return AgentCard(**values)


def event(seq: int, name: str, child_id: str, supervisor: str = "root/agents") -> SupervisionEvent:
    return SupervisionEvent(seq=seq, time=0.0, supervisor=supervisor, child_id=child_id, event=name)


def memo(n: int) -> DeliverToAgent:
    return DeliverToAgent.wrap("a", Memo(n=n))


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Capture every event, info included, whatever level an earlier test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def events_named(logs: Logs, name: str) -> Logs:
    return [entry for entry in logs if entry["event"] == name]


def test_it_subscribes_to_supervision_events_with_replay() -> None:
    _worker, host = start()

    assert [True] == host.subscriptions


def test_bad_args_fail_the_start() -> None:
    with pytest.raises(ValidationError):
        start(hold_seconds=-5)


def test_expired_messages_are_logged_at_the_next_message(logs: Logs) -> None:
    worker, _host = start(hold_seconds=10)
    worker.handle(memo(1))
    worker.handle(memo(2))

    worker.now = 10.0
    stats = worker.handle(GetRegistryStatistics())

    expired = events_named(logs, "messages_expired")
    assert [("a", 2, ["test.registry_worker_memo"])] == [
        (e["agent"], e["count"], e["kinds"]) for e in expired
    ]
    assert "warning" == expired[0]["log_level"]
    assert isinstance(stats, RegistryStatistics)
    assert (0, 2) == (stats.held, stats.expired)


def test_registration_sends_held_messages_in_order(logs: Logs) -> None:
    worker, host = start()
    worker.handle(memo(1))
    worker.handle(memo(2))

    reply = worker.handle(RegisterAgent(card=card("a")))

    assert isinstance(reply, AgentRegistered)
    assert 2 == reply.delivered
    assert [("root/agents/a", Memo(n=1)), ("root/agents/a", Memo(n=2))] == host.sent
    assert [2] == [e["count"] for e in events_named(logs, "held_messages_delivered")]


def test_backpressure_postpones_the_rest_to_the_next_message() -> None:
    worker, host = start()
    for n in range(3):
        worker.handle(memo(n))
    host.refuse_after = 1

    reply = worker.handle(RegisterAgent(card=card("a")))
    held = worker.handle(memo(3))
    host.refuse_after = None
    worker.handle(ListAgents())

    assert isinstance(reply, AgentRegistered)
    assert 1 == reply.delivered
    assert isinstance(held, MessageHeld)  # behind the postponed ones, to keep the order
    assert [Memo(n=n) for n in range(4)] == [m for _p, m in host.sent]


def test_a_forward_refused_by_backpressure_is_held() -> None:
    worker, host = start()
    worker.handle(RegisterAgent(card=card("a")))
    host.refuse_after = 0

    reply = worker.handle(memo(1))

    assert isinstance(reply, MessageHeld)
    host.refuse_after = None
    worker.handle(ListAgents())
    assert [("root/agents/a", Memo(n=1))] == host.sent


def test_messages_to_a_registered_agent_are_forwarded() -> None:
    worker, host = start()
    worker.handle(RegisterAgent(card=card("a")))

    reply = worker.handle(memo(7))

    assert MessageForwarded(name="a", path="root/agents/a") == reply
    assert [("root/agents/a", Memo(n=7))] == host.sent


def test_bad_commands_get_typed_errors_and_the_worker_carries_on() -> None:
    worker, _host = start()

    unknown = worker.handle(GetAgent(name="nobody"))
    status = worker.handle(UpdateStatus(name="nobody", status="busy"))
    invalid = worker.handle(RegisterAgent(card=card("a", version="")))
    foreign = worker.handle(WhichChildren())

    assert isinstance(unknown, ErrorReply)
    assert "UnknownAgent" == unknown.error
    assert isinstance(status, ErrorReply)
    assert "UnknownAgent" == status.error
    assert isinstance(invalid, ErrorReply)
    assert ("InvalidCard", True) == (invalid.error, "version" in invalid.message)
    assert isinstance(foreign, ErrorReply)
    assert "NotSupported" == foreign.error
    assert isinstance(worker.handle(ListAgents()), Message)


def test_an_exit_event_removes_the_card(logs: Logs) -> None:
    worker, _host = start()
    worker.handle(RegisterAgent(card=card("a")))

    worker.handle(event(7, "child_exited", "a"))

    assert isinstance(worker.handle(GetAgent(name="a")), ErrorReply)
    removed = events_named(logs, "agent_removed")
    assert [("a", "child_exited")] == [(e["agent"], e["supervision_event"]) for e in removed]


def test_non_exit_events_and_other_paths_leave_cards_alone() -> None:
    worker, _host = start()
    worker.handle(RegisterAgent(card=card("a")))

    worker.handle(event(1, "child_restarted", "a"))
    worker.handle(event(2, "child_exited", "ab"))
    worker.handle(event(3, "child_exited", "registry", supervisor="root/system"))

    assert isinstance(worker.handle(GetAgent(name="a")), AgentFound)


def test_sync_events_answers_once_the_event_is_applied() -> None:
    worker, host = start()
    worker.handle(event(1, "child_started", "x"))

    now = worker.handle(SyncEvents(seq=1))
    later = worker.handle(SyncEvents(seq=3))
    worker.handle(event(2, "child_started", "y"))
    before = [list(d) for d in host.deferred]
    worker.handle(event(3, "child_started", "z"))

    assert EventsSynced(seq=1) == now
    assert later is None
    assert [[]] == before
    assert [[EventsSynced(seq=3)]] == host.deferred


def test_sync_events_beyond_the_limit_abandon_the_oldest() -> None:
    worker, host = start(max_syncs=1)

    worker.handle(SyncEvents(seq=5))
    worker.handle(SyncEvents(seq=6))

    first = host.deferred[0]
    assert 1 == len(first)
    assert isinstance(first[0], ErrorReply)
    assert "SyncAbandoned" == first[0].error
    assert [] == host.deferred[1]


def test_a_sweep_is_scheduled_at_the_next_deadline(logs: Logs) -> None:
    worker, host = start(hold_seconds=30)
    worker.now = 5.0
    worker.handle(memo(1))
    worker.now = 6.0
    worker.handle(memo(2))  # a timer for an earlier deadline is pending: no second one
    scheduled = dict(host.timers)

    worker.now = 35.0
    worker.handle(_Sweep())

    assert {1: (30.0, ("call_later", _Sweep()))} == scheduled
    assert (1.0, ("call_later", _Sweep())) == host.timers[2]
    assert [1] == [e["count"] for e in events_named(logs, "messages_expired")]


def test_an_earlier_deadline_replaces_the_pending_sweep() -> None:
    worker, host = start(hold_seconds=30)
    worker.handle(RegisterAgent(card=card("a")))
    worker.now = 20.0
    worker.handle(memo(1))  # forwarded: nothing held, no timer
    worker.handle(DeliverToAgent.wrap("b", Memo(n=2)))  # held until 50
    worker.now = 21.0

    worker.on_undelivered("root/agents/a", [Memo(n=1)], "exited")  # held until 51: later
    no_change = dict(host.timers)

    assert {1: (30.0, ("call_later", _Sweep()))} == no_change
    assert [] == host.cancelled


def test_undelivered_messages_are_held_again(logs: Logs) -> None:
    worker, host = start()
    worker.handle(RegisterAgent(card=card("a")))
    worker.handle(memo(1))

    worker.on_undelivered("root/agents/a", [Memo(n=1)], "exited")
    found = worker.handle(GetAgent(name="a"))
    worker.handle(RegisterAgent(card=card("a")))

    assert isinstance(found, AgentFound)
    assert "unavailable" == found.card.status
    assert [Memo(n=1), Memo(n=1)] == [m for _p, m in host.sent]
    assert [1] == [e["count"] for e in events_named(logs, "messages_undelivered")]


def test_stopping_reports_held_messages_as_discarded(logs: Logs) -> None:
    worker, host = start()
    worker.handle(memo(1))
    worker.handle(SyncEvents(seq=10))

    worker.on_stop("shutdown")

    assert [("a", 1)] == [
        (e["agent"], e["count"]) for e in events_named(logs, "messages_discarded")
    ]
    assert "SyncAbandoned" == host.deferred[0][0].error  # type: ignore[attr-defined]
