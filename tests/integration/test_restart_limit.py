"""Per-child restart limits (restart_limit): a child over its own limit stays down alone, a
success resets its count, and its restarts do not count toward the supervisor's intensity."""

from __future__ import annotations

import pytest

from actors import ActorCrashed, Runtime
from protocols.topology import ChildSpec, RestartLimit, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Crash, Ping, Pong, Succeed

ECHO = "tests.integration._workers:Echo"
LIMIT = RestartLimit(max_restarts=2, reset_on="success", on_limit="stop")


def _crash_and_wait(rt: Runtime, path: str, after: int) -> int:
    """Crash the worker at ``path`` and return the seq of its child_exited event."""
    with pytest.raises(ActorCrashed):
        rt.ask(path, Crash())
    child_id = path.rsplit("/", 1)[-1]
    return rt.wait_event("child_exited", child_id=child_id, after=after, timeout=10).seq


def _restarted(rt: Runtime, child_id: str, after: int) -> int:
    return rt.wait_event("child_restarted", child_id=child_id, after=after, timeout=10).seq


def test_a_child_over_its_limit_is_stopped_alone_while_its_sibling_runs_on(
    start_tree: StartTree,
) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=1,  # the limited child's restarts must not count toward it
            period=30,
            children=[
                ChildSpec(id="a", start=ECHO, restart_limit=LIMIT),
                ChildSpec(id="b", start=ECHO, restart_limit=LIMIT),
            ],
        )
    )
    seq = 0
    for _ in range(2):
        seq = _restarted(rt, "a", _crash_and_wait(rt, "root/a", seq))
    last = _crash_and_wait(rt, "root/a", seq)
    limited = rt.wait_event("restart_limit_exceeded", child_id="a", after=last, timeout=10)
    children = {c.id: c.status for c in rt.which_children("root")}
    pong = rt.ask("root/b", Ping(token="still here"))

    assert {"a": "stopped", "b": "running"} == children
    assert isinstance(pong, Pong)
    assert "still here" == pong.token
    assert limited.reason is not None
    assert limited.reason.startswith("error:ValueError")
    assert rt.exit_reason is None
    assert not [e for e in rt.events() if e.event in ("intensity_exceeded", "supervisor_shutdown")]


def test_a_success_resets_the_count(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=1,
            period=30,
            children=[ChildSpec(id="a", start=ECHO, restart_limit=LIMIT)],
        )
    )
    seq = 0
    for _ in range(2):
        seq = _restarted(rt, "a", _crash_and_wait(rt, "root/a", seq))
    assert isinstance(rt.ask("root/a", Succeed()), Pong)
    for _ in range(2):
        seq = _restarted(rt, "a", _crash_and_wait(rt, "root/a", seq))
    pong = rt.ask("root/a", Ping(token="after four crashes"))

    assert isinstance(pong, Pong)
    assert "after four crashes" == pong.token
    assert not [e for e in rt.events() if e.event == "restart_limit_exceeded"]


def test_a_pool_child_over_its_limit_is_removed_and_the_others_keep_running(
    start_tree: StartTree,
) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            children=[
                SupervisorSpec(
                    id="pool",
                    strategy="simple_one_for_one",
                    intensity=1,
                    period=30,
                    template=ChildSpec(
                        id="agent",
                        start=ECHO,
                        restart="transient",
                        restart_limit=RestartLimit(max_restarts=1),
                    ),
                )
            ],
        )
    )
    first = rt.start_child("root/pool", {})
    second = rt.start_child("root/pool", {})
    seq = _restarted(rt, first.id, _crash_and_wait(rt, f"root/pool/{first.id}", 0))
    last = _crash_and_wait(rt, f"root/pool/{first.id}", seq)
    rt.wait_event("restart_limit_exceeded", child_id=first.id, after=last, timeout=10)
    children = [c.id for c in rt.which_children("root/pool")]
    pong = rt.ask(f"root/pool/{second.id}", Ping(token="other run"))

    assert [second.id] == children
    assert isinstance(pong, Pong)
    assert "other run" == pong.token


def test_on_limit_escalate_makes_the_supervisor_give_up(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=5,
            children=[
                SupervisorSpec(
                    id="sub",
                    intensity=5,
                    children=[
                        ChildSpec(
                            id="a",
                            start=ECHO,
                            restart_limit=RestartLimit(max_restarts=0, on_limit="escalate"),
                        )
                    ],
                )
            ],
        )
    )

    last = _crash_and_wait(rt, "root/sub/a", 0)
    limited = rt.wait_event("restart_limit_exceeded", child_id="a", after=last, timeout=10)
    exited = rt.wait_event("child_exited", child_id="sub", after=last, timeout=10)

    assert "root/sub" == limited.supervisor
    assert "shutdown" == exited.reason
