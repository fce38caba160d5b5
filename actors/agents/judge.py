"""The judge: each acceptance criterion checked against the run's workspace, not taken on trust.

A criterion in one of the checkable forms of ``protocols.artefacts`` is checked on the file it
names (a relative path is inside the workspace):

    P exists                       the file is there
    P is valid JSON|YAML|CSV|Python   it parses (Python: it compiles)
    P has the fields / columns ... the JSON or YAML object has those keys; the CSV header
    P has N rows / N lines         data rows under the CSV header; non-empty lines
    P mentions T / contains "X"    the topic's words / the exact text are in it
    P is a copy of Q               same bytes as Q
    running P prints <task>        ``python3 P`` runs in the agent's sandbox (no network, a
                                   scrubbed environment, the workspace as its directory,
                                   ``RUN_TIMEOUT`` seconds) and its output holds exactly the
                                   catalogue's answer (``protocols.tasks``)

A criterion stated as a goal (``write a haiku about X to h.txt``) is met when every check of
its writes is. Anything else is ``unverified``, and so is a check that cannot be made here (no
sandbox for the program): never counted as met. The score is the share of all criteria met.
Pure apart from reading the workspace and running programs; no Thespian.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from actors.agents.agent_tools import (
    ToolArgumentError,
    ToolOutcome,
    execute_tool,
    in_workspace,
    plan_tool,
)
from protocols.artefacts import Check, check_content, parse_criterion
from protocols.goals import criteria_for_goal
from protocols.prompts import TOOL_ERROR_PREFIX, score_of
from protocols.tasks import describe_task, expected_output, output_matches

__all__ = [
    "RUN_TIMEOUT",
    "CriterionVerdict",
    "Judgement",
    "Runner",
    "VerdictKind",
    "judge_workspace",
    "sandbox_runner",
]

RUN_TIMEOUT: Final = 10.0
_READ_LIMIT: Final = 1024 * 1024
VerdictKind = Literal["met", "unmet", "unverified"]

#: Runs ``argv`` in ``workspace`` within ``timeout`` seconds and returns the outcome.
Runner = Callable[[list[str], str, float], ToolOutcome]


@dataclass(frozen=True)
class CriterionVerdict:
    """One criterion's verdict and why."""

    criterion: str
    verdict: VerdictKind
    why: str = ""


@dataclass(frozen=True)
class Judgement:
    """The verdicts of a run's criteria, in their order."""

    verdicts: list[CriterionVerdict] = field(default_factory=list)

    def _of(self, kind: VerdictKind) -> list[str]:
        return [v.criterion for v in self.verdicts if v.verdict == kind]

    @property
    def met(self) -> list[str]:
        """The criteria met."""
        return self._of("met")

    @property
    def unmet(self) -> list[str]:
        """The criteria not met."""
        return self._of("unmet")

    @property
    def unverified(self) -> list[str]:
        """The criteria nothing could check."""
        return self._of("unverified")

    @property
    def score(self) -> float:
        """The share of all criteria met (1.0 when there are none)."""
        return score_of([v.criterion for v in self.verdicts], self.met)

    def feedback(self) -> str:
        """What was wrong, criterion by criterion."""
        wrong = [f"{v.criterion} ({v.why})" for v in self.verdicts if v.verdict == "unmet"]
        unknown = [v.criterion for v in self.verdicts if v.verdict == "unverified"]
        parts = ["Unmet: " + "; ".join(wrong) + "."] if wrong else []
        if unknown:
            parts.append("Unverified (not checkable): " + "; ".join(unknown) + ".")
        return " ".join(parts) or "All criteria met."


def sandbox_runner(argv: list[str], workspace: str, timeout: float) -> ToolOutcome:
    """Run ``argv`` as an agent's run_command runs (``actors.agents.agent_tools``)."""
    try:
        plan = plan_tool("run_command", {"argv": argv}, workspace)
    except ToolArgumentError as exc:
        return ToolOutcome(ok=False, output=f"{TOOL_ERROR_PREFIX} InvalidArguments: {exc}")
    return execute_tool(
        "run_command", {"argv": argv}, plan.resource, workspace=workspace, timeout=timeout
    )


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(_READ_LIMIT).decode("utf-8", errors="replace")
    except OSError:
        return None


def _check(check: Check, workspace: str, runner: Runner | None) -> tuple[VerdictKind, str]:
    path = in_workspace(check.path, workspace)
    if not os.path.isfile(path):
        return "unmet", f"there is no file {check.path}"
    content = _read(path)
    if content is None:
        return "unmet", f"{check.path} cannot be read"
    if check.kind == "copy":
        source = _read(in_workspace(check.text, workspace))
        if source is None:
            return "unverified", f"the source {check.text} cannot be read"
        return ("met", "") if source == content else ("unmet", f"differs from {check.text}")
    if check.kind == "prints":
        return _prints(check, path, workspace, runner)
    verdict, why = check_content(check, content)
    if verdict is None:
        return "unverified", why
    return ("met", "") if verdict else ("unmet", why)


def _prints(
    check: Check, path: str, workspace: str, runner: Runner | None
) -> tuple[VerdictKind, str]:
    assert check.task is not None  # noqa: S101 - parse_criterion sets it for prints
    if runner is None:
        return "unverified", "no sandbox to run the program in"
    relative = posixpath.relpath(path, workspace) if path.startswith(workspace + "/") else path
    outcome = runner(["python3", relative], workspace, RUN_TIMEOUT)
    if outcome.output.startswith(f"{TOOL_ERROR_PREFIX} NetworkIsolationUnavailable"):
        return "unverified", "the sandbox is unavailable here"
    if not outcome.ok:
        return "unmet", f"it did not run cleanly: {_excerpt(outcome.output)}"
    if output_matches(check.task, outcome.output):
        return "met", ""
    wanted = _excerpt(expected_output(check.task))
    return "unmet", (
        f"it printed {_excerpt(outcome.output)!r}; {describe_task(check.task)} is {wanted!r}"
    )


def _excerpt(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _judge_one(criterion: str, workspace: str, runner: Runner | None) -> CriterionVerdict:
    check = parse_criterion(criterion)
    if check is not None:
        verdict, why = _check(check, workspace, runner)
        return CriterionVerdict(criterion, verdict, why)
    implied = criteria_for_goal(criterion)
    if not implied:
        return CriterionVerdict(criterion, "unverified", "not in a checkable form")
    parts = [_judge_one(c, workspace, runner) for c in implied]
    failed = [f"{p.criterion}: {p.why}" for p in parts if p.verdict == "unmet"]
    if failed:
        return CriterionVerdict(criterion, "unmet", "; ".join(failed))
    if any(p.verdict == "unverified" for p in parts):
        return CriterionVerdict(criterion, "unverified", "some of its checks could not be made")
    return CriterionVerdict(criterion, "met", "")


def judge_workspace(
    criteria: Sequence[str], workspace: str, *, runner: Runner | None = sandbox_runner
) -> Judgement:
    """Check each criterion against the files of ``workspace`` (see the module doc).

    Args:
        criteria: the acceptance criteria.
        workspace: the run's workspace (an absolute path).
        runner: how programs are run (default: the agent's sandbox); None: they are not, and
            their criteria stay unverified.
    """
    return Judgement([_judge_one(c, workspace, runner) for c in criteria])
