"""Pure supervision decisions: restart windows, restart types, strategies, auto shutdown.

No Thespian here: the supervisor actor calls these and they are tested directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from protocols.supervision import is_normal_exit
from protocols.topology import AutoShutdown, RestartType, Strategy

__all__ = [
    "Decider",
    "Directive",
    "affected_children",
    "auto_shutdown_due",
    "backoff_delay",
    "decide_restart",
    "prune",
    "record_restart",
    "should_restart",
]


def prune(history: tuple[float, ...], now: float, *, period: float) -> tuple[float, ...]:
    """Return the restart timestamps of ``history`` at most ``period`` seconds old (OTP's rule:
    a restart at exactly ``now - period`` still counts)."""
    return tuple(t for t in history if t >= now - period)


def record_restart(
    history: tuple[float, ...], now: float, *, intensity: int, period: float
) -> tuple[bool, tuple[float, ...]]:
    """Add a restart at ``now`` and say whether it is allowed.

    OTP's rule: the restart is allowed while the restarts in the last ``period`` seconds, this
    one included, number at most ``intensity``.

    Returns:
        (allowed, the pruned history including ``now``).
    """
    kept = (*prune(history, now, period=period), now)
    return len(kept) <= intensity, kept


def should_restart(restart: RestartType, reason: str) -> bool:
    """Return True if a child of this restart type is restarted after exiting with ``reason``."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return not is_normal_exit(reason)
    return False


Directive = Literal["restart", "stop", "escalate"]
Decider = Callable[[str], tuple[Directive, float]]


def decide_restart(
    restart: RestartType, reason: str, decider: Decider | None = None
) -> tuple[Directive, float]:
    """Return what to do about a child that exited with ``reason``, and a restart delay.

    The restart type rules first (OTP): a temporary child, or a transient one that exited
    normally, stops. An abnormal exit of a child with a ``decider`` is then the decider's call
    (Akka-style Restart / Stop / Escalate); without one it restarts.
    """
    if not should_restart(restart, reason):
        return "stop", 0.0
    if decider is None or is_normal_exit(reason):
        return "restart", 0.0
    directive, delay = decider(reason)
    return directive, max(0.0, float(delay))


def affected_children(strategy: Strategy, order: Sequence[str], failed: str) -> list[str]:
    """Return, in start order, the children a strategy restarts when ``failed`` exits.

    one_for_one and simple_one_for_one restart only the failed child; one_for_all restarts
    every child; rest_for_one restarts the failed child and those started after it.
    """
    if strategy == "one_for_all":
        return list(order)
    if strategy == "rest_for_one":
        return list(order[order.index(failed) :])
    return [failed]


def auto_shutdown_due(
    policy: AutoShutdown, *, exited_significant: bool, significant_still_alive: int
) -> bool:
    """Return True if a supervisor must shut down after a child exited by itself for good.

    Args:
        policy: the supervisor's auto_shutdown flag.
        exited_significant: the child that exited (and is not restarted) was significant.
        significant_still_alive: significant children still running after that exit.
    """
    if policy == "never" or not exited_significant:
        return False
    if policy == "any_significant":
        return True
    return significant_still_alive == 0


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Return the exponential backoff delay before retry ``attempt`` (0-based)."""
    if attempt >= 64:
        return float(cap)
    return float(min(cap, base * (2**attempt)))
