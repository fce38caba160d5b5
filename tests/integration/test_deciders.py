"""Deciders (Akka-style Restart / Stop / Escalate from the exit reason) and restart backoff."""

from __future__ import annotations

import pytest

from actors import ActorCrashed
from protocols.topology import Backoff, ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Crash, Ping, Pong

ECHO = "tests.integration._workers:Echo"
DECIDER = "tests.integration._workers:decide_by_reason"


def _crash(rt: object, path: str, error: str) -> None:
    with pytest.raises(ActorCrashed):
        rt.ask(path, Crash(error=error))  # type: ignore[attr-defined]


def test_a_restart_directive_with_a_delay_restarts_after_it(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root", intensity=5, children=[ChildSpec(id="a", start=ECHO, decider=DECIDER)]
        )
    )

    _crash(rt, "root/a", "ValueError")
    exited = rt.wait_event("child_exited", child_id="a")
    restarting = {c.id: c.status for c in rt.which_children("root")}
    restarted = rt.wait_event("child_restarted", child_id="a", timeout=5)

    assert "restarting" == restarting["a"]
    assert restarted.time - exited.time >= 0.2
    assert isinstance(rt.ask("root/a", Ping()), Pong)


def test_a_stop_directive_keeps_a_permanent_child_down(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=5,
            children=[
                ChildSpec(id="a", start=ECHO, decider=DECIDER),
                ChildSpec(id="b", start=ECHO),
            ],
        )
    )

    _crash(rt, "root/a", "KeyError")
    rt.wait_event("child_exited", child_id="a")
    children = {c.id: c.status for c in rt.which_children("root")}

    assert {"a": "stopped", "b": "running"} == children
    assert not [e for e in rt.events() if e.event == "child_restarted"]


def test_an_escalate_directive_makes_the_supervisor_exit_with_the_reason(
    start_tree: StartTree,
) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=5,
            children=[
                SupervisorSpec(id="sub", children=[ChildSpec(id="a", start=ECHO, decider=DECIDER)]),
            ],
        )
    )

    _crash(rt, "root/sub/a", "RuntimeError")
    exited = rt.wait_event("child_exited", child_id="sub")
    rt.wait_event("child_restarted", child_id="sub")

    assert "error:RuntimeError: boom" == exited.reason
    assert isinstance(rt.ask("root/sub/a", Ping()), Pong)


def test_backoff_delays_repeated_restarts(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=10,
            period=30,
            children=[ChildSpec(id="a", start=ECHO, backoff=Backoff(base=0.1, cap=1.0))],
        )
    )
    gaps = []
    last = 0
    for _ in range(3):
        _crash(rt, "root/a", "ValueError")
        exited = rt.wait_event("child_exited", child_id="a", after=last)
        restarted = rt.wait_event("child_restarted", child_id="a", after=exited.seq)
        gaps.append(restarted.time - exited.time)
        last = restarted.seq

    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4
