"""Agents as the default topology runs them: an unclassified model error restarts only that
agent (``decide_isolated``), a successful run resets its count, and an agent over its
``restart_limit`` is stopped alone while the other agents go on (on both bases)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import Runtime
from protocols.access import EnsurePermissions, SubjectGrants
from protocols.agent import AgentLimits, AgentResult, GoalSpec, RunGoal
from protocols.topology import ChildSpec, RestartLimit, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._scripted_model import Reply, ScriptedModel

ACCESS = "root/access"
POOL = "root/agents"


@pytest.fixture
def server() -> Iterator[ScriptedModel]:
    with ScriptedModel() as model:
        yield model


def _tree(server: ScriptedModel) -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        children=[
            ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
            SupervisorSpec(
                id="agents",
                strategy="simple_one_for_one",
                intensity=1,  # OTP's intensity alone would take every agent down
                period=30,
                template=ChildSpec(
                    id="agent",
                    start="actors.agents.agent:Agent",
                    restart="transient",
                    decider="actors.agents.model_guard:decide_isolated",
                    restart_limit=RestartLimit(max_restarts=1, reset_on="success"),
                    args={"base_url": server.url, "access": ACCESS},
                ),
            ),
        ],
    )


def _agent(rt: Runtime, ws: Path) -> str:
    child = rt.start_child(POOL, {})
    path = f"{POOL}/{child.id}"
    granted = rt.ask(ACCESS, EnsurePermissions(agent=path, tools=["*"], workspace=f"{ws}/**"))
    assert isinstance(granted, SubjectGrants)
    return path


def _run(rt: Runtime, path: str, ws: Path, run_id: str) -> AgentResult:
    goal = RunGoal(
        run_id=run_id,
        # No file asked: the scripted answer "done" alone is then a successful run.
        spec=GoalSpec(goal=f"answer briefly for run {run_id}", workspace=str(ws)),
        limits=AgentLimits(max_execution_time=20),
    )
    result = rt.ask(path, goal, timeout=30.0)
    assert isinstance(result, AgentResult), result
    return result


def _fail_once(rt: Runtime, server: ScriptedModel, path: str, ws: Path, run_id: str) -> int:
    """Run a goal whose model answer has no choice (an unclassified error); return the exit's
    seq."""
    before = rt.events()[-1].seq
    server.script(Reply(body={"id": "x", "object": "chat.completion", "choices": []}))
    result = _run(rt, path, ws, run_id)
    assert not result.success
    assert result.error_class == "unknown", result.error
    child_id = path.rsplit("/", 1)[-1]
    return rt.wait_event("child_exited", child_id=child_id, after=before, timeout=10).seq


def test_an_agent_over_its_limit_is_stopped_alone_and_a_success_resets_its_count(
    start_tree: StartTree, server: ScriptedModel, tmp_path: Path
) -> None:
    rt = start_tree(_tree(server))
    ws = tmp_path / "ws"
    first, second = _agent(rt, ws), _agent(rt, ws)
    first_id = first.rsplit("/", 1)[-1]

    exited = _fail_once(rt, server, first, ws, "r1")
    rt.wait_event("child_restarted", child_id=first_id, after=exited, timeout=10)
    succeeded = _run(rt, first, ws, "r2")  # resets the count: one more failure is allowed
    exited = _fail_once(rt, server, first, ws, "r3")
    rt.wait_event("child_restarted", child_id=first_id, after=exited, timeout=10)
    exited = _fail_once(rt, server, first, ws, "r4")
    limited = rt.wait_event("restart_limit_exceeded", child_id=first_id, after=exited, timeout=10)
    other = _run(rt, second, ws, "r5")
    children = [c.id for c in rt.which_children(POOL)]

    assert succeeded.success, succeeded.error
    assert limited.reason is not None
    assert limited.reason.startswith("error:")
    assert other.success, other.error
    assert [second.rsplit("/", 1)[-1]] == children
    assert rt.exit_reason is None
    assert not [e for e in rt.events() if e.event in ("intensity_exceeded", "supervisor_shutdown")]
