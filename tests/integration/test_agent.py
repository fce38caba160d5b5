"""The agent in a running tree: a real model server over HTTP, the access manager, the audit log,
and the supervisor's decisions on model errors (on both bases)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from actors.model.server import ModelServer, RequestRecord
from protocols._base import Message
from protocols.access import (
    AuditStatistics,
    EnsurePermissions,
    GetAuditStats,
    GrantRole,
    SetAgentPermissions,
    SubjectGrants,
)
from protocols.agent import AgentLimits, AgentResult, GoalSpec, RunGoal
from protocols.topology import Backoff, ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._agent_workers import GetProgress, ProgressSeen

ACCESS = "root/access"
AGENT = "root/agent"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as srv:
        yield srv


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def tree(server: ModelServer, **args: Any) -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
            ChildSpec(id="progress", start="tests.integration._agent_workers:ProgressCollector"),
            ChildSpec(
                id="agent",
                start="actors.agents.agent:Agent",
                decider="actors.agents.model_guard:decide",
                backoff=Backoff(base=0.1, cap=5),
                args={"base_url": server.url, "access": ACCESS, **args},
            ),
        ],
    )


def grant_workspace(rt: Runtime, ws: Path) -> None:
    reply = rt.ask(ACCESS, EnsurePermissions(agent=AGENT, tools=["*"], workspace=f"{ws}/**"))
    assert isinstance(reply, SubjectGrants)


def run(rt: Runtime, goal: str, ws: Path, run_id: str = "r1", **limits: Any) -> AgentResult:
    message = RunGoal(
        run_id=run_id,
        spec=GoalSpec(goal=goal, workspace=str(ws)),
        limits=AgentLimits(**limits),
        progress_to="root/progress",
    )
    result = rt.ask(AGENT, message, timeout=30.0)
    assert isinstance(result, AgentResult), result
    return result


def audit_entries(rt: Runtime) -> list[dict[str, Any]]:
    stats = rt.ask(ACCESS, GetAuditStats())
    assert isinstance(stats, AuditStatistics)
    return [json.loads(line) for line in Path(stats.path).read_text().splitlines()]


def chat_log(server: ModelServer) -> list[RequestRecord]:
    return sorted(server.stats().request_log, key=lambda r: r.at)


def ask(rt: Runtime, message: Message) -> Message:
    return rt.ask(ACCESS, message, timeout=10.0)


def test_a_haiku_goal_writes_the_file_records_the_step_and_audits_it(
    start_tree: StartTree, server: ModelServer, ws: Path
) -> None:
    rt = start_tree(tree(server))
    grant_workspace(rt, ws)

    result = run(rt, "write a haiku about supervision to haiku.txt", ws)
    progress = rt.ask("root/progress", GetProgress(run_id="r1"))
    entries = audit_entries(rt)

    haiku = ws / "haiku.txt"
    assert result.success, result.error
    assert haiku.exists()
    assert 3 == len(haiku.read_text().strip().splitlines())
    assert ["write_file"] == [s.name for s in result.steps]
    assert not result.steps[0].error
    assert str(haiku) == result.steps[0].arguments["path"]
    assert [str(haiku)] == result.files
    assert "haiku about supervision" in result.output
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    tool_entries = [e for e in entries if e["action"] == "tool.write_file"]
    assert 1 == len(tool_entries)
    assert "external" == tool_entries[0]["type"]
    assert AGENT == tool_entries[0]["actor"]
    assert tool_entries[0]["detail"]["allowed"] is True
    assert "r1" == tool_entries[0]["detail"]["run_id"]
    assert any(
        e["action"] == "access_granted" and e["detail"]["action"] == "write" for e in entries
    )
    assert isinstance(progress, ProgressSeen)
    assert progress.complete
    assert [
        "model_call_started",
        "model_call",
        "tool_call_started",
        "tool_call",
        "model_call_started",
        "model_call",
        "finished",
    ] == [p.what for p in progress.items]
    assert result.usage.total == progress.items[-1].detail["total_tokens"]


def test_a_write_outside_the_workspace_is_denied_and_never_runs(
    start_tree: StartTree, server: ModelServer, ws: Path, tmp_path: Path
) -> None:
    rt = start_tree(tree(server))
    ask(rt, GrantRole(subject=AGENT, role="operator"))
    ask(rt, SetAgentPermissions(agent=AGENT, tools=["*"], paths=[f"{ws}/**"]))
    outside = tmp_path / "outside" / "escape.txt"

    result = run(rt, f"write a haiku about escape to {outside}", ws)
    entries = audit_entries(rt)

    assert not outside.exists()
    assert not outside.parent.exists()
    assert ["write_file"] == [s.name for s in result.steps]
    assert result.steps[0].error
    assert result.steps[0].result.startswith("ERROR AccessDenied:")
    assert "matches no allowed path of 'root/agent'" in result.steps[0].result
    assert "Could not write" in result.output
    assert [] == result.files
    denied = [e for e in entries if e["action"] == "tool.write_file"]
    assert 1 == len(denied)
    assert denied[0]["detail"]["allowed"] is False
    assert "matches no allowed path" in denied[0]["detail"]["reason"]
    assert any(
        e["action"] == "access_denied" and e["detail"]["resource"] == str(outside) for e in entries
    )


def test_two_429s_then_success_retries_in_place_after_retry_after(
    start_tree: StartTree, server: ModelServer, ws: Path
) -> None:
    rt = start_tree(tree(server, model_retries=2))
    grant_workspace(rt, ws)
    server.inject("429", count=2, retry_after=0.3)

    result = run(rt, "write a haiku about patience to p.txt", ws)
    log = chat_log(server)

    assert result.success, result.error
    assert (ws / "p.txt").exists()
    assert [429, 429, 200] == [r.status for r in log[:3]]
    assert log[1].at - log[0].finished_at >= 0.3
    assert log[2].at - log[1].finished_at >= 0.3
    assert not [e for e in rt.events() if e.event == "child_exited"]


def test_a_401_fails_the_run_as_fatal_and_the_agent_stays_down(
    start_tree: StartTree, server: ModelServer, ws: Path
) -> None:
    rt = start_tree(tree(server))
    grant_workspace(rt, ws)
    server.inject("401")

    result = run(rt, "write a haiku about keys to k.txt", ws)
    exited = rt.wait_event("child_exited", child_id="agent", timeout=10)
    children = {c.id: c.status for c in rt.which_children("root")}

    assert not result.success
    assert "fatal" == result.error_class
    assert result.error is not None
    assert result.error.startswith("AuthenticationError: HTTP 401")
    assert exited.reason is not None
    assert exited.reason.startswith("error:fatal:AuthenticationError: HTTP 401")
    assert "stopped" == children["agent"]
    assert "running" == children["access"]
    assert not [e for e in rt.events() if e.event == "child_restarted"]
    assert not (ws / "k.txt").exists()


def test_a_429_without_in_place_retries_exits_retryable_and_restarts_after_retry_after(
    start_tree: StartTree, server: ModelServer, ws: Path
) -> None:
    rt = start_tree(tree(server))
    grant_workspace(rt, ws)
    server.inject("429", retry_after=0.5)

    result = run(rt, "write a haiku about waiting to w.txt", ws)
    exited = rt.wait_event("child_exited", child_id="agent", timeout=10)
    restarted = rt.wait_event("child_restarted", child_id="agent", timeout=10)
    again = run(rt, "write a haiku about waiting to w.txt", ws, run_id="r2")

    assert "retryable" == result.error_class
    assert result.error is not None
    assert result.error.startswith("RateLimitError: HTTP 429")
    assert result.error.endswith("; retry_after=0.5")
    assert exited.reason is not None
    assert exited.reason.startswith("error:retryable:RateLimitError")
    assert restarted.time - exited.time >= 0.5
    assert again.success, again.error
    assert (ws / "w.txt").exists()


def test_a_run_past_its_token_budget_fails_and_runs_no_tool(
    start_tree: StartTree, server: ModelServer, ws: Path
) -> None:
    rt = start_tree(tree(server))
    grant_workspace(rt, ws)

    result = run(rt, "write a haiku about thrift to t.txt", ws, token_budget=50)
    children = {c.id: c.status for c in rt.which_children("root")}

    assert not result.success
    assert result.error is not None
    assert result.error.startswith("token budget exceeded: used ")
    assert result.error.endswith(" of 50 tokens")
    assert result.error_class is None
    assert result.usage.total > 50
    assert [] == result.steps
    assert not (ws / "t.txt").exists()
    assert "running" == children["agent"]


def test_a_run_stops_at_max_steps(start_tree: StartTree, server: ModelServer, ws: Path) -> None:
    rt = start_tree(tree(server))
    grant_workspace(rt, ws)
    goal = (
        "write a haiku about one to a.txt, then write a haiku about two to b.txt, "
        "then write a haiku about three to c.txt"
    )

    result = run(rt, goal, ws, max_steps=2)

    assert not result.success
    assert "max steps exceeded: 2 model turns without a final answer" == result.error
    assert ["write_file", "write_file"] == [s.name for s in result.steps]
    assert (ws / "a.txt").exists()
    assert (ws / "b.txt").exists()
    assert not (ws / "c.txt").exists()
    assert 2 == server.stats().requests


def test_an_agent_cannot_escape_its_workspace_through_a_symlink_race(
    start_tree: StartTree, server: ModelServer, ws: Path, tmp_path: Path
) -> None:
    """A thread swaps the workspace's sub/ for a symlink to outside/ and back, in a loop, while
    the agent writes into sub/ run after run: nothing ever lands outside."""
    rt = start_tree(tree(server))
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "sub").mkdir(parents=True)
    ask(rt, EnsurePermissions(agent=AGENT, tools=["*"], workspace=f"{ws}/**"))
    stop = threading.Event()

    def swap() -> None:
        real, link, away = ws / "sub", ws / "sub.link", ws / "sub.away"
        while not stop.is_set():
            with contextlib.suppress(OSError):
                real.rename(away)
                link.symlink_to(outside)
                link.rename(real)
                real.unlink()
                away.rename(real)

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        results = [
            run(rt, f"write a haiku about race {n} to sub/h{n}.txt", ws, run_id=f"r{n}")
            for n in range(25)
        ]
    finally:
        stop.set()
        swapper.join(timeout=10)

    assert [] == list(outside.iterdir())
    assert any(r.files for r in results)  # the race ran: writes got through, inside
