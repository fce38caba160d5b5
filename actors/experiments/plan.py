"""When each fault of an experiment is injected and healed, and on which actors (pure).

Nothing here touches a running tree: the plan is a function of the experiment and its seed,
so the same file and seed give the same plan (see ``protocols.experiment`` for the rules).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from protocols.experiment import (
    ActorFaultStep,
    Experiment,
    FaultStep,
    HostFaultStep,
    LlmFaultStep,
    MessageFaultStep,
    sub_seed,
)

__all__ = [
    "Injection",
    "describe",
    "injection_times",
    "is_lasting",
    "plan_faults",
]


@dataclass(frozen=True, slots=True)
class Injection:
    """One planned injection: fault number ``index`` (its place in the file), its ``count``-th
    injection (1-based), injected ``at`` seconds into the fault phase and healed at ``until``
    (None: it ends by itself, as a kill does)."""

    index: int
    count: int
    at: float
    until: float | None
    step: FaultStep
    seed: int
    """The seed of this injection's own random choices (targets, triggers, delays)."""
    fixed_target: str | None = None
    """The one actor it hits, when replayed from a journal (else chosen by ``pick``)."""


def is_lasting(step: FaultStep) -> bool:
    """Whether an injection of ``step`` stays active until healed (message faults, a kill at a
    crash point, hang, the start and shutdown faults, model faults) rather than acting once (a
    kill now, a kill of a host) or ending by itself after its ``seconds`` (a pause, a pause or
    partition of a host)."""
    if isinstance(step, HostFaultStep):
        return False
    if isinstance(step, ActorFaultStep):
        return not (step.kind == "pause" or (step.kind == "kill" and step.point == "now"))
    return True


def injection_times(step: FaultStep, duration: float, rng: random.Random) -> list[float]:
    """The seconds into the fault phase at which ``step`` is injected (only times before
    ``duration``); jitter draws from ``rng``."""
    if step.at is not None:
        return [step.at] if step.at < duration else []
    if step.schedule is None:
        return [step.after] if step.after < duration else []
    times: list[float] = []
    limit = step.schedule.max_total if step.schedule.max_total is not None else math.inf
    k = 1
    while len(times) < limit:
        at = step.after + k * step.schedule.every
        if step.schedule.jitter:
            at += rng.uniform(0, step.schedule.jitter)
        if at >= duration:
            break
        times.append(at)
        k += 1
    return times


def plan_faults(experiment: Experiment) -> list[Injection]:
    """Every injection of the experiment's faults, in the order they happen (ties in file
    order). A lasting injection is healed after its ``for`` or at the end of the fault phase;
    one that would exceed its fault's ``max_active`` is left out."""
    planned: list[Injection] = []
    for index, step in enumerate(experiment.faults):
        rng = random.Random(sub_seed(experiment.seed, index))  # noqa: S311 - not for security
        active: list[float] = []
        for count, at in enumerate(injection_times(step, experiment.duration, rng), start=1):
            until: float | None = None
            if is_lasting(step):
                until = min(at + step.for_, experiment.duration) if step.for_ else None
                until = experiment.duration if until is None else until
            active = [end for end in active if end > at]
            if step.max_active is not None and len(active) >= step.max_active:
                continue
            if until is not None:
                active.append(until)
            seed = sub_seed(experiment.seed, index, f"injection:{count}") & 0x7FFFFFFF
            planned.append(Injection(index, count, at, until, step, seed))
    planned.sort(key=lambda i: (i.at, i.index, i.count))
    return planned


def describe(step: FaultStep) -> str:
    """A short name of a fault step for progress lines and reports."""
    if isinstance(step, MessageFaultStep | ActorFaultStep | HostFaultStep):
        return f"{step.kind} {step.target}"
    assert isinstance(step, LlmFaultStep)  # noqa: S101 - the last kind of step
    return f"llm_error {step.error}"
