"""A run's time limit changed while it runs, and the model endpoints agents share."""

from __future__ import annotations

import math
from pathlib import Path

from actors.agents.agent import FileBreaker, model_endpoint
from actors.agents.agent_loop import AgentRun, CallModel, Finish
from actors.agents.model_guard import CircuitBreaker
from protocols.agent import AgentLimits, GoalSpec, RunGoal


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def started_run(clock: Clock, limit: float | None) -> AgentRun:
    goal = RunGoal(
        run_id="r1",
        spec=GoalSpec(goal="do it", workspace="/srv/ws"),
        limits=AgentLimits(max_execution_time=limit),
    )
    run = AgentRun(goal, agent="coder", breaker=CircuitBreaker(clock=clock), clock=clock)
    effects = run.start()
    assert isinstance(effects[-1], CallModel)
    return run


def test_a_raised_limit_moves_the_deadline_from_the_runs_start() -> None:
    clock = Clock()
    run = started_run(clock, 10.0)
    clock.now += 8

    assert [] == run.set_max_execution_time(30.0)
    assert 500.0 + 30.0 == run.deadline


def test_a_limit_lowered_below_the_time_already_run_ends_the_run_at_once() -> None:
    clock = Clock()
    run = started_run(clock, 60.0)
    clock.now += 5

    effects = run.set_max_execution_time(2.0)

    assert isinstance(effects[-1], Finish)
    assert not effects[-1].result.success
    assert "limit is 2s" in (effects[-1].result.error or "")


def test_no_limit_means_no_deadline_and_a_limit_can_be_set_later() -> None:
    clock = Clock()
    run = started_run(clock, None)

    assert math.isinf(run.deadline)
    assert [] == run.set_max_execution_time(100.0)
    assert 600.0 == run.deadline
    assert [] == run.set_max_execution_time(None)
    assert math.isinf(run.deadline)


def test_agents_of_one_process_share_one_client_and_breaker_per_endpoint() -> None:
    one = model_endpoint("http://127.0.0.1:9/v1", "k1")
    same = model_endpoint("http://127.0.0.1:9/v1", "k1", failures=9)
    other = model_endpoint("http://127.0.0.1:9/v1", "k2")

    assert one is same
    assert one.client is same.client and one.breaker is same.breaker
    assert other.client is not one.client and other.breaker is not one.breaker


def test_two_file_breakers_on_one_file_share_their_state(tmp_path: Path) -> None:
    one = FileBreaker(tmp_path / "b" / "e.json", failures=2, cooldown=60)
    two = FileBreaker(tmp_path / "b" / "e.json", failures=2, cooldown=60)

    one.record_failure()
    two.record_failure()  # the second failure of the endpoint, seen by another process

    assert "open" == one.state == two.state
    assert not one.allow()
    assert one.retry_in() > 0
    two.record_success()
    assert "closed" == one.state
    assert one.allow()


def test_an_unreadable_breaker_file_is_a_closed_breaker(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text("{not json")

    breaker = FileBreaker(path, failures=1, cooldown=60)

    assert "closed" == breaker.state
    breaker.record_failure()
    assert "open" == FileBreaker(path, failures=1, cooldown=60).state


def test_with_a_shared_directory_an_endpoints_breaker_is_a_file_breaker(tmp_path: Path) -> None:
    endpoint = model_endpoint("http://127.0.0.1:9/v1", "k-shared", shared_dir=tmp_path)

    assert isinstance(endpoint.breaker, FileBreaker)
    assert tmp_path == endpoint.breaker.path.parent


def test_a_breaker_opened_on_an_earlier_boot_is_closed(tmp_path: Path) -> None:
    clock = Clock()
    before = FileBreaker(tmp_path / "e.json", failures=1, cooldown=60, clock=clock)
    before.record_failure()
    assert "open" == before.state
    clock.now = 3.0  # rebooted: the monotonic clock starts again

    after = FileBreaker(tmp_path / "e.json", failures=1, cooldown=60, clock=clock)

    assert "closed" == after.state
    assert after.allow()
