"""Context compaction in a running agent (both bases): against the embedded model (past the
threshold, and after the server's own context-length error) and a scripted endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from actors.model.server import ModelServer
from protocols.access import EnsurePermissions, SubjectGrants
from protocols.agent import AgentLimits, AgentResult, GoalSpec, RunGoal
from protocols.prompts import SUMMARY_LABEL, prompt_kind
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._agent_workers import GetProgress, ProgressSeen
from tests.integration._scripted_model import Reply, ScriptedModel, context_length_exceeded

ACCESS = "root/access"
AGENT = "root/agent"
GOAL = (
    "read one.txt, then read two.txt, then read three.txt, "
    "then write a haiku about reading to out.txt"
)
LINE = "a supervisor restarts its children when they crash, in the order they started\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with three long files: reading them fills the conversation."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for name in ("one.txt", "two.txt", "three.txt"):
        (workspace / name).write_text(f"{name}\n" + LINE * 20)
    return workspace


def _start(start_tree: StartTree, base_url: str, ws: Path, **args: Any) -> Runtime:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            children=[
                ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
                ChildSpec(
                    id="progress", start="tests.integration._agent_workers:ProgressCollector"
                ),
                ChildSpec(
                    id="agent",
                    start="actors.agents.agent:Agent",
                    args={"base_url": base_url, "access": ACCESS, **args},
                ),
            ],
        )
    )
    granted = rt.ask(ACCESS, EnsurePermissions(agent=AGENT, tools=["*"], workspace=f"{ws}/**"))
    assert isinstance(granted, SubjectGrants)
    return rt


def _run(rt: Runtime, ws: Path, goal: str = GOAL) -> tuple[AgentResult, list[Any]]:
    message = RunGoal(
        run_id="r1",
        spec=GoalSpec(goal=goal, workspace=str(ws)),
        limits=AgentLimits(max_steps=20, token_budget=200_000, max_execution_time=30),
        progress_to="root/progress",
    )
    result = rt.ask(AGENT, message, timeout=40.0)
    assert isinstance(result, AgentResult), result
    progress = rt.ask("root/progress", GetProgress(run_id="r1"))
    assert isinstance(progress, ProgressSeen)
    return result, [p for p in progress.items if p.what == "compaction"]


def _written(ws: Path) -> list[str]:
    return sorted(p.name for p in ws.iterdir() if p.name not in ("one.txt", "two.txt", "three.txt"))


def test_past_the_threshold_the_embedded_model_summarises_and_the_run_goes_on(
    start_tree: StartTree, ws: Path
) -> None:
    with ModelServer() as server:
        rt = _start(start_tree, server.url, ws, context_window=2000, compact_at=0.5, keep_recent=2)
        result, compactions = _run(rt, ws)

    assert result.success, result.error
    assert ["out.txt"] == _written(ws)
    assert ["read_file"] * 3 + ["write_file"] == [s.name for s in result.steps]  # none twice
    assert compactions
    assert {"threshold"} == {c.detail["cause"] for c in compactions}
    done = [c for c in compactions if c.detail.get("done")]
    assert done
    assert len(done) * 2 == len(compactions)  # a start and an end for each
    assert all(c.detail["context_tokens"] < c.detail["context_tokens_before"] for c in done)


def test_the_servers_context_length_error_triggers_a_compaction_and_a_retry(
    start_tree: StartTree, ws: Path
) -> None:
    with ModelServer(context_window=1200) as server:
        rt = _start(start_tree, server.url, ws, keep_recent=2)
        result, compactions = _run(rt, ws)
        statuses = [r.status for r in server.stats().request_log]

    assert result.success, result.error
    assert ["out.txt"] == _written(ws)
    assert 400 in statuses
    assert "context_length_error" in {c.detail["cause"] for c in compactions}


def test_a_scripted_context_length_error_is_compacted_and_retried(
    start_tree: StartTree, ws: Path
) -> None:
    with ScriptedModel() as model:
        model.script(
            Reply(None, [("write_file", {"path": "a.txt", "content": "one"})]),
            Reply(None, [("write_file", {"path": "b.txt", "content": "two"})]),
            context_length_exceeded(),
            Reply("wrote a.txt"),  # the summary
            Reply("all written"),
        )
        rt = _start(start_tree, model.url, ws, keep_recent=2)
        result, compactions = _run(rt, ws, goal="write a.txt and b.txt")
        requests = list(model.requests)

    compaction, retried = requests[3], requests[4]
    assert result.success, result.error
    assert "all written" == result.output
    assert ["a.txt", "b.txt"] == _written(ws)
    assert "compact" == prompt_kind(compaction["messages"][0]["content"])
    assert "tools" not in compaction
    assert len(retried["messages"]) < len(requests[2]["messages"])
    assert retried["messages"][2]["content"] == f"{SUMMARY_LABEL}\nwrote a.txt"
    assert "b.txt" in json.dumps(retried["messages"][3:])
    assert ["context_length_error"] * 2 == [c.detail["cause"] for c in compactions]
