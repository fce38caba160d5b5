"""Pure supervision decisions: restart windows, restart types, strategies, auto shutdown.

No Thespian here: the supervisor actor calls these and they are tested directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from protocols.supervision import is_normal_exit
from protocols.topology import AutoShutdown, RestartLimit, RestartType, Strategy

__all__ = [
    "Decider",
    "Directive",
    "LimitVerdict",
    "affected_children",
    "auto_shutdown_due",
    "backoff_delay",
    "decide_restart",
    "prune",
    "record_child_restart",
    "record_restart",
    "reset_on_success",
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


LimitVerdict = Literal["restart", "stop", "escalate"]


def record_child_restart(
    history: tuple[float, ...], now: float, *, limit: RestartLimit
) -> tuple[LimitVerdict, tuple[float, ...]]:
    """Add a restart of one child at ``now`` and judge it against the child's own limit.

    The restarts counted are those since the last reset (``reset_on_success``), and of those
    only the ones within ``limit.within`` seconds when it is set. The restart is allowed while
    they, this one included, number at most ``limit.max_restarts``; beyond, the verdict is
    ``limit.on_limit`` (``stop``: this child stays down; ``escalate``: its supervisor gives up).

    Returns:
        (the verdict, the history including ``now``).
    """
    kept = history if limit.within is None else prune(history, now, period=limit.within)
    kept = (*kept, now)
    if len(kept) <= limit.max_restarts:
        return "restart", kept
    return limit.on_limit, kept


def reset_on_success(history: tuple[float, ...], limit: RestartLimit) -> tuple[float, ...]:
    """Return a child's restart history after it reported a success: empty when its limit
    resets on success (Akka's BackoffSupervisor resetBackoff), else unchanged."""
    return () if limit.reset_on == "success" else history


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
