"""The Agent worker on simpleSystemBase against the in-process model server: commands, bad
input, rate limits, malformed tool calls, a lost access manager, hangs and the breaker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import RequestRejected, Runtime, StartFailed
from actors.model.server import ModelServer
from protocols.access import EnsurePermissions, SubjectGrants
from protocols.agent import AgentLimits, AgentResult, GoalSpec, RunGoal
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Ping

ACCESS = "root/access"
AGENT = "root/agent"


@pytest.fixture
def base() -> str:
    """These tests run on simpleSystemBase only (the integration suite covers both)."""
    return "simpleSystemBase"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as srv:
        yield srv


def tree(server: ModelServer, **args: Any) -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
            ChildSpec(
                id="agent",
                start="actors.agents.agent:Agent",
                decider="actors.agents.model_guard:decide",
                args={"base_url": server.url, "access": ACCESS, **args},
            ),
        ],
    )


def started(start_tree: StartTree, server: ModelServer, ws: Path, **args: Any) -> Runtime:
    rt = start_tree(tree(server, **args))
    reply = rt.ask(
        ACCESS, EnsurePermissions(agent=AGENT, tools=["*"], programs=["ls"], workspace=f"{ws}/**")
    )
    assert isinstance(reply, SubjectGrants)
    return rt


def goal(text: str, ws: Path, run_id: str = "r1", **limits: Any) -> RunGoal:
    return RunGoal(
        run_id=run_id, spec=GoalSpec(goal=text, workspace=str(ws)), limits=AgentLimits(**limits)
    )


def run(rt: Runtime, message: RunGoal) -> AgentResult:
    result = rt.ask(AGENT, message, timeout=30.0)
    assert isinstance(result, AgentResult), result
    return result


def test_commands_run_only_when_the_limits_allow_them(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    (tmp_path / "marker.txt").write_text("")

    allowed = run(rt, goal("run `ls`", tmp_path, allow_commands=True))
    refused = run(rt, goal("run `ls`", tmp_path, run_id="r2"))

    assert allowed.success
    assert ["run_command"] == [s.name for s in allowed.steps]
    assert "marker.txt" in allowed.output
    assert [] == refused.steps
    assert "the run_command tool is not available to me" in refused.output


def test_a_relative_workspace_is_rejected_and_the_agent_keeps_running(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)

    with pytest.raises(RequestRejected) as rejected:
        rt.ask(AGENT, RunGoal(run_id="r1", spec=GoalSpec(goal="x", workspace="ws")))
    with pytest.raises(RequestRejected) as unexpected:
        rt.ask(AGENT, Ping())
    after = run(rt, goal("write a haiku about order to o.txt", tmp_path))

    assert "InvalidGoal" == rejected.value.error
    assert "the workspace must be an absolute path, got 'ws'" == rejected.value.detail
    assert "UnexpectedMessage" == unexpected.value.error
    assert after.success


def test_a_second_goal_while_one_runs_is_refused(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    slow = goal("list the files, then list the files", tmp_path, tool_calls_per_second=0.2)

    rt.tell(AGENT, slow)
    with pytest.raises(RequestRejected) as busy:
        rt.ask(AGENT, goal("list the files", tmp_path, run_id="r2"))

    assert "AgentBusy" == busy.value.error
    assert "'r1'" in busy.value.detail


def test_tool_calls_wait_for_the_rate_limit(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    text = "list the files, then list the files, then list the files"

    began = time.monotonic()
    result = run(rt, goal(text, tmp_path, tool_calls_per_second=5.0))
    elapsed = time.monotonic() - began

    assert result.success
    assert 3 == len(result.steps)
    assert elapsed >= 0.4


def test_after_a_malformed_tool_call_the_model_reads_the_error_and_writes_the_file(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    server.inject("malformed_tool_call")

    result = run(rt, goal("write a haiku about typos to t.txt", tmp_path))

    assert result.success, result
    assert result.steps[0].error
    assert result.steps[0].result.startswith("ERROR MalformedToolCall: write_file: ")
    assert ["write_file", "write_file"] == [s.name for s in result.steps]
    assert not result.steps[1].error
    assert 3 == len((tmp_path / "t.txt").read_text().strip().splitlines())


def test_a_second_malformed_tool_call_is_fatal_and_the_agent_stays_down(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    server.inject("malformed_tool_call", count=2)

    result = run(rt, goal("write a haiku about typos to t.txt", tmp_path))
    exited = rt.wait_event("child_exited", child_id="agent")

    assert "fatal" == result.error_class
    assert exited.reason is not None
    assert exited.reason.startswith("error:fatal:MalformedToolCall: ")
    assert "stopped" == {c.id: c.status for c in rt.which_children("root")}["agent"]


def test_without_an_access_manager_every_tool_call_is_denied(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(tree(server, access="root/nowhere"))

    result = run(rt, goal("write a haiku about silence to s.txt", tmp_path))

    assert not result.success
    assert "the goal asks for s.txt but the agent wrote no file" == result.error
    assert result.error_class is None
    assert result.steps[0].error
    assert "ERROR AccessDenied: the access manager is unavailable" in result.steps[0].result
    assert not (tmp_path / "s.txt").exists()


def test_a_hanging_model_is_cut_off_at_the_max_execution_time(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path)
    server.inject("hang", seconds=10)

    result = run(rt, goal("write a haiku about waiting to w.txt", tmp_path, max_execution_time=0.5))
    after = run(rt, goal("write a haiku about waiting to w.txt", tmp_path, run_id="r2"))

    assert result.error is not None
    assert result.error.startswith("max execution time exceeded: ran ")
    assert result.error.endswith("s, the limit is 0.5s")
    assert result.error_class is None
    assert after.success


def test_a_model_timeout_inside_the_run_time_is_retryable(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(start_tree, server, tmp_path, timeout=0.3)
    server.inject("hang", seconds=10)

    result = run(rt, goal("write a haiku about waiting to w.txt", tmp_path))
    exited = rt.wait_event("child_exited", child_id="agent")

    assert "retryable" == result.error_class
    assert result.error == "APITimeoutError: Request timed out."
    assert "error:retryable:APITimeoutError: Request timed out." == exited.reason


def test_an_open_breaker_makes_in_place_retries_wait_for_its_cooldown(
    start_tree: StartTree, server: ModelServer, tmp_path: Path
) -> None:
    rt = started(
        start_tree, server, tmp_path, model_retries=3, breaker_failures=2, breaker_cooldown=0.3
    )
    server.inject("500", count=3)

    result = run(rt, goal("write a haiku about storms to s.txt", tmp_path))
    log = sorted(server.stats().request_log, key=lambda r: r.at)

    assert result.success
    assert [500, 500, 500, 200] == [r.status for r in log[:4]]
    assert log[2].at - log[1].finished_at >= 0.3
    assert log[3].at - log[2].finished_at >= 0.4


@pytest.mark.parametrize("name", ["system", "operator", "admin"])
def test_an_agent_cannot_take_a_reserved_name(
    start_tree: StartTree, server: ModelServer, name: str
) -> None:
    """The owner (system) and the deployment's principals are never an agent's name."""
    with pytest.raises(StartFailed) as caught:
        start_tree(tree(server, name=name))

    assert f"the agent name {name!r} is reserved" in caught.value.reason
