"""Message fault specs and their selection at one worker (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.core.fault_points import FaultPoint
from protocols.faults import DelaySpec, MessageFault


def _fault(**fields: object) -> MessageFault:
    base: dict[str, object] = {"fault": "drop", "target": "root/*", "id": "f1"}
    return MessageFault.model_validate(base | fields)


def _hits(point: FaultPoint, n: int, kind: str = "k") -> list[int]:
    found = []
    for _ in range(n):
        hit = point.decide(kind, None, 0.0)
        if hit is not None:
            found.append(hit.ordinal)
    return found


@given(st.integers(1, 20), st.integers(1, 200))
def test_nth_hits_exactly_that_message(nth: int, n: int) -> None:
    point = FaultPoint("root/a")
    point.set([(_fault(nth=nth), 0.0)])

    assert ([nth] if nth <= n else []) == _hits(point, n)


@given(st.integers(1, 20), st.integers(1, 200))
def test_every_nth_hits_the_multiples(every: int, n: int) -> None:
    point = FaultPoint("root/a")
    point.set([(_fault(every_nth=every), 0.0)])

    assert list(range(every, n + 1, every)) == _hits(point, n)


@given(st.floats(0, 1), st.integers(0, 2**32), st.integers(1, 300))
def test_probability_is_reproducible_from_the_seed(p: float, seed: int, n: int) -> None:
    runs = []
    for _ in range(2):
        point = FaultPoint("root/a")
        point.set([(_fault(probability=p, seed=seed), 0.0)])
        runs.append(_hits(point, n))

    assert runs[0] == runs[1]


@given(st.integers(1, 10), st.integers(1, 100))
def test_max_total_caps_the_hits(cap: int, n: int) -> None:
    point = FaultPoint("root/a")
    point.set([(_fault(max_total=cap), 0.0)])

    assert list(range(1, min(cap, n) + 1)) == _hits(point, n)


def test_target_kind_and_sender_globs_select_messages() -> None:
    fault = _fault(target="root/svc/*", message_kind="example.*", sender="root/src*")

    assert fault.matches("root/svc/w1", "example.ping", "root/src1")
    assert not fault.matches("root/other/w1", "example.ping", "root/src1")
    assert not fault.matches("root/svc/w1", "fast.item", "root/src1")
    assert not fault.matches("root/svc/w1", "example.ping", None)
    point = FaultPoint("root/other")
    point.set([(fault, 0.0)])
    assert point.empty


def test_healing_one_fault_keeps_the_others_counters() -> None:
    point = FaultPoint("root/a")
    first, second = _fault(every_nth=2), _fault(id="f2", nth=3, fault="duplicate")
    point.set([(first, 0.0), (second, 0.0)])
    point.decide("k", None, 0.0)
    point.set([(first, 0.0)])

    hit = point.decide("k", None, 0.0)

    assert hit is not None
    assert (hit.fault.id, hit.ordinal) == ("f1", 2)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"nth": 1, "probability": 0.5}, "at most one trigger"),
        ({"fault": "delay"}, "`delay` is required"),
        ({"delay": {"fixed": 1.0}}, "`delay` is required"),
        ({"probability": 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_specs_say_what_is_wrong(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        _fault(**fields)


@given(
    st.one_of(
        st.builds(lambda x: {"fixed": x}, st.floats(0, 5)),
        st.builds(
            lambda a, b: {"uniform": (min(a, b), max(a, b))}, st.floats(0, 5), st.floats(0, 5)
        ),
        st.builds(lambda m, s: {"normal": (m, s)}, st.floats(0, 5), st.floats(0, 2)),
    ),
    st.floats(0, 1),
    st.integers(0, 1000),
)
def test_a_delay_is_never_negative_and_stays_in_its_range(
    shape: dict[str, object], jitter: float, seed: int
) -> None:
    spec = DelaySpec.model_validate(shape | {"jitter": jitter})
    value = spec.draw(random.Random(seed))  # noqa: S311 - a seeded draw

    assert value >= 0
    if spec.fixed is not None:
        assert spec.fixed <= value <= spec.fixed + jitter
    if spec.uniform is not None:
        assert spec.uniform[0] <= value <= spec.uniform[1] + jitter
