"""Subtask planning and run time limits, pure (actors.agents.orchestrator_plan)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.agents.orchestrator_plan import (
    agent_backstop,
    effective_limit,
    goal_clauses,
    plan_subtasks,
    subtask_spec,
    time_left,
)
from protocols.agent import GoalSpec
from protocols.orchestrator import RunGoalRequest, Subtask

WS = "/tmp/ws"


def spec_of(request: RunGoalRequest) -> GoalSpec:
    return GoalSpec(
        goal=request.goal,
        original_request=request.goal,
        acceptance_criteria=list(request.criteria) or [request.goal],
        workspace=WS,
    )


def test_clauses_split_at_then_semicolons_and_and_before_an_action() -> None:
    goal = "write a haiku about cats and dogs to a.txt and create b.txt; then list the files"

    assert [
        "write a haiku about cats and dogs to a.txt",
        "create b.txt",
        "list the files",
    ] == goal_clauses(goal)


def test_split_criteria_give_each_subtask_the_clause_that_names_its_file() -> None:
    request = RunGoalRequest(
        goal="write a haiku about cats to cats.txt and write notes about dogs to dogs.txt",
        criteria=["dogs.txt exists", "cats.txt exists"],
        split_at=2,
        capability="writing.poetry",
    )

    subtasks = plan_subtasks(request, spec_of(request))

    assert [
        Subtask(
            goal="write notes about dogs to dogs.txt",
            request="write notes about dogs to dogs.txt",
            capability="writing.poetry",
            criteria=["dogs.txt exists"],
        ),
        Subtask(
            goal="write a haiku about cats to cats.txt",
            request="write a haiku about cats to cats.txt",
            capability="writing.poetry",
            criteria=["cats.txt exists"],
        ),
    ] == subtasks


def test_a_criterion_no_clause_names_becomes_a_goal_to_make_it_true() -> None:
    request = RunGoalRequest(
        goal="write a.txt", criteria=["a.txt exists", "the moon is blue"], split_at=2
    )

    subtasks = plan_subtasks(request, spec_of(request))

    assert ["write a.txt", "make this true: the moon is blue"] == [s.goal for s in subtasks]


def test_fewer_criteria_than_split_at_means_no_subtasks() -> None:
    request = RunGoalRequest(goal="write a.txt", criteria=["a.txt exists"], split_at=2)

    assert [] == plan_subtasks(request, spec_of(request))


def test_explicit_subtasks_keep_their_own_capability_and_request_share() -> None:
    request = RunGoalRequest(
        goal="two things",
        capability="general",
        subtasks=[
            "write one.txt",
            {"goal": "read two.txt", "capability": "files.read", "request": "please read it"},
        ],
    )

    subtasks = plan_subtasks(request, spec_of(request))

    assert [
        ("write one.txt", "write one.txt", "general", ["write one.txt"]),
        ("read two.txt", "please read it", "files.read", ["read two.txt"]),
    ] == [(s.goal, s.request, s.capability, s.criteria) for s in subtasks]


def test_a_subtask_spec_carries_only_its_share_of_the_request() -> None:
    parent = GoalSpec(
        goal="everything",
        original_request="the whole long request",
        constraints=["be brief"],
        acceptance_criteria=["a", "b"],
        workspace=WS,
    )

    sub = subtask_spec(parent, Subtask(goal="do a", request="a only", criteria=["a"]))

    assert ("do a", "a only", ["a"], ["be brief"], WS) == (
        sub.goal,
        sub.original_request,
        sub.acceptance_criteria,
        sub.constraints,
        sub.workspace,
    )


@pytest.mark.parametrize(
    ("override", "default", "expected"),
    [(None, 60.0, 60.0), (5.0, 60.0, 5.0), (0.0, 60.0, None), (None, 0.0, None), (3.0, 0.0, 3.0)],
)
def test_the_effective_limit_is_the_override_else_the_default_and_zero_is_unlimited(
    override: float | None, default: float, expected: float | None
) -> None:
    assert expected == effective_limit(override, default)


@given(
    started=st.floats(0, 1e6),
    limit=st.floats(0.01, 1e4),
    elapsed=st.floats(0, 2e4),
)
def test_time_left_counts_from_the_start_and_never_goes_negative(
    started: float, limit: float, elapsed: float
) -> None:
    left = time_left(started, limit, started + elapsed)

    assert left is not None
    assert left >= 0
    assert math.isclose(left, max(0.0, limit - elapsed), abs_tol=1e-6)


def test_unlimited_has_no_time_left_and_no_backstop() -> None:
    assert None is time_left(10.0, None, 1e9)
    assert None is agent_backstop(None)


@given(limit=st.floats(0.01, 1e5))
def test_the_agents_backstop_comes_after_the_orchestrators_kill(limit: float) -> None:
    backstop = agent_backstop(limit)

    assert backstop is not None
    assert backstop > limit
