"""The embedded model's fault queue: the next ``count`` matching requests, or each with a
seeded probability up to ``count`` hits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.model.faults import FaultQueue, FaultSpec


def _hits(queue: FaultQueue, requests: int, text: str = "goal") -> list[int]:
    return [n for n in range(requests) if queue.take(text) is not None]


@given(count=st.integers(1, 20), requests=st.integers(0, 40))
def test_without_a_probability_the_next_count_requests_are_hit(count: int, requests: int) -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="429", count=count)])
    assert list(range(min(count, requests))) == _hits(queue, requests)


@given(seed=st.integers(), probability=st.floats(0.05, 0.95), count=st.integers(1, 50))
def test_a_probability_hits_the_same_requests_for_the_same_seed(
    seed: int, probability: float, count: int
) -> None:
    def run() -> list[int]:
        queue = FaultQueue()
        queue.add([FaultSpec(kind="503", count=count, probability=probability, seed=seed)])
        return _hits(queue, 200)

    first = run()
    assert first == run()
    assert len(first) <= count


def test_a_match_limits_the_requests_a_fault_can_hit() -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="500", count=5, match="orchestrator")])
    assert [] == _hits(queue, 3, "agent goal")
    assert [0, 1] == _hits(queue, 2, "the orchestrator's spec")
    assert 3 == queue.clear()
