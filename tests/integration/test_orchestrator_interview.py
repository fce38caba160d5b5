"""The interview, the orchestrator's first phase (both bases): against the embedded model and
against a scripted endpoint that rates as the test says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors import RequestRejected, Runtime
from actors.model.brain_dialogue import QUESTION_FILE, QUESTION_SUBJECT, QUESTION_TASK
from actors.model.server import ModelServer
from protocols.orchestrator import (
    AnswerQuestions,
    ChatReply,
    ClarifyingQuestions,
    GetRunProgress,
    RunAccepted,
    RunGoalRequest,
    RunOutcome,
    RunProgress,
    WaitRun,
)
from protocols.prompts import parse_goal, prompt_kind
from protocols.topology import SupervisorSpec
from tests.conftest import StartTree
from tests.integration._orchestrator_tree import ORCH, orchestrator_tree
from tests.integration._scripted_model import Reply, ScriptedModel


def _tree(url: str) -> SupervisorSpec:
    return orchestrator_tree(url, decider=None)


def _request(goal: str, ws: Path, **options: Any) -> RunGoalRequest:
    return RunGoalRequest(
        goal=goal, workspace=str(ws), interview=True, evolutions=0, threshold=0.5, **options
    )


def _outcome(rt: Runtime, accepted: RunAccepted) -> RunOutcome:
    outcome = rt.ask(ORCH, WaitRun(run_id=accepted.run_id, timeout=60), timeout=65)
    assert isinstance(outcome, RunOutcome), outcome
    return outcome


def _interview_events(rt: Runtime, accepted: RunAccepted) -> list[dict[str, Any]]:
    progress = rt.ask(ORCH, GetRunProgress(run_id=accepted.run_id))
    assert isinstance(progress, RunProgress)
    return [e.detail for e in progress.events if e.phase == "interview"]


# --- against the embedded model ----------------------------------------------------------------


@pytest.fixture
def model() -> Any:
    with ModelServer() as server:
        yield server


def test_a_greeting_gets_a_direct_reply_and_no_run(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))

    reply = rt.ask(ORCH, _request("hello there", tmp_path), timeout=30)

    assert isinstance(reply, ChatReply)
    assert "task" in reply.reply
    assert 1 == len(model.stats().request_log)  # the rating only: no agent, no specification


def test_a_vague_task_is_clarified_over_two_rounds_then_run(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))

    first = rt.ask(ORCH, _request("help me", tmp_path), timeout=30)
    assert isinstance(first, ClarifyingQuestions)
    second = rt.ask(
        ORCH, AnswerQuestions(session_id=first.session_id, answers=["write something"]), timeout=30
    )
    assert isinstance(second, ClarifyingQuestions)
    accepted = rt.ask(
        ORCH,
        AnswerQuestions(
            session_id=first.session_id, answers=["write a haiku about the sea to sea.txt"]
        ),
        timeout=30,
    )
    assert isinstance(accepted, RunAccepted), accepted
    outcome = _outcome(rt, accepted)
    interview = _interview_events(rt, accepted)

    assert [QUESTION_TASK] == first.questions
    assert first.ambiguity > 0.2
    assert [QUESTION_TASK] == second.questions
    assert 2 == second.round
    assert first.session_id == accepted.session_id
    assert "write a haiku about the sea to sea.txt" == accepted.goal
    assert outcome.success, outcome.error
    assert 3 == len((tmp_path / "sea.txt").read_text().strip().splitlines())
    assert 1 == len(interview)
    assert 2 == interview[0]["rounds"]
    assert ["write something", "write a haiku about the sea to sea.txt"] == [
        c["answer"] for c in interview[0]["clarifications"]
    ]
    assert "help me" in outcome.spec.original_request
    assert "Q: " in outcome.spec.original_request


def test_answers_fill_in_a_vague_write(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))

    asked = rt.ask(ORCH, _request("write something", tmp_path), timeout=30)
    assert isinstance(asked, ClarifyingQuestions)
    with pytest.raises(RequestRejected, match="asked 2 question"):
        rt.ask(ORCH, AnswerQuestions(session_id=asked.session_id, answers=["a haiku"]))
    accepted = rt.ask(
        ORCH,
        AnswerQuestions(session_id=asked.session_id, answers=["a haiku about rain", "rain.txt"]),
        timeout=30,
    )
    assert isinstance(accepted, RunAccepted), accepted
    outcome = _outcome(rt, accepted)

    assert [QUESTION_SUBJECT, QUESTION_FILE] == asked.questions
    assert "write a haiku about rain to rain.txt" == accepted.goal
    assert outcome.success, outcome.error
    assert (tmp_path / "rain.txt").exists()


def test_a_clear_task_skips_straight_to_the_specification(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))

    accepted = rt.ask(
        ORCH, _request("write a haiku about supervision to haiku.txt", tmp_path), timeout=30
    )
    assert isinstance(accepted, RunAccepted), accepted
    outcome = _outcome(rt, accepted)
    interview = _interview_events(rt, accepted)

    assert outcome.success, outcome.error
    assert "write a haiku about supervision to haiku.txt" == outcome.spec.goal
    assert 0 == interview[0]["rounds"]
    assert 0.0 == interview[0]["ambiguity"]


def test_an_unknown_or_foreign_session_is_refused(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model.url))
    asked = rt.ask(ORCH, _request("write something", tmp_path, owner="alice"), timeout=30)
    assert isinstance(asked, ClarifyingQuestions)

    with pytest.raises(RequestRejected, match="unknown interview session"):
        rt.ask(ORCH, AnswerQuestions(session_id="nope", answers=["x"], owner="alice"))
    with pytest.raises(RequestRejected, match="unknown interview session"):
        rt.ask(ORCH, AnswerQuestions(session_id=asked.session_id, answers=["a", "b"]))


# --- against a scripted endpoint ---------------------------------------------------------------


def _scripted(ratings: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Reply]:
    """Answer interview prompts with ``ratings`` in order, evaluations with a full score,
    specifications with one criterion, and agent turns with a final answer.

    The criteria ("it is blue", the goal) are not checkable, so the judge leaves them
    unverified and the runs score 0 whatever this model says: these tests look at the
    interview and at the run it starts (its agent succeeds), not at the score."""
    queue = list(ratings)

    def respond(request: dict[str, Any]) -> Reply:
        text = request["messages"][-1]["content"] or ""
        kind = prompt_kind(text)
        if kind == "interview":
            return Reply(json.dumps(queue.pop(0)))
        if kind == "evaluate":
            return Reply(json.dumps({"score": 1.0, "met": [], "unmet": [], "feedback": ""}))
        if kind == "specify":
            return Reply(json.dumps({"goal": "g", "acceptance_criteria": ["it is blue"]}))
        return Reply("painted")

    return respond


def _kinds(model: ScriptedModel) -> list[str | None]:
    return [prompt_kind(r["messages"][-1]["content"] or "") for r in model.requests]


def test_scripted_ratings_drive_questions_the_restated_goal_and_a_model_specification(
    start_tree: StartTree, tmp_path: Path
) -> None:
    ratings = [
        {"is_task": True, "ambiguity": 0.7, "complexity": 0.2, "questions": ["Which colour?"]},
        {"is_task": True, "ambiguity": 0.1, "complexity": 0.8, "goal": "paint the fence blue"},
    ]
    with ScriptedModel(_scripted(ratings)) as model:
        rt = start_tree(_tree(model.url))
        asked = rt.ask(ORCH, _request("paint the fence", tmp_path), timeout=30)
        assert isinstance(asked, ClarifyingQuestions)
        accepted = rt.ask(
            ORCH, AnswerQuestions(session_id=asked.session_id, answers=["blue"]), timeout=30
        )
        assert isinstance(accepted, RunAccepted), accepted
        outcome = _outcome(rt, accepted)
        kinds = _kinds(model)
        agent_turn = next(r for r in model.requests if r.get("tools"))

    system = parse_goal(agent_turn["messages"][0]["content"])
    assert ["Which colour?"] == asked.questions
    assert 0.7 == asked.ambiguity
    assert "paint the fence blue" == accepted.goal
    assert outcome.result is not None and outcome.result.success, outcome.error
    assert ["interview", "interview", "specify"] == kinds[:3]  # complexity 0.8: model spec
    assert ["it is blue"] == outcome.spec.acceptance_criteria
    assert "paint the fence blue" == system.goal
    assert "Q: Which colour?\nA: blue" in system.original_request


def test_the_threshold_decides_what_is_clear_enough(start_tree: StartTree, tmp_path: Path) -> None:
    ratings = [{"is_task": True, "ambiguity": 0.7, "questions": ["Which colour?"]}]
    with ScriptedModel(_scripted(ratings)) as model:
        rt = start_tree(_tree(model.url))
        accepted = rt.ask(
            ORCH, _request("paint the fence", tmp_path, clarity_threshold=0.75), timeout=30
        )
        assert isinstance(accepted, RunAccepted), accepted
        outcome = _outcome(rt, accepted)
        kinds = _kinds(model)

    assert outcome.result is not None and outcome.result.success, outcome.error
    assert "paint the fence" == outcome.spec.goal
    assert ["interview", None] == kinds[:2]  # simple and clear: no model specification


def test_after_the_last_round_the_run_starts_anyway(start_tree: StartTree, tmp_path: Path) -> None:
    ratings = [
        {"is_task": True, "ambiguity": 0.9, "questions": ["What?"]},
        {"is_task": True, "ambiguity": 0.9, "questions": ["What, really?"]},
    ]
    with ScriptedModel(_scripted(ratings)) as model:
        rt = start_tree(_tree(model.url))
        asked = rt.ask(ORCH, _request("do the thing", tmp_path, max_interview_rounds=1), timeout=30)
        assert isinstance(asked, ClarifyingQuestions)
        accepted = rt.ask(
            ORCH, AnswerQuestions(session_id=asked.session_id, answers=["the thing"]), timeout=30
        )
        assert isinstance(accepted, RunAccepted), accepted
        _outcome(rt, accepted)
        interview = _interview_events(rt, accepted)

    assert 1 == interview[0]["rounds"]
    assert 0.9 == interview[0]["ambiguity"]
    assert "do the thing (the thing)" == accepted.goal


def test_a_model_that_cannot_rate_skips_the_interview(
    start_tree: StartTree, tmp_path: Path
) -> None:
    def respond(request: dict[str, Any]) -> Reply:
        if prompt_kind(request["messages"][-1]["content"] or "") == "interview":
            return Reply(status=401, error={"message": "no key", "type": "auth"})
        return _scripted([])(request)

    with ScriptedModel(respond) as model:
        rt = start_tree(_tree(model.url))
        accepted = rt.ask(ORCH, _request("paint the fence", tmp_path), timeout=30)
        assert isinstance(accepted, RunAccepted), accepted
        outcome = _outcome(rt, accepted)
        interview = _interview_events(rt, accepted)

    assert outcome.result is not None and outcome.result.success, outcome.error
    assert "paint the fence" == outcome.spec.goal
    assert [False] == [e["rated"] for e in interview]
