"""The orchestrator's pure decisions: how a goal splits into subtasks, and run time limits.

Subtasks (``plan_subtasks``)
    explicit subtasks       as given; a missing capability is the run's, a missing request
                            share is the subtask's goal
    ``split_at`` criteria   one subtask per criterion; its goal is the clause of the goal that
                            names the criterion's words (a file name first), never the criterion
                            itself; a criterion no clause names gets "make this true: ..."
Each subtask's specification carries its own goal, its own criteria and only its share of the
request (``subtask_spec``).

Time limits (seconds; ``0`` or None is unlimited)
    ``effective_limit``     the run's override if it has one, else the deployment default
    ``time_left``           from the agent's start, not from a change of the limit
    ``agent_backstop``      what the agent itself enforces: later than the orchestrator's kill
"""

from __future__ import annotations

import math
import re

from protocols.agent import GoalSpec
from protocols.orchestrator import RunGoalRequest, Subtask

__all__ = [
    "CLEANUP_SECONDS",
    "agent_backstop",
    "effective_limit",
    "goal_clauses",
    "plan_subtasks",
    "subtask_spec",
    "time_left",
]

CLEANUP_SECONDS = 10.0
"""How long a killed agent's lifecycle may take to clean up before its waits are given up."""

_STRONG = re.compile(r"\s*(?:;|\band then\b|,\s*then\b|\bthen\b|\n)\s*", re.IGNORECASE)
_ACTIONS = (
    "write|save|create|store|read|summarise|summarize|open|list|show|run|execute|make|add|"
    "delete|remove|copy|move|update|build|test|check|fix|count|find|compute|generate|draft"
)
_AND_ACTION = re.compile(rf",?\s+and\s+(?=(?:{_ACTIONS})\b)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9_./-]+")
_NOISE = frozenset(
    {
        *("a", "an", "the", "is", "are", "be", "it", "its", "of", "to", "in", "on", "and"),
        *("or", "exists", "exist", "file", "files", "there", "with", "has", "have"),
        *("contains", "contain", "should", "must", "at", "least", "one"),
    }
)


def goal_clauses(goal: str) -> list[str]:
    """Split a goal into its clauses: at ``;``, ``then``, new lines, and ``and`` before an
    action verb ("write a.txt and create b.txt"), never inside "cats and dogs"."""
    clauses: list[str] = []
    for part in _STRONG.split(goal):
        clauses.extend(p.strip(" ,.") for p in _AND_ACTION.split(part))
    return [c for c in clauses if c]


def _words(text: str) -> set[str]:
    return {w.lower().strip("./") for w in _WORD.findall(text)} - _NOISE - {""}


def _score(criterion: str, clause: str) -> float:
    wanted, have = _words(criterion), _words(clause)
    shared = wanted & have
    # A file name shared is worth more than any number of ordinary words.
    return sum(10.0 if "." in w else 1.0 for w in shared)


def plan_subtasks(request: RunGoalRequest, spec: GoalSpec) -> list[Subtask]:
    """Return the subtasks a run executes in parallel (empty: it runs as one goal)."""
    if request.subtasks:
        return [
            Subtask(
                goal=s.goal,
                request=s.request or s.goal,
                capability=s.capability or request.capability,
                criteria=list(s.criteria) or [s.goal],
            )
            for s in request.subtasks
        ]
    criteria = list(spec.acceptance_criteria)
    if len(criteria) < request.split_at:
        return []
    clauses = goal_clauses(spec.goal)
    # Criteria that fall to the same clause (the checks of one file: ``P exists``, ``P has
    # 3 lines``...) are one subtask; a goal whose criteria all fall to one clause is not split.
    grouped: dict[str, list[str]] = {}
    for criterion in criteria:
        best = max(clauses, key=lambda c: _score(criterion, c), default="")
        goal = best if best and _score(criterion, best) > 0 else f"make this true: {criterion}"
        grouped.setdefault(goal, []).append(criterion)
    if len(grouped) < 2:  # a split needs two parts
        return []
    return [
        Subtask(goal=goal, request=goal, capability=request.capability, criteria=found)
        for goal, found in grouped.items()
    ]


def subtask_spec(spec: GoalSpec, subtask: Subtask) -> GoalSpec:
    """The specification a subtask's agent gets: its own goal, criteria and request share."""
    return spec.model_copy(
        update={
            "goal": subtask.goal,
            "original_request": subtask.request or subtask.goal,
            "acceptance_criteria": list(subtask.criteria) or [subtask.goal],
        }
    )


def effective_limit(override: float | None, default: float) -> float | None:
    """The run's maximum execution time: its override, else the default (None: unlimited)."""
    seconds = default if override is None else override
    return seconds if seconds > 0 else None


def time_left(started: float, limit: float | None, now: float) -> float | None:
    """Seconds an agent started at ``started`` has left under ``limit`` (None: unlimited)."""
    if limit is None:
        return None
    return max(0.0, started + limit - now)


def agent_backstop(limit: float | None) -> float | None:
    """The limit the agent enforces itself: past the orchestrator's own kill (None: none)."""
    if limit is None or math.isinf(limit):
        return None
    return limit * 1.5 + 1.0
