"""The phi accrual detector against the distribution it models and the defaults' promises."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from actors.cluster.detector import PhiAccrualDetector, phi
from protocols.topology import ClusterConfig


def _normal_tail(x: float, mean: float, std: float) -> float:
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2)))


@given(st.floats(-4, 10), st.floats(0.05, 2.0))
def test_phi_is_the_log_of_the_normal_tail(z: float, std: float) -> None:
    mean = 1.0
    elapsed = mean + z * std
    expected = -math.log10(_normal_tail(elapsed, mean, std))

    assert abs(phi(elapsed, mean, std) - expected) < 0.01 + 0.001 * expected


def test_phi_keeps_growing_in_the_far_tail() -> None:
    values = [phi(1.0 + z, 1.0, 0.1) for z in (0.5, 1.0, 10.0, 1000.0)]

    assert values == sorted(values)
    assert values[-1] > 1e6


@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=50), st.floats(0, 10), st.floats(0, 10))
def test_phi_never_falls_as_silence_grows(intervals: list[float], a: float, b: float) -> None:
    detector = PhiAccrualDetector(expected_interval=0.2)
    now = 0.0
    for interval in intervals:
        now += interval
        detector.heartbeat(now)

    early, late = sorted((a, b))
    assert detector.phi(now + early) <= detector.phi(now + late) + 1e-9


def _steady(config: ClusterConfig, seconds: float) -> tuple[PhiAccrualDetector, float]:
    detector = PhiAccrualDetector(
        expected_interval=config.heartbeat_interval,
        acceptable_pause=config.acceptable_heartbeat_pause,
        threshold=config.threshold,
        suspect_threshold=config.suspect_threshold,
        min_std=config.min_std_deviation,
    )
    now = 0.0
    while now < seconds:
        now += config.heartbeat_interval
        detector.heartbeat(now)
    return detector, now


def test_with_the_defaults_a_2_s_pause_is_tolerated() -> None:
    config = ClusterConfig()
    detector, last = _steady(config, 30)

    assert "up" == detector.health(last + 2.0 + config.heartbeat_interval)


def test_with_the_defaults_a_dead_host_is_down_within_3_s() -> None:
    config = ClusterConfig()
    detector, last = _steady(config, 30)
    # the host died just after its last reply; the detector looks every heartbeat interval
    down_at = next(t / 100 for t in range(1000) if detector.health(last + t / 100) == "down")

    assert down_at + config.heartbeat_interval <= 3.0
    assert "suspect" == detector.health(last + down_at - 0.1)


def test_nothing_is_suspected_before_the_first_reply() -> None:
    assert "up" == PhiAccrualDetector(expected_interval=0.2).health(1000.0)


@given(st.integers(1, 40))
def test_tolerated_pauses_do_not_slow_down_the_next_detection(pauses: int) -> None:
    config = ClusterConfig()
    detector, now = _steady(config, 30)
    for _ in range(pauses):
        now += 2.0  # a 2 s pause, tolerated
        detector.heartbeat(now)
        for _ in range(10):
            now += config.heartbeat_interval
            detector.heartbeat(now)

    down_at = next(t / 100 for t in range(1000) if detector.health(now + t / 100) == "down")

    assert down_at + config.heartbeat_interval <= 3.0
