"""The interview's pure part: sessions, the verdict on each rating, the clarified request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.agents.orchestrator_interview import (
    DEFAULT_CHAT_REPLY,
    InterviewSession,
    Sessions,
    clarified_request,
    judge_rating,
)
from protocols.orchestrator import RunGoalRequest
from protocols.prompts import InterviewRating


def session(goal: str = "write something", **options: object) -> InterviewSession:
    return InterviewSession("s1", RunGoalRequest(goal=goal, interview=True, **options))


def test_a_non_task_gets_the_models_reply_or_a_default() -> None:
    replied = judge_rating(session(), InterviewRating(is_task=False, reply="Hi!"))
    silent = judge_rating(session(), InterviewRating(is_task=False))

    assert ("chat", "Hi!") == (replied.action, replied.reply)
    assert DEFAULT_CHAT_REPLY == silent.reply


def test_an_ambiguous_task_gets_its_questions_and_a_clear_one_runs() -> None:
    s = session()
    asked = judge_rating(s, InterviewRating(ambiguity=0.8, questions=("What?", " ")))
    s.answer(["a poem"])
    ran = judge_rating(s, InterviewRating(ambiguity=0.1))

    assert ("ask", ("What?",)) == (asked.action, asked.questions)
    assert 1 == s.rounds
    assert ("run", False) == (ran.action, ran.forced)


def test_the_threshold_is_inclusive_and_configurable() -> None:
    at = judge_rating(session(), InterviewRating(ambiguity=0.2, questions=("What?",)))
    above = judge_rating(
        session(clarity_threshold=0.5), InterviewRating(ambiguity=0.4, questions=("?",))
    )

    assert "run" == at.action
    assert "run" == above.action


def test_an_ambiguous_rating_without_questions_runs_anyway() -> None:
    verdict = judge_rating(session(), InterviewRating(ambiguity=0.9))

    assert ("run", True) == (verdict.action, verdict.forced)


@given(
    rounds=st.integers(min_value=1, max_value=10),
    ambiguities=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=15),
)
def test_never_more_rounds_of_questions_than_allowed(rounds: int, ambiguities: list[float]) -> None:
    s = session(max_interview_rounds=rounds)
    asked = 0
    for ambiguity in ambiguities:
        verdict = judge_rating(s, InterviewRating(ambiguity=ambiguity, questions=("Q?",)))
        if verdict.action != "ask":
            assert verdict.forced == (ambiguity > 0.2)
            break
        asked += 1
        s.answer(["A"])

    assert asked <= rounds
    assert asked == s.rounds


def test_answers_must_match_the_open_questions() -> None:
    s = session()
    with pytest.raises(ValueError, match="no open question"):
        s.answer(["x"])
    judge_rating(s, InterviewRating(ambiguity=0.8, questions=("What?", "Where?")))
    with pytest.raises(ValueError, match="asked 2 question"):
        s.answer(["x"])
    with pytest.raises(ValueError, match=r"answer 2 .* is empty"):
        s.answer(["x", "  "])
    s.answer(["a poem", "poem.txt"])

    assert [("What?", "a poem"), ("Where?", "poem.txt")] == s.clarifications
    assert () == s.questions


def test_the_clarified_request_uses_the_restated_goal_else_the_answers() -> None:
    restated, plain, untouched = session(), session(), session("write a poem to p.txt")
    for s, rating in ((restated, InterviewRating(goal="write a poem to p.txt")), (plain, None)):
        judge_rating(s, InterviewRating(ambiguity=0.8, questions=("What?",)))
        s.answer(["a poem"])
        if rating is not None:
            judge_rating(s, rating)

    request, exchange = clarified_request(restated)
    fallback, _ = clarified_request(plain)
    same, original = clarified_request(untouched)

    assert "write a poem to p.txt" == request.goal
    assert "write something\nQ: What?\nA: a poem" == exchange
    assert "write something (a poem)" == fallback.goal
    assert untouched.request is same
    assert "write a poem to p.txt" == original


def test_sessions_belong_to_their_owner_and_the_oldest_is_forgotten() -> None:
    sessions = Sessions(limit=2)
    for n in range(3):
        sessions.add(InterviewSession(f"s{n}", RunGoalRequest(goal="g", owner="alice")))

    assert sessions.get("s0", "alice") is None
    assert sessions.get("s2", "alice") is not None
    assert sessions.get("s2", "bob") is None
    sessions.close("s2")
    assert sessions.get("s2", "alice") is None
    assert 1 == len(sessions)
