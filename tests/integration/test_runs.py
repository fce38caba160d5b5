"""The run manager in a live tree, on both bases: cascading stops that terminate agents, epochs,
owner isolation, and runs that survive a restart of the run manager."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import RequestRejected, Runtime
from actors.services.runs import RunStore
from protocols import Message
from protocols.runs import (
    AttachAgent,
    CompleteRun,
    CreateRun,
    FailRun,
    GetRun,
    GetRunStatistics,
    ListRuns,
    ResumeRun,
    RunInfo,
    Runs,
    RunsStopped,
    RunStatistics,
    StaleEpochIgnored,
    StopRun,
)
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Ping, Pong

R = "root/runs"
AGENTS = "root/agents"
OWNER = "alice"


def tree(agents_supervisor: str = AGENTS, **args: object) -> SupervisorSpec:
    """Agents under a simple_one_for_one supervisor, and the run manager beside them."""
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            SupervisorSpec(
                id="agents",
                strategy="simple_one_for_one",
                intensity=10,
                template=ChildSpec(id="agent", start="tests.integration._workers:Echo"),
            ),
            ChildSpec(
                id="runs",
                start="actors.services.runs:RunManager",
                args={"agents_supervisor": agents_supervisor, **args},
            ),
        ],
    )


@pytest.fixture
def rt(start_tree: StartTree) -> Runtime:
    return start_tree(tree())


def run(rt: Runtime, message: Message) -> RunInfo:
    reply = rt.ask(R, message)
    assert isinstance(reply, RunInfo), reply
    return reply


def start_agent(rt: Runtime) -> str:
    return f"{AGENTS}/{rt.start_child(AGENTS, {}).id}"


def live_agents(rt: Runtime) -> set[str]:
    return {f"{AGENTS}/{c.id}" for c in rt.which_children(AGENTS)}


def test_stopping_a_parent_stops_every_descendant_and_terminates_their_agents(rt: Runtime) -> None:
    parent = run(rt, CreateRun(owner=OWNER, goal="ship it"))
    child_a = run(rt, CreateRun(owner=OWNER, goal="part a", parent=parent.id))
    child_b = run(rt, CreateRun(owner=OWNER, goal="part b", parent=parent.id))
    grandchild = run(rt, CreateRun(owner=OWNER, goal="part a.1", parent=child_a.id))
    bystander = run(rt, CreateRun(owner=OWNER, goal="unrelated"))
    family = [parent, child_a, child_b, grandchild]
    agents = {r.id: start_agent(rt) for r in [*family, bystander]}
    for r in [*family, bystander]:
        run(rt, AttachAgent(run_id=r.id, owner=OWNER, agent_path=agents[r.id]))
    assert set(agents.values()) == live_agents(rt)

    reply = rt.ask(R, StopRun(run_id=parent.id, owner=OWNER))

    assert isinstance(reply, RunsStopped)
    family_ids = {r.id for r in family}
    family_agents = {agents[r] for r in family_ids}
    assert family_ids == {r.id for r in reply.stopped}
    assert family_ids == set(reply.subtree)
    assert family_agents == set(reply.terminated)
    assert {} == reply.unconfirmed
    assert {agents[bystander.id]} == live_agents(rt)
    for r in family:
        assert "stopped" == run(rt, GetRun(run_id=r.id, owner=OWNER)).status
    assert "running" == run(rt, GetRun(run_id=bystander.id, owner=OWNER)).status
    assert isinstance(rt.ask(agents[bystander.id], Ping(token="still here")), Pong)
    stats = rt.ask(R, GetRunStatistics())
    assert RunStatistics(running=1, stopped=4, total=5) == stats


def test_a_completion_from_an_older_epoch_is_ignored_after_resume(rt: Runtime) -> None:
    first = run(rt, CreateRun(owner=OWNER, goal="flaky"))
    run(rt, FailRun(run_id=first.id, owner=OWNER, epoch=1, reason="model timed out"))
    resumed = run(rt, ResumeRun(run_id=first.id, owner=OWNER))

    late = rt.ask(R, CompleteRun(run_id=first.id, owner=OWNER, epoch=1, result={"old": True}))

    assert 2 == resumed.epoch
    assert "running" == resumed.status
    assert isinstance(late, StaleEpochIgnored)
    assert "stale epoch ignored" in late.detail
    assert resumed == late.run
    assert resumed == run(rt, GetRun(run_id=first.id, owner=OWNER))
    done = run(rt, CompleteRun(run_id=first.id, owner=OWNER, epoch=2, result={"ok": 1}))
    assert ("completed", {"ok": 1}) == (done.status, done.result)


def test_another_owner_is_told_the_run_is_unknown_exactly_as_for_a_missing_run(
    rt: Runtime,
) -> None:
    mine = run(rt, CreateRun(owner=OWNER, goal="private"))
    commands = [
        GetRun(run_id=mine.id, owner="mallory"),
        StopRun(run_id=mine.id, owner="mallory"),
        ResumeRun(run_id=mine.id, owner="mallory"),
        CompleteRun(run_id=mine.id, owner="mallory", epoch=1),
        FailRun(run_id=mine.id, owner="mallory", epoch=1, reason="x"),
        AttachAgent(run_id=mine.id, owner="mallory", agent_path=f"{AGENTS}/agent-9"),
        CreateRun(owner="mallory", goal="hijack", parent=mine.id),
    ]

    for command in commands:
        with pytest.raises(RequestRejected) as theirs:
            rt.ask(R, command)
        with pytest.raises(RequestRejected) as missing:
            rt.ask(
                R,
                command.model_copy(
                    update={"run_id" if hasattr(command, "run_id") else "parent": "run-999"}
                ),
            )
        assert "UnknownRun" == theirs.value.error
        assert (missing.value.error, missing.value.detail.replace("run-999", mine.id)) == (
            theirs.value.error,
            theirs.value.detail,
        )

    assert Runs(runs=[]) == rt.ask(R, ListRuns(owner="mallory"))
    assert "running" == run(rt, GetRun(run_id=mine.id, owner=OWNER)).status


def test_runs_survive_a_restart_of_the_run_manager(rt: Runtime) -> None:
    parent = run(rt, CreateRun(owner=OWNER, goal="long"))
    child = run(rt, CreateRun(owner=OWNER, goal="sub", parent=parent.id))
    run(rt, FailRun(run_id=child.id, owner=OWNER, epoch=1, reason="tool error"))
    resumed = run(rt, ResumeRun(run_id=child.id, owner=OWNER))
    before = rt.ask(R, ListRuns(owner=OWNER))

    rt.terminate_child("root", "runs")
    rt.restart_child("root", "runs")

    assert before == rt.ask(R, ListRuns(owner=OWNER))
    stale = rt.ask(R, CompleteRun(run_id=child.id, owner=OWNER, epoch=1))
    assert isinstance(stale, StaleEpochIgnored)
    assert resumed == stale.run
    third = run(rt, CreateRun(owner=OWNER, goal="after restart"))
    assert third.id not in {parent.id, child.id}


def test_an_agent_already_gone_is_reported_as_such(rt: Runtime) -> None:
    r = run(rt, CreateRun(owner=OWNER, goal="g"))
    gone, alive = start_agent(rt), start_agent(rt)
    run(rt, AttachAgent(run_id=r.id, owner=OWNER, agent_path=gone))
    run(rt, AttachAgent(run_id=r.id, owner=OWNER, agent_path=alive))
    rt.terminate_child(AGENTS, gone.rsplit("/", 1)[-1])

    reply = rt.ask(R, StopRun(run_id=r.id, owner=OWNER, wait=30.0), timeout=35.0)

    assert isinstance(reply, RunsStopped)
    assert [gone] == reply.already_gone
    assert [alive] == reply.terminated
    assert set() == live_agents(rt)
    assert 0 == rt.ask(R, GetRunStatistics()).pending_terminations  # type: ignore[attr-defined]


def test_agents_that_cannot_be_terminated_are_reported_unconfirmed(
    start_tree: StartTree,
) -> None:
    rt = start_tree(tree(agents_supervisor="root/nowhere"))
    r = run(rt, CreateRun(owner=OWNER, goal="g", agents=["root/nowhere/agent-1"]))

    reply = rt.ask(R, StopRun(run_id=r.id, owner=OWNER, wait=3.0))

    assert isinstance(reply, RunsStopped)
    assert ["root/nowhere/agent-1"] == list(reply.unconfirmed)
    assert [r.id] == [s.id for s in reply.stopped]
    assert 1 == rt.ask(R, GetRunStatistics()).pending_terminations  # type: ignore[attr-defined]


def test_bad_input_gets_typed_errors_and_the_run_manager_keeps_running(rt: Runtime) -> None:
    r = run(rt, CreateRun(owner=OWNER, goal="g"))
    refusals = [
        (AttachAgent(run_id=r.id, owner=OWNER, agent_path="root/elsewhere/a1"), "InvalidAgentPath"),
        (CompleteRun(run_id=r.id, owner=OWNER, epoch=2), "InvalidEpoch"),
        (ResumeRun(run_id=r.id, owner=OWNER), "InvalidTransition"),
        (CreateRun(owner=OWNER, goal="g", agents=[AGENTS]), "InvalidAgentPath"),
    ]

    for command, error in refusals:
        with pytest.raises(RequestRejected) as exc:
            rt.ask(R, command)
        assert error == exc.value.error
        assert r.id in exc.value.detail or "agent" in exc.value.detail

    assert r == run(rt, GetRun(run_id=r.id, owner=OWNER))


def test_a_termination_not_confirmed_before_a_crash_is_retried_at_the_next_start(
    start_tree: StartTree,
    tmp_path: Path,
) -> None:
    """A StopRun committed its outbox, then the run manager died before terminating the agent."""
    db = tmp_path / "runs.db"
    rt = start_tree(tree(db=str(db)))
    agent = start_agent(rt)
    r = run(rt, CreateRun(owner=OWNER, goal="g", agents=[agent]))
    rt.terminate_child("root", "runs")
    store = RunStore(db)
    store.commit([r.model_copy(update={"status": "stopped"})], terminate=[agent])
    store.close()

    rt.restart_child("root", "runs")

    rt.wait_event("child_terminated", child_id=agent.rsplit("/", 1)[-1], timeout=10.0)
    assert set() == live_agents(rt)
    assert "stopped" == run(rt, GetRun(run_id=r.id, owner=OWNER)).status


def test_terminations_are_retried_until_the_agents_supervisor_answers(
    start_tree: StartTree,
) -> None:
    """The agents' supervisor starts after the StopRun (as root/agents starts after root/system)."""
    rt = start_tree(tree(agents_supervisor="root/late", terminate_retry=0.2))
    r = run(rt, CreateRun(owner=OWNER, goal="g", agents=["root/late/agent-1"]))
    first = rt.ask(R, StopRun(run_id=r.id, owner=OWNER, wait=3.0))
    assert isinstance(first, RunsStopped)
    assert ["root/late/agent-1"] == list(first.unconfirmed)

    rt.start_child(
        "root",
        SupervisorSpec(
            id="late",
            children=[  # starts with its agent
                ChildSpec(id="agent-1", start="tests.integration._workers:Echo")
            ],
        ),
    )

    rt.wait_event("child_terminated", child_id="agent-1", timeout=10.0)
    assert ["stopped"] == [c.status for c in rt.which_children("root/late")]
