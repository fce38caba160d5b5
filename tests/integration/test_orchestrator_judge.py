"""Runs judged by checks, not by the model's word: artefacts end to end, honest failures,
evolution with the embedded model's ``quality`` below 1, and a model that answers garbage."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from actors.agents.judge import judge_workspace
from actors.model.server import ModelServer
from actors.model.writers import criteria_missed, render_artefact
from protocols.artefacts import check_content, parse_criterion
from protocols.goals import criteria_for_goal, plan_goal
from protocols.orchestrator import (
    GetRunProgress,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    WaitRun,
)
from protocols.prompts import AGENT_PREAMBLE
from protocols.topology import SupervisorSpec
from tests.conftest import StartTree
from tests.integration._orchestrator_tree import ORCH, orchestrator_tree
from tests.integration._scripted_model import Reply, ScriptedModel


def _tree(url: str) -> SupervisorSpec:
    return orchestrator_tree(url)


def _run(rt: Runtime, request: RunGoalRequest, timeout: float = 90) -> RunOutcome:
    accepted = rt.ask(ORCH, request)
    assert isinstance(accepted, RunAccepted)
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=timeout), timeout=timeout + 5)
    assert isinstance(outcome, RunOutcome), outcome
    return outcome


def _events(rt: Runtime, run_id: str) -> list[Any]:
    progress = rt.ask(ORCH, GetRunProgress(run_id=run_id))
    assert isinstance(progress, RunProgress)
    return list(progress.events)


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


def test_a_program_goal_writes_a_program_that_runs_and_is_judged_by_running_it(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))
    goal = "write a python script that prints the first 12 Fibonacci numbers to fib.py"

    outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path)))
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "fib.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    judged = next(
        e.detail
        for e in _events(rt, outcome.run_id)
        if e.phase == "evaluation" and e.what == "finished"
    )

    assert outcome.success, outcome
    assert 1.0 == outcome.score
    assert [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89] == [int(n) for n in ran.stdout.split()]
    assert "running fib.py prints the first 12 Fibonacci numbers" in judged["met"]
    assert [] == judged["unverified"]


def test_a_json_goal_writes_json_with_the_fields_asked_for(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))
    goal = "write a JSON file with the fields title, year and tags to book.json"

    outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path)))

    assert outcome.success, outcome
    assert {"title", "year", "tags"} == set(json.loads((tmp_path / "book.json").read_text()))


def test_a_goal_outside_the_catalogue_fails_with_the_models_reason_and_writes_nothing(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))
    goal = "write a python script that plays chess to chess.py"

    outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path), evolutions=1))

    assert not outcome.success
    assert 0.0 == outcome.score
    assert outcome.error is not None
    assert outcome.error.startswith("the model refused: I cannot do this goal")
    assert "chess" in outcome.error
    assert not (tmp_path / "chess.py").exists()


def test_after_a_malformed_tool_call_the_run_corrects_itself_in_the_same_attempt(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))
    model.inject("malformed_tool_call", match=AGENT_PREAMBLE)  # an agent's turn, not a prompt
    goal = "write a python script that prints the first 5 square numbers to sq.py"

    outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path), evolutions=0))

    assert outcome.success, outcome
    assert [1.0] == outcome.scores
    assert outcome.result is not None
    assert [True, False] == [s.error for s in outcome.result.steps]
    assert outcome.result.steps[0].result.startswith("ERROR MalformedToolCall")


def test_evolution_raises_the_score_and_stops_at_the_threshold(
    start_tree: StartTree, tmp_path: Path
) -> None:
    """quality 0: the first attempt misses every check but existence; the constraints that
    evolution adds name what was missed, the model follows them, and the run stops there."""
    with ModelServer(quality=0.0, seed=7) as model:
        rt = start_tree(_tree(model.url))
        goal = "write a python script that prints the factorial of 10 to fact.py"

        outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path), evolutions=3))
        ran = subprocess.run(
            [sys.executable, str(tmp_path / "fact.py")],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    assert outcome.success, outcome
    assert 2 == len(outcome.scores)  # stopped at the threshold, two evolutions unused
    assert outcome.scores[0] < outcome.scores[1] == 1.0
    assert "3628800" == ran.stdout.strip()
    assert outcome.spec.constraints
    assert any("not met" in c for c in outcome.spec.constraints)


def test_a_threshold_below_the_first_score_stops_after_one_attempt(
    start_tree: StartTree, tmp_path: Path
) -> None:
    with ModelServer(quality=0.0, seed=7) as model:
        rt = start_tree(_tree(model.url))
        goal = "write a haiku about thresholds to t.txt"

        outcome = _run(
            rt,
            RunGoalRequest(goal=goal, workspace=str(tmp_path), evolutions=3, threshold=0.3),
        )

    assert outcome.success, outcome
    assert 1 == len(outcome.scores)
    assert 0.3 <= outcome.score < 1.0
    assert outcome.unmet  # what it missed is reported, not hidden


def _simulated_score(goal: str, quality: float, seed: int, constraints: list[str]) -> float:
    """The share of a one-file goal's criteria the embedded model's write meets, computed
    from the pure writer and the checks (no run): used only to choose a scenario's seed."""
    [write] = [a for a in plan_goal(goal) if a.tool == "write_file"]
    assert write.content is not None
    missed = criteria_missed(
        write.content, write.target, quality=quality, seed=seed, goal=goal, constraints=constraints
    )
    text = render_artefact(write.content, write.target, None, missed)
    criteria = criteria_for_goal(goal)
    met = 0
    for criterion in criteria:
        check = parse_criterion(criterion)
        assert check is not None
        met += check_content(check, text)[0] is True
    return met / len(criteria)


def _worse_second_attempt_seed(goal: str, quality: float) -> int:
    criteria = criteria_for_goal(goal)
    for seed in range(2000):
        first = _simulated_score(goal, quality, seed, [])
        [write] = [a for a in plan_goal(goal) if a.tool == "write_file"]
        assert write.content is not None
        missed = criteria_missed(
            write.content, write.target, quality=quality, seed=seed, goal=goal, constraints=[]
        )
        text = render_artefact(write.content, write.target, None, missed)
        unmet = []
        for criterion in criteria:
            check = parse_criterion(criterion)
            assert check is not None
            if check_content(check, text)[0] is not True:
                unmet.append(f"This criterion was not met: {criterion}")
        if unmet and _simulated_score(goal, quality, seed, unmet) < first:
            return seed
    pytest.fail("no seed gives a worse second attempt")


def test_the_best_attempt_is_kept_with_its_file_when_a_later_one_is_worse(
    start_tree: StartTree, tmp_path: Path
) -> None:
    goal = "write a CSV file with the columns name, city and year and 4 rows to t.csv"
    seed = _worse_second_attempt_seed(goal, 0.5)
    with ModelServer(quality=0.5, seed=seed) as model:
        rt = start_tree(_tree(model.url))

        outcome = _run(rt, RunGoalRequest(goal=goal, workspace=str(tmp_path), evolutions=1))
        events = _events(rt, outcome.run_id)

    first, second = outcome.scores
    assert second < first
    assert first == outcome.score
    assert outcome.result is not None
    assert outcome.result.agent.endswith("-a0")  # the first attempt's agent
    kept = [e.detail for e in events if e.detail.get("kept_attempt") is not None]
    assert [0] == [k["kept_attempt"] for k in kept]
    # The workspace holds the kept attempt's file again, not the worse one written last.
    assert first == judge_workspace(outcome.spec.acceptance_criteria, str(tmp_path)).score


def _scripted(evaluation: str) -> ScriptedModel:
    """A model that answers specifications and evaluations with ``evaluation``-style garbage
    and runs the agent by writing p.txt."""

    def answer(request: dict[str, Any]) -> Reply:
        last = request["messages"][-1]
        text = str(last.get("content") or "")
        if text.startswith("UNDERSTUDY-SPECIFY"):
            return Reply(content='Sure! {"goal": 42, "acceptance_criteria": "all of it"')
        if text.startswith("UNDERSTUDY-EVALUATE"):
            return Reply(content=evaluation)
        if last["role"] == "tool":
            return Reply(content="done")
        return Reply(content=None, tool_calls=[("write_file", {"path": "p.txt", "content": "hi"})])

    return ScriptedModel(default=answer)


@pytest.mark.parametrize(
    "evaluation",
    [
        "I think it is great!",
        '{"score": "high", "met": [',
        '{"score": 1.0, "met": ["the poem is lovely", "p.txt exists"], "unmet": []}',
    ],
)
def test_malformed_or_boastful_model_answers_never_crash_the_run_nor_pass_a_criterion(
    start_tree: StartTree, tmp_path: Path, evaluation: str
) -> None:
    with _scripted(evaluation) as model:
        rt = start_tree(_tree(model.url))
        request = RunGoalRequest(
            goal="write a lovely poem to p.txt",
            criteria=["p.txt exists", "the poem is lovely"],
            specify_with_model=True,
            evolutions=0,
            workspace=str(tmp_path),
        )

        outcome = _run(rt, request)
        again = _run(rt, request)  # the orchestrator is still there and answers

    assert "hi" == (tmp_path / "p.txt").read_text()
    assert 0.5 == outcome.score
    assert not outcome.success
    assert ["the poem is lovely"] == outcome.unverified
    assert outcome.error is not None
    assert "unverified: the poem is lovely" in outcome.error
    assert outcome.score == again.score


def test_a_model_that_says_a_criterion_is_unmet_is_believed(
    start_tree: StartTree, tmp_path: Path
) -> None:
    refuting = '{"met": [], "unmet": ["the poem is lovely"], "feedback": "it is dull"}'
    with _scripted(refuting) as model:
        rt = start_tree(_tree(model.url))

        outcome = _run(
            rt,
            RunGoalRequest(
                goal="write a lovely poem to p.txt",
                criteria=["p.txt exists", "the poem is lovely"],
                evolutions=0,
                workspace=str(tmp_path),
            ),
        )

    assert ["the poem is lovely"] == outcome.unmet
    assert [] == outcome.unverified
    assert 0.5 == outcome.score
