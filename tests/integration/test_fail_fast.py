"""Requests fail fast: a request whose receiver exits before answering fails at once with
ActorExited (the reason says why), acknowledged or not, from the Runtime, from a worker's
``request``, and for a deferred reply of a worker that exits."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import ActorCrashed, ActorExited, Runtime
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.conftest import StartTree
from tests.integration._failfast_workers import (
    Block,
    Boom,
    GetOutcome,
    Outcome,
    Park,
    Parked,
    Via,
)

WORKERS = "tests.integration._failfast_workers"


def _root() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="blocker", start=f"{WORKERS}:Blocker"),
            ChildSpec(id="relay", start=f"{WORKERS}:Relay"),
        ],
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "blocking"
    os.mkfifo(path)
    return path


@pytest.fixture
def killer(fifo: Path) -> Iterator[threading.Thread]:
    """A thread that kills the blocker as soon as it reports (through the FIFO) that it blocks."""

    def kill_when_blocked() -> None:
        with fifo.open() as reader:  # returns when the blocker opens the FIFO to write
            pid = int(reader.read())
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill_when_blocked, daemon=True)
    thread.start()
    yield thread
    thread.join(timeout=30)


@pytest.fixture
def tcp_tree(tmp_path: Path) -> Iterator[Runtime]:
    system = SystemConfig(base="multiprocTCPBase", state_dir=str(tmp_path / "state"))
    with Runtime.start(Topology(system=system, root=_root())) as rt:
        yield rt


@pytest.mark.integration
def test_an_ask_to_an_actor_killed_while_handling_it_fails_at_once(
    tcp_tree: Runtime, fifo: Path, killer: threading.Thread
) -> None:
    rt = tcp_tree

    with pytest.raises(ActorExited) as caught:
        rt.ask("root/blocker", Block(fifo=str(fifo)), timeout=60)

    assert not isinstance(caught.value, ActorCrashed)
    assert "killed" == caught.value.reason


@pytest.mark.integration
def test_a_workers_request_fails_when_the_receiver_dies_after_taking_it(
    tcp_tree: Runtime, fifo: Path, killer: threading.Thread
) -> None:
    rt = tcp_tree

    rt.tell("root/relay", Via(path="root/blocker", what="block", fifo=str(fifo)))
    outcome = rt.ask("root/relay", GetOutcome(), timeout=60)

    assert isinstance(outcome, Outcome)
    assert ("ActorExited", "killed") == (outcome.error, outcome.reason)


def _wait_parked(rt: Runtime) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = rt.ask("root/blocker", Parked(), timeout=10)
        assert isinstance(reply, Parked)
        if reply.n:
            return
    pytest.fail("the Park request never reached the blocker")


def test_a_deferred_reply_fails_when_its_worker_crashes_on_another_message(
    start_tree: StartTree,
) -> None:
    rt = start_tree(_root())
    rt.tell("root/relay", Via(path="root/blocker", what="park"))
    _wait_parked(rt)

    with pytest.raises(ActorCrashed):
        rt.ask("root/blocker", Boom(), timeout=10)
    outcome = rt.ask("root/relay", GetOutcome(), timeout=30)

    assert isinstance(outcome, Outcome)
    assert "ActorExited" == outcome.error
    assert "error:ValueError: boom" == outcome.reason


def test_a_runtime_ask_parked_by_a_worker_that_stops_fails_with_its_reason(
    start_tree: StartTree,
) -> None:
    """The Runtime's own deferred ask fails when the worker is terminated (reason shutdown)."""
    rt = start_tree(_root())
    rt.tell("root/relay", Via(path="root/blocker", what="park"))
    _wait_parked(rt)

    rt.terminate_child("root", "blocker")
    outcome = rt.ask("root/relay", GetOutcome(), timeout=30)

    assert isinstance(outcome, Outcome)
    assert ("ActorExited", "shutdown") == (outcome.error, outcome.reason)
    assert Park  # the parked request above
