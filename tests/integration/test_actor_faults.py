"""Faults inside an actor: a kill at each crash point (before the handler, after the handler
before its reply, after the reply) and a hang, on multiprocTCPBase with real processes; on
simpleSystemBase a kill is a crash."""

from __future__ import annotations

import pytest

from actors import ActorCrashed, ActorExited, ActorNotFound, AskTimeout, NotSupported, Runtime
from protocols.faults import ActorFault, MessageFault, PickFixed
from protocols.supervision import KILLED, SupervisionEvent
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._fast_workers import Burst, Seen, WaitSeen
from tests.integration._workers import Crash, Ping, Pong

W = "tests.integration._workers"
F = "tests.integration._fast_workers"


def _tree() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="echo", start=f"{W}:Echo"),
            ChildSpec(id="sink", start=f"{F}:Sink"),
            ChildSpec(id="source", start=f"{F}:Source"),
        ],
    )


def _exited(rt: Runtime, child_id: str, after: int) -> str | None:
    return rt.wait_event("child_exited", child_id=child_id, after=after, timeout=20).reason


def _last_seq(rt: Runtime) -> int:
    return max((e.seq for e in rt.events()), default=0)


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_kill_after_the_reply_answers_then_dies(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    before = _last_seq(rt)
    pid = next(c.pid for c in rt.which_children("root") if c.id == "echo")
    with rt.faults.inject(
        ActorFault(fault="kill", target="root/echo", message_kind="test.ping", point="after_reply")
    ):
        reply = rt.ask("root/echo", Ping(token="last words"), timeout=10)
        assert isinstance(reply, Pong) and "last words" == reply.token
        assert KILLED == _exited(rt, "echo", before)
    rt.wait_event("child_restarted", child_id="echo", after=before, timeout=20)
    again = rt.ask("root/echo", Ping(token="again"), timeout=10)
    assert isinstance(again, Pong)
    assert pid != next(c.pid for c in rt.which_children("root") if c.id == "echo")


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
@pytest.mark.parametrize("point", ["before_handler", "after_handler"])
def test_kill_before_the_reply_fails_the_ask_at_once(start_tree: StartTree, point: str) -> None:
    rt = start_tree(_tree())
    before = _last_seq(rt)
    with (
        rt.faults.inject(
            {"fault": "kill", "target": "root/echo", "message_kind": "test.ping", "point": point}
        ),
        pytest.raises(ActorExited) as caught,
    ):
        rt.ask("root/echo", Ping(token="x"), timeout=30)
    assert KILLED == caught.value.reason
    assert KILLED == _exited(rt, "echo", before)


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
@pytest.mark.parametrize("point", ["before_handler", "after_handler"])
def test_a_kill_on_a_link_keeps_the_ledger_balanced(start_tree: StartTree, point: str) -> None:
    """Messages the killed sink handled count as handled (its tally), the rest are reported
    undelivered by the source (its handled marks): nothing is lost or counted twice."""
    rt = start_tree(_tree())
    before = _last_seq(rt)
    with rt.faults.inject(
        {
            "fault": "kill",
            "target": "root/sink",
            "message_kind": "fast.item",
            "nth": 40,
            "point": point,
        }
    ):
        rt.ask("root/source", Burst(target="root/sink", count=100), timeout=30)
        assert KILLED == _exited(rt, "sink", before)
        rt.wait_event("child_restarted", child_id="sink", after=before, timeout=20)
    rt.ask("root/source", Burst(target="root/sink", start=100, count=10), timeout=30)
    seen = rt.ask("root/sink", WaitSeen(count=10), timeout=30)
    assert isinstance(seen, Seen)
    ledger = rt.ledger()
    assert ledger.balanced, ledger.total
    assert 0 == ledger.unreported
    handled_before_kill = 40 if point == "after_handler" else 39
    assert ledger.total.handled >= handled_before_kill + 10
    assert ledger.total.undelivered + ledger.total.handled == ledger.total.sent


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_hang_blocks_the_handler_for_its_seconds(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    hang = ActorFault(
        fault="hang", target="root/echo", message_kind="test.ping", nth=1, seconds=1.5
    )
    with rt.faults.inject(hang):
        with pytest.raises(AskTimeout):
            rt.ask("root/echo", Ping(token="hung"), timeout=0.5)
        reply = rt.ask("root/echo", Ping(token="after"), timeout=10)
    assert isinstance(reply, Pong) and "after" == reply.token


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_a_hang_without_seconds_lasts_until_healed(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    handle = rt.faults.inject(
        ActorFault(fault="hang", target="root/echo", message_kind="test.ping", nth=1)
    )
    with pytest.raises(AskTimeout):
        rt.ask("root/echo", Ping(token="hung"), timeout=1.0)
    handle.heal()
    reply = rt.ask("root/echo", Ping(token="after"), timeout=10)
    assert isinstance(reply, Pong) and "after" == reply.token
    journal = rt.faults.journal()
    assert ["hang"] == [e.fault for e in journal.injected if e.fault_id == handle.id]


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_kill_now_picks_its_targets_and_each_restarts(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    before = _last_seq(rt)
    pids = {c.id: c.pid for c in rt.which_children("root")}
    handle = rt.faults.inject(
        ActorFault(fault="kill", target="root/*", pick=PickFixed(fixed=2), seed=7)
    )
    assert 2 == len(handle.paths)
    assert set(handle.paths) <= {"root/echo", "root/sink", "root/source"}
    for path in handle.paths:
        child_id = path.rpartition("/")[2]
        assert KILLED == _exited(rt, child_id, before)
        rt.wait_event("child_restarted", child_id=child_id, after=before, timeout=20)
    now = {c.id: c.pid for c in rt.which_children("root")}
    killed = {p.rpartition("/")[2] for p in handle.paths}
    assert all(now[c] != pids[c] for c in killed)
    assert all(now[c] == pids[c] for c in set(pids) - killed)
    injected = [e for e in rt.faults.journal().injected if e.fault_id == handle.id]
    assert sorted(handle.paths) == sorted(e.target for e in injected)


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_pause_stops_the_process_until_healed(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    pause = ActorFault(fault="pause", target="root/echo", seconds=60)
    with rt.faults.inject(pause), pytest.raises(AskTimeout):
        rt.ask("root/echo", Ping(token="stopped"), timeout=1.0)
    reply = rt.ask("root/echo", Ping(token="resumed"), timeout=10)
    assert isinstance(reply, Pong)
    assert "restarting" not in {c.status for c in rt.which_children("root")}


def test_actor_faults_a_single_process_cannot_take_are_refused(
    start_tree: StartTree, base: str
) -> None:
    if base != "simpleSystemBase":
        pytest.skip("multiprocTCPBase takes them (the tests above)")
    rt = start_tree(_tree())
    with pytest.raises(NotSupported, match="multiprocTCPBase"):
        rt.faults.inject(ActorFault(fault="kill", target="root/echo"))
    with pytest.raises(NotSupported, match="seconds"):
        rt.faults.inject(ActorFault(fault="hang", target="root/echo"))
    with pytest.raises(ActorNotFound):
        rt.faults.inject(ActorFault(fault="hang", target="root/nobody*", seconds=1))


def test_on_simple_system_base_a_kill_is_a_crash(start_tree: StartTree, base: str) -> None:
    if base != "simpleSystemBase":
        pytest.skip("multiprocTCPBase kills the process (the tests above)")
    rt = start_tree(_tree())
    kill = ActorFault(fault="kill", target="root/echo", point="before_handler", nth=1)
    with rt.faults.inject(kill), pytest.raises(ActorCrashed, match="InjectedFault"):
        rt.ask("root/echo", Ping(token="x"), timeout=5)
    assert isinstance(rt.ask("root/echo", Ping(token="y"), timeout=5), Pong)


def test_actor_fault_fields_go_with_their_kinds() -> None:
    with pytest.raises(ValueError, match="seconds"):
        ActorFault(fault="slow_start", target="root/echo")
    with pytest.raises(ValueError, match="point"):
        ActorFault(fault="hang", target="root/echo", point="after_reply")
    with pytest.raises(ValueError, match="trigger"):
        ActorFault(fault="pause", target="root/echo", nth=2)
    with pytest.raises(ValueError, match="fault"):
        MessageFault.model_validate({"fault": "kill", "target": "root/echo"})


def _crash_and_wait(rt: Runtime, event: str) -> list[SupervisionEvent]:
    before = _last_seq(rt)
    with pytest.raises(ActorCrashed):
        rt.ask("root/echo", Crash(), timeout=10)
    rt.wait_event(event, child_id="echo", after=before, timeout=20)
    return [e for e in rt.events() if e.seq > before and e.child_id == "echo"]


def test_start_failure_fails_the_next_starts_then_lets_one_through(
    start_tree: StartTree,
) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject({"fault": "start_failure", "target": "root/echo", "max_total": 2}):
        events = _crash_and_wait(rt, "child_restarted")
    failed = [e for e in events if e.event == "start_failed"]
    assert 2 == len(failed)
    assert all("injected start failure" in (e.reason or "") for e in failed)
    assert isinstance(rt.ask("root/echo", Ping(token="up"), timeout=10), Pong)
    assert "restarting" not in {c.status for c in rt.which_children("root")}


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_slow_start_delays_the_restart_by_its_seconds(start_tree: StartTree) -> None:
    rt = start_tree(_tree())
    with rt.faults.inject({"fault": "slow_start", "target": "root/echo", "seconds": 0.5}):
        events = _crash_and_wait(rt, "child_restarted")
    exited = next(e for e in events if e.event == "child_exited")
    restarted = next(e for e in events if e.event == "child_restarted")
    assert restarted.time - exited.time >= 0.5


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_slow_shutdown_past_the_shutdown_time_is_killed(start_tree: StartTree) -> None:
    root = SupervisorSpec(
        id="root", children=[ChildSpec(id="echo", start=f"{W}:Echo", shutdown=0.3)]
    )
    rt = start_tree(root)
    before = _last_seq(rt)
    with rt.faults.inject({"fault": "slow_shutdown", "target": "root/echo", "seconds": 5}):
        rt.terminate_child("root", "echo", timeout=20)
    terminated = rt.wait_event("child_terminated", child_id="echo", after=before, timeout=20)
    assert KILLED == terminated.reason
