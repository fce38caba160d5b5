"""Runs that hold under stops, kills, slow models and changed limits (issue 13, items 1-5, 10)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from actors.model.server import ModelServer
from protocols.access import AuditStatistics, EnsurePermissions, GetAuditStats
from protocols.agent import AgentResult, GoalSpec, RunGoal
from protocols.orchestrator import (
    CancelRun,
    GetRunProgress,
    PhaseEvent,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    SetMaxExecutionTime,
    WaitRun,
)
from protocols.registry import AgentFound, GetAgent
from protocols.runs import ListRuns, Runs, RunsStopped, StopRun
from protocols.scheduler import ListTasks, Tasks
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._orchestrator_tree import ORCH, orchestrator_tree

pytestmark = pytest.mark.integration

RUNS = "root/system/runs"


@pytest.fixture
def base() -> str:
    """Real processes: a model call blocks only its own agent's process."""
    return "multiprocTCPBase"


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


def _tree(
    model: ModelServer, extra: list[ChildSpec] | None = None, **orchestrator: Any
) -> SupervisorSpec:
    return orchestrator_tree(model.url, extra, **orchestrator)


def _start(rt: Runtime, request: RunGoalRequest) -> RunAccepted:
    accepted = rt.ask(ORCH, request)
    assert isinstance(accepted, RunAccepted)
    return accepted


def _events(rt: Runtime, run_id: str) -> list[PhaseEvent]:
    progress = rt.ask(ORCH, GetRunProgress(run_id=run_id))
    assert isinstance(progress, RunProgress)
    return progress.events


def _outcome(rt: Runtime, run_id: str, timeout: float) -> RunOutcome:
    outcome = rt.ask(ORCH, WaitRun(run_id=run_id, timeout=timeout), timeout=timeout + 5)
    assert isinstance(outcome, RunOutcome), outcome
    return outcome


def _hanging(
    rt: Runtime, model: ModelServer, word: str, ws: Path | None, **request: Any
) -> RunAccepted:
    """Start a run whose agent's model calls hang; return once the first one is held."""
    model.inject("hang", count=None, seconds=30, match=word)
    workspace = None if ws is None else str(ws)
    accepted = _start(
        rt, RunGoalRequest(goal=f"write a poem {word} to p.txt", workspace=workspace, **request)
    )
    assert model.wait_requests(1, timeout=10)
    return accepted


def _step(events: list[PhaseEvent], step: str) -> list[PhaseEvent]:
    return [e for e in events if e.detail.get("step") == step]


def test_a_cancelled_run_ends_stopped_and_starts_no_agent_after(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    accepted = _hanging(rt, model, "cancelled", tmp_path, evolutions=2, max_execution_time=60)

    began = time.monotonic()
    outcome = rt.ask(ORCH, CancelRun(run_id=accepted.run_id), timeout=20)
    took = time.monotonic() - began
    again = _outcome(rt, accepted.run_id, 5)
    events = _events(rt, accepted.run_id)
    runs = rt.ask(RUNS, ListRuns(owner="cli"))
    tasks = rt.ask("root/system/scheduler", ListTasks())

    assert isinstance(outcome, RunOutcome)
    assert ("stopped", False) == (outcome.status, outcome.success)
    assert outcome == again
    assert took < 10
    stop_at = next(e.n for e in events if e.detail.get("step") == "stopping")
    assert [] == [e for e in events if e.n > stop_at and e.phase in ("evaluation", "evolution")]
    assert [] == _step([e for e in events if e.n > stop_at], "agent_started")
    assert 1 == len(_step(events, "agent_started"))
    assert [] == rt.which_children("root/agents")
    assert isinstance(runs, Runs)
    assert ["stopped"] == [r.status for r in runs.runs]
    assert isinstance(tasks, Tasks)
    assert ["cancelled"] == [t.state for t in tasks.tasks]


def test_a_run_stopped_in_the_run_manager_ends_stopped_without_evolving(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    """StopRun from the run manager kills the agent; the orchestrator does not go on to
    evaluate, evolve and start new agents."""
    rt = start_tree(_tree(model))
    accepted = _hanging(rt, model, "halted", tmp_path, evolutions=2, max_execution_time=60)
    runs = rt.ask(RUNS, ListRuns(owner="cli"))
    assert isinstance(runs, Runs) and 1 == len(runs.runs)

    rt.ask(RUNS, StopRun(run_id=runs.runs[0].id, owner="cli"), timeout=10)
    outcome = _outcome(rt, accepted.run_id, 20)
    events = _events(rt, accepted.run_id)

    assert "stopped" == outcome.status
    assert 1 == len(_step(events, "agent_started"))
    assert [] == [e for e in events if e.phase == "evolution"]
    assert [] == rt.which_children("root/agents")


def test_an_agent_sigkilled_in_a_model_call_fails_the_run_promptly(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    accepted = _hanging(rt, model, "killed", tmp_path, evolutions=0, max_execution_time=60)
    started = rt.wait_event("child_started", supervisor="root/agents", timeout=10)
    pid = next(c.pid for c in rt.which_children("root/agents") if c.id == started.child_id)
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    outcome = _outcome(rt, accepted.run_id, 10)

    assert time.monotonic() - began < 10
    assert ("failed", False) == (outcome.status, outcome.success)
    assert outcome.result is not None and "agent failed" in (outcome.result.error or "")


def test_a_changed_limit_counts_from_the_agents_start_not_from_the_change(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    accepted = _hanging(rt, model, "measured", tmp_path, evolutions=0, max_execution_time=60)
    still = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=1.5), timeout=10)
    assert isinstance(still, RunProgress) and still.outcome is None  # running 1.5 s, limit 60

    rt.ask(ORCH, SetMaxExecutionTime(run_id=accepted.run_id, seconds=2.0))
    outcome = _outcome(rt, accepted.run_id, 20)
    events = _events(rt, accepted.run_id)
    started = _step(events, "agent_started")[0].time
    timed_out = _step(events, "timed_out")[0].time

    assert outcome.result is not None
    assert "maximum execution time" in (outcome.result.error or "")
    assert 2.0 - 0.1 <= timed_out - started < 2.0 + 1.0  # from the start: not 1.5 s + 2 s


def test_a_raised_limit_moves_the_agents_own_backstop_too(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    """Each model call takes 1.5 s: the agent's backstop for a 1 s limit (2.5 s) would cut the
    second call short; raised to 20 s, the agent's deadline moves with it and the run ends."""
    rt = start_tree(_tree(model))
    model.inject("hang", count=None, seconds=1.5, match="patient")
    accepted = _start(
        rt,
        RunGoalRequest(
            goal="write a haiku about patient actors to h.txt",
            workspace=str(tmp_path),
            evolutions=0,
            max_execution_time=1.0,
        ),
    )
    assert model.wait_requests(1, timeout=10)

    rt.ask(ORCH, SetMaxExecutionTime(run_id=accepted.run_id, seconds=20))
    outcome = _outcome(rt, accepted.run_id, 40)

    assert outcome.success, outcome
    assert (tmp_path / "h.txt").exists()
    assert [] == _step(_events(rt, accepted.run_id), "timed_out")


def test_the_deployment_default_changes_live_and_zero_is_unlimited(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    follows = _hanging(rt, model, "defaulted", None, evolutions=0)
    state_dir = Path(follows.workspace).parents[1]  # default: <state_dir>/workspaces/<run id>
    pinned = _start(
        rt,
        RunGoalRequest(
            goal="write a poem defaulted to q.txt",
            workspace=str(tmp_path / "b"),
            evolutions=0,
            max_execution_time=0,
        ),
    )
    assert model.wait_requests(2, timeout=10)

    rt.ask(ORCH, SetMaxExecutionTime(seconds=0.5))
    followed = _outcome(rt, follows.run_id, 20)
    unlimited = rt.ask(ORCH, WaitRun(run_id=pinned.run_id, timeout=2), timeout=10)
    settings = json.loads((state_dir / "orchestrator" / "settings.json").read_text())

    assert followed.result is not None
    assert "maximum execution time" in (followed.result.error or "")
    assert isinstance(unlimited, RunProgress) and unlimited.outcome is None
    assert {"max_execution_time": 0.5} == settings
    stopped = rt.ask(ORCH, CancelRun(run_id=pinned.run_id), timeout=20)
    assert isinstance(stopped, RunOutcome) and "stopped" == stopped.status


def test_the_orchestrator_answers_while_a_model_call_is_slow(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    model.inject("hang", count=None, seconds=30, match="sluggish")
    accepted = _start(
        rt,
        RunGoalRequest(
            goal="write a sluggish haiku to s.txt",
            workspace=str(tmp_path),
            specify_with_model=True,
            evolutions=0,
        ),
    )
    assert model.wait_requests(1, timeout=10)  # the specification call is held

    began = time.monotonic()
    waited = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=0.2), timeout=3)
    changed = rt.ask(ORCH, SetMaxExecutionTime(run_id=accepted.run_id, seconds=5), timeout=3)
    took = time.monotonic() - began
    events = _events(rt, accepted.run_id)

    assert isinstance(waited, RunProgress) and waited.outcome is None
    assert isinstance(changed, RunProgress)
    assert took < 3
    assert ("specification", "started") in [(e.phase, e.what) for e in events]
    assert ("specification", "finished") not in [(e.phase, e.what) for e in events]
    stopped = rt.ask(ORCH, CancelRun(run_id=accepted.run_id), timeout=20)
    assert isinstance(stopped, RunOutcome) and "stopped" == stopped.status
    assert [] == rt.which_children("root/agents")  # the model call's agent is gone too


def _audit(rt: Runtime) -> list[dict[str, Any]]:
    stats = rt.ask("root/system/access", GetAuditStats())
    assert isinstance(stats, AuditStatistics)
    return [json.loads(line) for line in Path(stats.path).read_text().splitlines()]


def test_split_subtasks_carry_their_own_goals_child_runs_and_audited_delegations(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    delegate = ChildSpec(
        id="flaky", start="tests.integration._orchestrator_workers:FailingDelegate"
    )
    rt = start_tree(_tree(model, [delegate]))
    rt.wait_event("child_started", child_id="flaky")
    goal = "write a haiku about cats to cats.txt and write a haiku about dogs to dogs.txt"

    accepted = _start(
        rt,
        RunGoalRequest(
            goal=goal,
            criteria=["cats.txt exists", "dogs.txt exists"],
            split_at=2,
            evolutions=0,
        ),
    )
    ws = Path(accepted.workspace)
    outcome = _outcome(rt, accepted.run_id, 120)
    runs = rt.ask(RUNS, ListRuns(owner="cli"))
    assert isinstance(runs, Runs)
    parent = next(r for r in runs.runs if r.parent is None)
    children = [r for r in runs.runs if r.parent == parent.id]
    told = (ws.parents[1] / "flaky.calls").read_text().splitlines()
    delegations = [e for e in _audit(rt) if e.get("action") == "delegate"]
    card = rt.ask("root/system/registry", GetAgent(name="flaky"))

    assert outcome.success, outcome
    assert ["cats.txt", "dogs.txt"] == [Path(r.files[0]).name for r in outcome.subtask_results]
    assert (ws / "cats.txt").read_text().strip()
    assert (ws / "dogs.txt").read_text().strip()
    assert {
        "write a haiku about cats to cats.txt",
        "write a haiku about dogs to dogs.txt",
    } == {c.goal for c in children}
    assert {"completed"} == {c.status for c in children}
    assert set(told) <= {c.goal for c in children} and told
    assert not any("exists" in line for line in told)
    assert len(delegations) == len(told)
    assert isinstance(card, AgentFound) and "available" == card.card.status


def test_a_working_agent_is_registered_busy_not_available(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    accepted = _hanging(rt, model, "occupied", tmp_path, evolutions=0)
    name = f"{accepted.run_id}-a0"

    card = rt.ask("root/system/registry", GetAgent(name=name))

    assert isinstance(card, AgentFound)
    assert "busy" == card.card.status
    rt.ask(ORCH, CancelRun(run_id=accepted.run_id), timeout=20)


def test_a_goals_priority_reaches_its_scheduler_task(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))

    accepted = _start(
        rt,
        RunGoalRequest(
            goal="write a haiku about urgency to u.txt",
            workspace=str(tmp_path),
            evolutions=0,
            priority="critical",
        ),
    )
    outcome = _outcome(rt, accepted.run_id, 60)
    tasks = rt.ask("root/system/scheduler", ListTasks())

    assert outcome.success, outcome
    assert isinstance(tasks, Tasks)
    assert [("critical", "completed")] == [(t.priority, t.state) for t in tasks.tasks]


def test_a_cancel_reaches_delegated_subtasks_and_frees_their_delegate(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    staller = ChildSpec(
        id="staller", start="tests.integration._orchestrator_workers:StallingDelegate"
    )
    rt = start_tree(_tree(model, [staller]))
    rt.wait_event("child_started", child_id="staller")
    accepted = _start(
        rt,
        RunGoalRequest(
            goal="two parts",
            subtasks=["write one.txt", "write two.txt"],
            evolutions=0,
            max_execution_time=60,
        ),
    )
    for event in rt.run_events(accepted.run_id, timeout=30):
        if event.detail.get("step") == "delegated":
            break

    began = time.monotonic()
    outcome = rt.ask(ORCH, CancelRun(run_id=accepted.run_id), timeout=30)
    took = time.monotonic() - began
    notes = (Path(accepted.workspace).parents[1] / "staller.log").read_text().splitlines()
    card = rt.ask("root/system/registry", GetAgent(name="staller"))
    runs = rt.ask(RUNS, ListRuns(owner="cli"))

    assert isinstance(outcome, RunOutcome) and "stopped" == outcome.status
    assert took < 10
    goals = sorted(n.split()[1] for n in notes if n.startswith("goal "))
    cancels = sorted(n.split()[1] for n in notes if n.startswith("cancel "))
    assert goals and goals == cancels
    assert isinstance(card, AgentFound) and "available" == card.card.status
    assert isinstance(runs, Runs)
    assert {"stopped"} == {r.status for r in runs.runs}
    assert [] == rt.which_children("root/agents")


def test_a_run_manager_stop_ends_the_orchestrators_model_call_in_flight(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    model.inject("hang", count=None, seconds=30, match="deliberate")
    accepted = _start(
        rt,
        RunGoalRequest(
            goal="write a deliberate haiku to d.txt",
            workspace=str(tmp_path),
            specify_with_model=True,
        ),
    )
    assert model.wait_requests(1, timeout=10)  # the specification call is held
    runs = rt.ask(RUNS, ListRuns(owner="cli"))
    assert isinstance(runs, Runs) and 1 == len(runs.runs)

    stopped = rt.ask(RUNS, StopRun(run_id=runs.runs[0].id, owner="cli"), timeout=10)
    outcome = _outcome(rt, accepted.run_id, 15)
    events = _events(rt, accepted.run_id)

    assert "stopped" == outcome.status
    assert isinstance(stopped, RunsStopped) and 1 == len(stopped.terminated)
    assert [] == _step(events, "agent_started")  # no execution after the stop
    assert [] == rt.which_children("root/agents")


def test_a_delegate_that_never_answers_fails_the_run_after_its_limit_and_cleanup(
    start_tree: StartTree, model: ModelServer
) -> None:
    staller = ChildSpec(
        id="staller", start="tests.integration._orchestrator_workers:StallingDelegate"
    )
    rt = start_tree(_tree(model, [staller], cleanup_time=1.0))
    rt.wait_event("child_started", child_id="staller")

    began = time.monotonic()
    accepted = _start(
        rt,
        RunGoalRequest(
            goal="one part", subtasks=["write one.txt"], evolutions=0, max_execution_time=1.0
        ),
    )
    outcome = _outcome(rt, accepted.run_id, 20)
    took = time.monotonic() - began
    notes = (Path(accepted.workspace).parents[1] / "staller.log").read_text().splitlines()

    assert ("failed", False) == (outcome.status, outcome.success)
    assert "did not answer within its maximum execution time plus 1 s" in (outcome.error or "")
    assert took < 1.0 + 1.0 + 5
    assert f"goal {accepted.run_id}.0" == notes[0]
    assert {f"cancel {accepted.run_id}.0"} == set(notes[1:])  # at its kill, again at teardown


def test_agents_in_separate_processes_share_one_breaker_per_endpoint(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    """One agent's failure opens the endpoint's breaker (breaker_failures 1): a second agent,
    in a process of its own, fails fast without calling the model."""
    tree = _tree(model)
    agents = tree.children[1]
    assert isinstance(agents, SupervisorSpec) and agents.template is not None
    template = agents.template.model_copy(
        update={"args": {**agents.template.args, "breaker_failures": 1, "breaker_cooldown": 60}}
    )
    tree.children[1] = agents.model_copy(update={"template": template})
    rt = start_tree(tree)
    model.inject("500", count=1, match="first")
    one = rt.start_child("root/agents", {"name": "one"})
    two = rt.start_child("root/agents", {"name": "two"})
    for info in (one, two):
        rt.ask(
            "root/system/access",
            EnsurePermissions(
                agent=f"root/agents/{info.id}", tools=["*"], workspace=f"{tmp_path}/**"
            ),
        )

    failed = rt.ask(
        f"root/agents/{one.id}", _goal("write a first haiku to a.txt", tmp_path), timeout=30
    )
    calls = model.stats().requests
    refused = rt.ask(f"root/agents/{two.id}", _goal("write a haiku to b.txt", tmp_path), timeout=30)

    assert isinstance(failed, AgentResult) and not failed.success
    assert isinstance(refused, AgentResult) and not refused.success
    assert "circuit" in (refused.error or "").lower()
    assert calls == model.stats().requests  # the second agent never reached the model


def _goal(text: str, ws: Path) -> RunGoal:
    return RunGoal(run_id=text.split()[2], spec=GoalSpec(goal=text, workspace=str(ws)))
