"""A run's events pushed to its followers as they happen: rt.run_events and rt.subscribe_run."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import Runtime
from actors.errors import AskTimeout, NotSupported
from actors.model.server import ModelServer
from protocols.errors import UnderstudyError
from protocols.orchestrator import (
    GetRunProgress,
    PhaseEvent,
    RunAccepted,
    RunGoalRequest,
    RunProgress,
)
from tests.conftest import StartTree
from tests.integration.test_orchestrator import ORCH, _tree


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


def _start(rt: Runtime, goal: str, workspace: Path, **fields: object) -> str:
    accepted = rt.ask(
        ORCH, RunGoalRequest(goal=goal, workspace=str(workspace), evolutions=0, **fields)
    )
    assert isinstance(accepted, RunAccepted)
    return accepted.run_id


def _label(event: PhaseEvent) -> str:
    step = event.detail.get("step")
    what = step if event.what == "progress" and isinstance(step, str) else event.what
    return f"{event.phase}:{what}"


def test_a_follower_sees_phases_model_calls_and_tool_calls_start_and_end_in_order(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    run_id = _start(
        rt,
        "write a haiku about supervision to haiku.txt",
        tmp_path / "ws",
        specify_with_model=True,  # a model call in the specification phase too
    )

    events = rt.run_events(run_id, timeout=60)
    seen = list(events)

    labels = [_label(e) for e in seen]
    wanted = [
        "run:started",
        "specification:started",
        "specification:model_call_started",
        "specification:model_call",
        "specification:finished",
        "execution:started",
        "execution:model_call_started",
        "execution:model_call",
        "execution:tool_call_started",
        "execution:tool_call",
        "execution:model_call_started",
        "execution:model_call",
        "execution:finished",
        "evaluation:started",
        "evaluation:finished",
        "run:finished",
    ]
    rest = iter(labels)
    assert all(w in rest for w in wanted), "\n".join(labels)  # in this order, others between
    assert [e.n for e in seen] == list(range(1, len(seen) + 1))  # none missed, none repeated
    tools = [e.detail for e in seen if _label(e).startswith("execution:tool_call")]
    assert [("write_file", "write_file")] == [(tools[0]["name"], tools[1]["name"])]
    calls = [e.detail for e in seen if _label(e) == "execution:model_call"]
    specified = [e.detail for e in seen if _label(e) == "specification:model_call"]
    assert [("understudy-embedded", True)] == [
        (c["model"], c["input_tokens"] > 0 and c["output_tokens"] > 0) for c in specified
    ]
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in calls)
    outcome = events.outcome
    assert outcome is not None and outcome.success and outcome.result is not None
    usage = outcome.result.usage
    assert (usage.input_tokens, usage.output_tokens) == (
        sum(c["input_tokens"] for c in calls),
        sum(c["output_tokens"] for c in calls),
    )
    assert usage.total == calls[-1]["total_tokens"]


def test_a_subscription_delivers_every_event_once_on_its_thread_and_ends_with_the_outcome(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    rt = start_tree(_tree(model))
    run_id = _start(rt, "write a haiku about supervision to haiku.txt", tmp_path / "ws")
    if base == "simpleSystemBase":
        with pytest.raises(NotSupported, match="run_events"):
            rt.subscribe_run(run_id, print)
        return
    received: list[PhaseEvent] = []
    threads: set[str] = set()

    def collect(event: PhaseEvent) -> None:
        received.append(event)
        threads.add(threading.current_thread().name)

    subscription = rt.subscribe_run(run_id, collect, timeout=60)
    outcome = subscription.wait(90)
    everything = rt.ask(ORCH, GetRunProgress(run_id=run_id))

    assert outcome is not None and outcome.success
    assert subscription.done
    assert isinstance(everything, RunProgress)
    assert everything.events == received
    assert {f"understudy-run-{run_id}"} == threads


def test_a_model_call_start_arrives_while_the_model_is_still_answering(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    """Pushed, not collected at the end: the start of a model call that hangs reaches the
    follower during the call (the run then times out)."""
    if base == "simpleSystemBase":
        pytest.skip("one thread: an agent blocked in a model call blocks every other actor")
    rt = start_tree(_tree(model))
    model.inject("hang", seconds=30, match="slowly")
    run_id = _start(rt, "write notes slowly to notes.txt", tmp_path / "ws", max_execution_time=3)
    events = rt.run_events(run_id, timeout=20)

    first_call = next(e for e in events if _label(e) == "execution:model_call_started")
    asked = model.wait_requests(1, timeout=10)
    meanwhile = rt.ask(ORCH, GetRunProgress(run_id=run_id, since=first_call.n))
    rest = list(events)

    assert asked
    assert isinstance(meanwhile, RunProgress)
    assert "execution:model_call" not in [_label(e) for e in meanwhile.events]
    assert meanwhile.outcome is None
    assert "timed_out" in [e.detail.get("step") for e in rest]
    assert events.outcome is not None and not events.outcome.success


def test_following_an_unknown_run_fails_and_a_quiet_run_times_out(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    if base == "simpleSystemBase":
        pytest.skip("one thread: an agent blocked in a model call blocks every other actor")
    rt = start_tree(_tree(model))
    model.inject("hang", seconds=30, match="slowly")
    run_id = _start(rt, "write notes slowly to notes.txt", tmp_path / "ws", max_execution_time=20)
    quiet = rt.run_events(run_id, timeout=1.0, poll=0.3)
    first_call = next(e for e in quiet if _label(e) == "execution:model_call_started")

    with pytest.raises(UnderstudyError, match="unknown run"):
        next(rt.run_events("no-such-run"))
    with pytest.raises(AskTimeout):
        next(quiet)  # the model hangs: nothing happens for a second
    assert first_call.n > 1


def test_a_follower_outlives_an_orchestrator_killed_under_it(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    """SIGKILL the orchestrator while it holds the follower's request: the follower asks the
    replacement, which reloads the run as interrupted; the subscription ends with that
    outcome instead of an error."""
    if base == "simpleSystemBase":
        pytest.skip("one process: nothing to kill")
    rt = start_tree(_tree(model))
    [orchestrator] = [c for c in rt.which_children("root") if c.id == "orchestrator"]
    assert orchestrator.pid is not None
    model.inject("hang", seconds=30, match="interrupted")
    run_id = _start(rt, "write a poem interrupted to p.txt", tmp_path / "ws")
    calling = threading.Event()

    def watch(event: PhaseEvent) -> None:
        if _label(event) == "execution:model_call_started":
            calling.set()  # the model hangs: the next request is held by the orchestrator

    subscription = rt.subscribe_run(run_id, watch, timeout=30, poll=10)
    assert calling.wait(20)
    os.kill(orchestrator.pid, signal.SIGKILL)
    outcome = subscription.wait(40)

    assert outcome is not None and not outcome.success
    assert "restarted before the run ended" in (outcome.error or "")
