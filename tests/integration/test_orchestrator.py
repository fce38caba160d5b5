"""Goals end to end: lifecycle, timeouts, kills, parallel subtasks (against the embedded model)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import RequestRejected, Runtime
from actors.model.server import ModelServer
from protocols.access import GetSubject
from protocols.orchestrator import (
    GetRunProgress,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    WaitRun,
)
from protocols.registry import GetAgent
from protocols.runs import ListRuns, Runs
from protocols.scheduler import ListTasks, Tasks
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._orchestrator_tree import ORCH, orchestrator_tree


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


def _tree(model: ModelServer, extra: list[ChildSpec] | None = None) -> SupervisorSpec:
    return orchestrator_tree(model.url, extra)


def _run(rt: Runtime, request: RunGoalRequest, timeout: float = 60) -> RunOutcome:
    accepted = rt.ask(ORCH, request)
    assert isinstance(accepted, RunAccepted)
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=timeout), timeout=timeout + 5)
    assert isinstance(outcome, RunOutcome), outcome
    return outcome


def _start_hanging(
    rt: Runtime, model: ModelServer, word: str, workspace: Path, max_time: float
) -> RunAccepted:
    """Start a run whose model call hangs (the goal contains ``word``); return once the agent
    is waiting on the model."""
    model.inject("hang", seconds=30, match=word)
    accepted = rt.ask(
        ORCH,
        RunGoalRequest(
            goal=f"write a poem {word} to p.txt",
            evolutions=0,
            max_execution_time=max_time,
            workspace=str(workspace),
        ),
    )
    assert isinstance(accepted, RunAccepted)
    assert model.wait_requests(1, timeout=10)
    return accepted


def _tasks(rt: Runtime) -> Tasks:
    tasks = rt.ask("root/system/scheduler", ListTasks())
    assert isinstance(tasks, Tasks)
    return tasks


def test_a_goal_that_writes_a_file_succeeds_and_the_file_is_there(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    workspace = tmp_path / "ws"

    outcome = _run(
        rt,
        RunGoalRequest(
            goal="write a haiku about supervision to haiku.txt", workspace=str(workspace)
        ),
    )
    progress = rt.ask(ORCH, GetRunProgress(run_id=outcome.run_id))

    assert outcome.success, outcome
    assert 1.0 == outcome.score
    haiku = (workspace / "haiku.txt").read_text()
    assert 3 == len(haiku.strip().splitlines())
    assert isinstance(progress, RunProgress)
    phases = [(e.phase, e.what) for e in progress.events]
    for phase in ("specification", "execution", "evaluation"):
        assert (phase, "started") in phases and (phase, "finished") in phases
    assert ["completed"] == [t.state for t in _tasks(rt).tasks]
    runs = rt.ask("root/system/runs", ListRuns(owner="cli"))
    assert isinstance(runs, Runs)
    assert ["completed"] == [r.status for r in runs.runs]
    agent = next(
        e.detail["agent"] for e in progress.events if e.detail.get("step") == "agent_started"
    )
    with pytest.raises(RequestRejected) as gone:  # its grants were revoked at cleanup
        rt.ask("root/system/access", GetSubject(subject=str(agent)))
    assert "UnknownSubject" == gone.value.error
    assert 1 == len(runs.runs[0].agents)


def test_a_timeout_kills_the_agent_marks_the_task_timed_out_and_removes_its_card(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    if base == "simpleSystemBase":
        pytest.skip("one thread: an agent blocked in a model call blocks every timer")
    rt = start_tree(_tree(model))
    model.inject("hang", seconds=30, match="slowly")

    outcome = _run(
        rt,
        RunGoalRequest(
            goal="write notes slowly to notes.txt",
            evolutions=0,
            max_execution_time=1.0,
            workspace=str(tmp_path / "ws"),
        ),
    )
    killed = rt.wait_event("child_terminated", supervisor="root/agents", timeout=10)
    card = _card_gone(rt, killed.child_id or "")

    assert not outcome.success
    assert outcome.result is not None and "maximum execution time" in (outcome.result.error or "")
    assert ["timed_out"] == [t.state for t in _tasks(rt).tasks]
    assert card
    assert [] == rt.which_children("root/agents")


def _card_gone(rt: Runtime, name: str) -> bool:
    from actors import RequestRejected

    try:
        rt.ask("root/system/registry", GetAgent(name=name))
    except RequestRejected as exc:
        return exc.error == "UnknownAgent"
    return False


def test_an_agent_sigkilled_mid_run_leaves_its_task_failed_never_running(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    if base == "simpleSystemBase":
        pytest.skip("one process: there is no agent process to kill")
    rt = start_tree(_tree(model))
    accepted = _start_hanging(rt, model, "patiently", tmp_path, 30)
    started = rt.wait_event("child_started", supervisor="root/agents", timeout=10)
    pid = next(c.pid for c in rt.which_children("root/agents") if c.id == started.child_id)
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=30), timeout=35)

    assert isinstance(outcome, RunOutcome)
    assert not outcome.success
    states = [t.state for t in _tasks(rt).tasks]
    assert states and "running" not in states
    assert set(states) <= {"failed"}


def test_parallel_subtasks_come_back_in_order_with_a_failing_delegate_retried_then_run_directly(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    delegate = ChildSpec(
        id="flaky", start="tests.integration._orchestrator_workers:FailingDelegate"
    )
    rt = start_tree(_tree(model, [delegate]))
    rt.wait_event("child_started", child_id="flaky")
    subtasks = [
        "write a haiku about actors to one.txt",
        "write a haiku about supervisors to two.txt",
        "write a haiku about restarts to three.txt",
    ]

    outcome = _run(
        rt,
        RunGoalRequest(
            goal="three haikus",
            subtasks=subtasks,
            evolutions=0,
            criteria=["one.txt exists", "two.txt exists", "three.txt exists"],
            workspace=str(tmp_path / "ws"),
        ),
        timeout=120,
    )
    progress = rt.ask(ORCH, GetRunProgress(run_id=outcome.run_id))

    assert outcome.success, outcome
    assert [Path(r.files[0]).name for r in outcome.subtask_results] == [
        "one.txt",
        "two.txt",
        "three.txt",
    ]
    assert isinstance(progress, RunProgress)
    attempts = [
        e.detail for e in progress.events if e.phase == "delegation" and "attempt" in e.detail
    ]
    fallbacks = [
        e.detail["subtask"]
        for e in progress.events
        if e.phase == "delegation" and e.detail.get("fallback") == "direct"
    ]
    assert sorted(fallbacks) == [0, 1, 2]
    assert all(not a["success"] for a in attempts)
    assert len(attempts) >= 3


def test_the_maximum_execution_time_can_be_changed_while_a_run_runs(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    """A run started with a long limit is cut short after its limit is lowered."""
    if base == "simpleSystemBase":
        pytest.skip("one thread: an agent blocked in a model call blocks every timer")
    from protocols.orchestrator import SetMaxExecutionTime

    rt = start_tree(_tree(model))
    accepted = _start_hanging(rt, model, "leisurely", tmp_path, 60)

    rt.ask(ORCH, SetMaxExecutionTime(run_id=accepted.run_id, seconds=0.5))
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=20), timeout=25)

    assert isinstance(outcome, RunOutcome)
    assert outcome.result is not None
    assert "maximum execution time" in (outcome.result.error or "")
    assert ["timed_out"] == [t.state for t in _tasks(rt).tasks]


def test_specifications_and_outcomes_are_persisted_in_the_state_directory(
    start_tree: StartTree, model: ModelServer
) -> None:
    rt = start_tree(_tree(model))

    accepted = rt.ask(ORCH, RunGoalRequest(goal="write a haiku about persistence to p.txt"))
    assert isinstance(accepted, RunAccepted)
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=60), timeout=65)
    state_dir = Path(accepted.workspace).parents[1]  # default: <state_dir>/workspaces/<run id>
    folder = state_dir / "orchestrator" / accepted.run_id

    assert isinstance(outcome, RunOutcome) and outcome.success
    assert (Path(accepted.workspace) / "p.txt").exists()
    assert {"outcome.json", "spec-0.json"} <= {p.name for p in folder.glob("*.json")}
    assert outcome == RunOutcome.model_validate_json((folder / "outcome.json").read_text())


def test_a_failed_attempt_is_evolved_and_the_best_result_kept(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    model.inject("500", count=1, match="evolve")

    outcome = _run(
        rt,
        RunGoalRequest(
            goal="write a haiku about evolve steps to e.txt",
            evolutions=2,
            workspace=str(tmp_path / "ws"),
        ),
    )
    progress = rt.ask(ORCH, GetRunProgress(run_id=outcome.run_id))

    assert outcome.success, outcome
    assert [0.0, 1.0] == outcome.scores
    assert isinstance(progress, RunProgress)
    evolution = [e for e in progress.events if e.phase == "evolution" and e.what == "finished"]
    assert 1 == len(evolution)
    assert (tmp_path / "ws" / "e.txt").exists()


def test_a_complex_goal_gets_its_specification_from_the_model(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    goal = "write a haiku about supervision to a.txt and then write notes about restarts to b.txt"

    outcome = _run(rt, RunGoalRequest(goal=goal, evolutions=0, workspace=str(tmp_path / "ws")))
    progress = rt.ask(ORCH, GetRunProgress(run_id=outcome.run_id))

    assert isinstance(progress, RunProgress)
    spec_done = next(
        e for e in progress.events if e.phase == "specification" and e.what == "finished"
    )
    assert "model" == spec_done.detail["source"]
    assert any("a.txt" in c for c in outcome.spec.acceptance_criteria)


def test_runs_survive_a_restart_of_the_orchestrator(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    outcome = _run(
        rt,
        RunGoalRequest(goal="write a haiku about memory to m.txt", workspace=str(tmp_path / "ws")),
    )

    rt.terminate_child("root", "orchestrator")
    rt.restart_child("root", "orchestrator")
    again = rt.ask(ORCH, WaitRun(run_id=outcome.run_id, timeout=5))

    assert outcome == again


def test_a_run_interrupted_by_an_orchestrator_restart_is_failed_not_forgotten(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    if base == "simpleSystemBase":
        pytest.skip("one thread: an agent blocked in a model call blocks the restart")
    rt = start_tree(_tree(model))
    accepted = _start_hanging(rt, model, "interrupted", tmp_path, 60)

    rt.terminate_child("root", "orchestrator")
    rt.restart_child("root", "orchestrator")
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=5))

    assert isinstance(outcome, RunOutcome)
    assert not outcome.success
    assert "restarted before the run ended" in (outcome.error or "")
