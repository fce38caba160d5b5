"""Prometheus metrics read from the tree at scrape time: rt.metrics_text, rt.serve_metrics."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import Runtime
from actors.demo import Fail, Ping
from actors.errors import ActorCrashed, NotSupported
from actors.model.server import ModelServer
from protocols.orchestrator import RunAccepted, RunGoalRequest
from protocols.topology import ChildSpec, ModelPrice, SupervisorSpec
from tests.conftest import StartTree
from tests.integration.test_orchestrator import ORCH, _tree


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (parsed by prometheus_client)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, tuple(sorted(labels.items()))))


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our loopback URL
        assert 200 == response.status
        body: bytes = response.read()
        return body.decode()


def _crash(rt: Runtime, path: str, times: int) -> None:
    for n in range(times):
        with pytest.raises(ActorCrashed):
            rt.ask(path, Fail())
        rt.wait_event("child_restarted", child_id=path.rsplit("/", 1)[-1], after=0, timeout=10)
        rt.ask(path, Ping(token=f"after-{n}"), timeout=10)  # the replacement answers


ECHOES = SupervisorSpec(
    id="root",
    intensity=10,
    children=[
        ChildSpec(id="echo", start="actors.demo:Echo"),
        ChildSpec(id="calm", start="actors.demo:Echo"),
        ChildSpec(id="relay", start="actors.demo:Relay", args={"to": "root/calm"}),
    ],
)


def test_restarts_exits_and_handled_messages_count_what_the_test_caused(
    start_tree: StartTree,
) -> None:
    rt = start_tree(ECHOES)
    before = rt.metrics_text()
    _crash(rt, "root/echo", 3)
    for n in range(5):
        rt.ask("root/relay", Ping(token=str(n)))  # relayed to root/calm on the data path

    after = rt.metrics_text()

    assert _value(before, "understudy_child_restarts_total", supervisor="root") is None
    assert 3 == _value(after, "understudy_child_restarts_total", supervisor="root")
    assert 3 == _value(after, "understudy_child_exits_total", supervisor="root", reason="error")
    assert 3 == _value(after, "understudy_child_starts_total", supervisor="root")  # first starts
    assert _value(after, "understudy_intensity_exceeded_total", supervisor="root") is None
    pings = {"kind": "example.ping"}
    assert 5 == _value(after, "understudy_messages_by_kind_total", **pings, event="sent")
    assert 5 == _value(after, "understudy_messages_by_kind_total", **pings, event="handled")
    sent = _value(after, "understudy_messages_total", event="sent")
    assert sent is not None and sent >= 5
    assert [] == [
        labels
        for (name, labels), _ in _samples(after).items()
        if name == "understudy_scrape_errors"
    ]


def test_a_supervisor_over_its_intensity_is_counted_once(start_tree: StartTree) -> None:
    tree = SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            SupervisorSpec(
                id="fragile",
                intensity=1,
                period=60,
                restart="temporary",
                children=[ChildSpec(id="echo", start="actors.demo:Echo")],
            )
        ],
    )
    rt = start_tree(tree)
    with pytest.raises(ActorCrashed):
        rt.ask("root/fragile/echo", Fail())
    rt.wait_event("child_restarted", child_id="echo", timeout=10)
    rt.ask("root/fragile/echo", Ping(token="back"), timeout=10)
    with pytest.raises(ActorCrashed):
        rt.ask("root/fragile/echo", Fail())
    rt.wait_event("intensity_exceeded", supervisor="root/fragile", timeout=10)

    text = rt.metrics_text()

    assert 1 == _value(text, "understudy_intensity_exceeded_total", supervisor="root/fragile")
    assert 1 == _value(text, "understudy_child_restarts_total", supervisor="root/fragile")


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


def test_runs_tasks_model_calls_tokens_cost_and_breakers_over_http(
    start_tree: StartTree, model: ModelServer, tmp_path: Path, base: str
) -> None:
    """Scraped over HTTP while the tree runs: every value is what the test's run caused."""
    if base == "simpleSystemBase":
        pytest.skip("serve_metrics needs a multi-process base (tested below)")
    rt = start_tree(_tree(model))
    server = rt.serve_metrics(0)
    rt.prices = {"understudy-embedded": ModelPrice(input=2.0, output=8.0)}  # after: still used
    accepted = rt.ask(
        ORCH,
        RunGoalRequest(
            goal="write a haiku about supervision to haiku.txt",
            workspace=str(tmp_path / "ws"),
            evolutions=0,
            specify_with_model=True,
        ),
    )
    assert isinstance(accepted, RunAccepted)
    events = rt.run_events(accepted.run_id, timeout=60)
    calls = [e.detail for e in events if e.detail.get("step") == "model_call"]
    outcome = events.outcome
    assert outcome is not None and outcome.success and outcome.result is not None

    text = _scrape(server.url)
    server.close()

    tokens_in = sum(c["input_tokens"] for c in calls)  # the agent's and the specification's
    tokens_out = sum(c["output_tokens"] for c in calls)
    model_name = {"model": "understudy-embedded"}
    assert len(calls) >= 3  # the agent's two, the specification's one
    assert len(calls) == _value(text, "understudy_model_calls_total", **model_name)
    assert tokens_in == _value(text, "understudy_model_input_tokens_total", **model_name)
    assert tokens_out == _value(text, "understudy_model_output_tokens_total", **model_name)
    assert tokens_in > outcome.result.usage.input_tokens
    cost = _value(text, "understudy_model_cost_dollars_total", **model_name)
    assert cost == pytest.approx((tokens_in * 2.0 + tokens_out * 8.0) / 1e6)
    assert 1 == _value(text, "understudy_runs", status="completed")
    assert 1 == _value(text, "understudy_scheduler_tasks", state="completed")
    assert 1 == _value(
        text, "understudy_circuit_breaker_state", breaker="delegation", state="closed"
    )
    assert 0 == _value(text, "understudy_circuit_breaker_state", breaker="delegation", state="open")


def test_model_errors_are_counted_by_class(
    start_tree: StartTree, model: ModelServer, tmp_path: Path
) -> None:
    rt = start_tree(_tree(model))
    model.inject("401", match="secret")
    accepted = rt.ask(
        ORCH,
        RunGoalRequest(
            goal="write a secret haiku to s.txt", workspace=str(tmp_path / "ws"), evolutions=0
        ),
    )
    assert isinstance(accepted, RunAccepted)
    events = rt.run_events(accepted.run_id, timeout=60)
    failed = [e.detail for e in events if e.detail.get("error_class") == "fatal"]
    assert events.outcome is not None and not events.outcome.success

    text = rt.metrics_text()

    assert failed
    assert len(failed) == _value(
        text, "understudy_model_errors_total", model="understudy-embedded", error_class="fatal"
    )


def test_serving_is_refused_on_the_single_threaded_base(start_tree: StartTree, base: str) -> None:
    rt = start_tree(ECHOES)
    if base == "simpleSystemBase":
        with pytest.raises(NotSupported, match="metrics_text"):
            rt.serve_metrics(0)
        return
    with rt.serve_metrics(0) as server:
        text = _scrape(server.url)
    assert 3 == _value(text, "understudy_child_starts_total", supervisor="root")
    with pytest.raises(urllib.error.URLError, match="refused"):  # closed: nothing listens
        _scrape(server.url)
