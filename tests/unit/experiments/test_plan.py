"""The fault plan is a pure function of the experiment and its seed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.fault_points import pick_paths
from actors.experiments.plan import injection_times, is_lasting, plan_faults
from protocols.experiment import (
    ActorFaultStep,
    Experiment,
    MessageFaultStep,
)
from protocols.faults import PickFixed, PickPercent


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - seeded choices, not security


PATHS = [f"root/svc/w{i}" for i in range(10)] + ["root/svc", "root/other"]


def _experiment(faults: list[dict[str, object]], seed: int = 1, duration: float = 30) -> Experiment:
    return Experiment.model_validate(
        {"title": "t", "seed": seed, "topology": "t.yaml", "duration": duration, "faults": faults}
    )


def test_a_schedule_injects_every_period_up_to_max_total() -> None:
    experiment = _experiment(
        [{"kind": "kill", "target": "root/svc/w1", "schedule": {"every": 3, "max_total": 3}}]
    )
    assert [3.0, 6.0, 9.0] == [i.at for i in plan_faults(experiment)]
    assert [None, None, None] == [i.until for i in plan_faults(experiment)]


def test_at_injects_once_and_after_starts_a_lasting_fault_until_the_end() -> None:
    experiment = _experiment(
        [
            {"kind": "pause", "target": "root/svc/w1", "at": 4},
            {"kind": "drop", "target": "root/svc/*", "after": 2, "probability": 0.1},
        ],
        duration=10,
    )
    plan = plan_faults(experiment)
    assert [(2.0, 10.0, "drop"), (4.0, None, "pause")] == [
        (i.at, i.until, i.step.kind) for i in plan
    ]


def test_for_bounds_each_injection_and_max_active_drops_overlaps() -> None:
    experiment = _experiment(
        [
            {
                "kind": "delay",
                "target": "root/svc/w1",
                "delay": {"fixed": 0.1},
                "schedule": {"every": 1},
                "for": 2.5,
                "max_active": 2,
            }
        ],
        duration=6,
    )
    plan = plan_faults(experiment)
    # injections at 1, 2, 3, 4, 5 each last 2.5 s: at most two at once
    for injection in plan:
        overlapping = [
            other for other in plan if other.at <= injection.at < (other.until or other.at)
        ]
        assert len(overlapping) <= 2
    assert [1.0, 2.0, 4.0, 5.0] == [i.at for i in plan]


@settings(max_examples=50)
@given(
    seed=st.integers(0, 2**31),
    every=st.floats(0.1, 5),
    jitter=st.floats(0, 2),
    max_total=st.none() | st.integers(1, 20),
    duration=st.floats(1, 60),
)
def test_the_same_seed_gives_the_same_plan_and_times_stay_in_the_phase(
    seed: int, every: float, jitter: float, max_total: int | None, duration: float
) -> None:
    faults: list[dict[str, object]] = [
        {
            "kind": "kill",
            "target": "root/svc/*",
            "pick": "one",
            "schedule": {"every": every, "jitter": jitter, "max_total": max_total},
        },
        {"kind": "drop", "target": "root/svc/*", "probability": 0.5, "schedule": {"every": every}},
    ]
    first = plan_faults(_experiment(faults, seed, duration))
    again = plan_faults(_experiment(faults, seed, duration))

    assert [(i.index, i.count, i.at, i.until, i.seed) for i in first] == [
        (i.index, i.count, i.at, i.until, i.seed) for i in again
    ]
    assert all(0 <= i.at < duration for i in first)
    assert [i.at for i in first] == sorted(i.at for i in first)
    kills = [i for i in first if i.index == 0]
    if max_total is not None:
        assert len(kills) <= max_total
    for k, injection in enumerate(kills, start=1):
        assert k * every <= injection.at <= k * every + jitter


def test_each_fault_draws_from_its_own_seed() -> None:
    """Adding a fault does not change when the others are injected."""
    kill = {"kind": "kill", "target": "root/svc/w1", "schedule": {"every": 2, "jitter": 1.5}}
    drop = {"kind": "drop", "target": "root/svc/w2", "schedule": {"every": 1, "jitter": 0.5}}
    alone = [i.at for i in plan_faults(_experiment([kill], 7))]
    with_other = [i.at for i in plan_faults(_experiment([kill, drop], 7)) if i.index == 0]
    assert alone == with_other


@given(seed=st.integers(), fixed=st.integers(1, 15), percent=st.floats(0.1, 100))
def test_pick_chooses_matching_targets_only_and_as_many_as_asked(
    seed: int, fixed: int, percent: float
) -> None:
    matching = sorted(p for p in PATHS if p.startswith("root/svc/w"))
    assert matching == pick_paths(PATHS, "root/svc/w*", "all", _rng(seed))
    one = pick_paths(PATHS, "root/svc/w*", "one", _rng(seed))
    assert len(one) == 1 and set(one) <= set(matching)
    some = pick_paths(PATHS, "root/svc/w*", PickFixed(fixed=fixed), _rng(seed))
    assert len(some) == min(fixed, len(matching)) and set(some) <= set(matching)
    share = pick_paths(PATHS, "root/svc/w*", PickPercent(percent=percent), _rng(seed))
    assert 1 <= len(share) <= len(matching) and set(share) <= set(matching)
    assert share == pick_paths(
        list(reversed(PATHS)), "root/svc/w*", PickPercent(percent=percent), _rng(seed)
    )


def test_no_candidate_means_no_target() -> None:
    assert [] == pick_paths(PATHS, "root/nothing/*", "one", _rng(1))


def test_kill_now_and_pause_act_once_everything_else_lasts() -> None:
    assert not is_lasting(ActorFaultStep(kind="kill", target="a"))
    assert not is_lasting(ActorFaultStep(kind="pause", target="a"))
    assert is_lasting(ActorFaultStep(kind="kill", target="a", point="after_handler"))
    assert is_lasting(ActorFaultStep(kind="hang", target="a", seconds=1))
    assert is_lasting(ActorFaultStep(kind="hang", target="a"))  # until healed
    assert is_lasting(MessageFaultStep(kind="drop", target="a"))


def test_times_past_the_phase_are_not_planned() -> None:
    step = ActorFaultStep(kind="kill", target="a", at=12)
    assert [] == injection_times(step, 10, _rng(0))
