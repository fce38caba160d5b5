"""The run book: runs, their tree, their epochs and their transitions (pure; no Thespian, no I/O).

Transitions (every other command on a run is ``InvalidTransition`` and changes nothing)::

    status      CompleteRun  FailRun   StopRun              ResumeRun         AttachAgent
    running     completed    failed    stopped (+subtree)   -                 running
    stopped     stays (*)    stays (*) stays (+subtree)     running, epoch+1  -
    failed      -            -         stays (+subtree)     running, epoch+1  -
    completed   -            -         stays (+subtree)     -                 -

(*) a completion or failure that arrives after the stop (the work was already under way) is
recorded, its result or reason kept, but the run stays ``stopped``.

``completed`` is final: its result stands. ``failed`` and ``stopped`` can be resumed (a retry,
or a run cancelled by mistake), each time in a new epoch, and only while the parent (if any)
runs. CompleteRun / FailRun from an epoch older than the run's are *stale*: they are reported
as such and change nothing, whatever the run's status. StopRun on any run stops the running
runs of its subtree.

Owner isolation is enforced here, at the one place runs are looked up (``_own``): a run of
another owner raises exactly the same ``UnknownRun`` as a missing one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protocols.common import ErrorName
from protocols.runs import RUN_STATUSES, RunInfo, RunStatus

FIRST_EPOCH = 1


class RunError(Exception):
    """A command was refused; ``error`` is the ErrorReply name, ``message`` says why."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


def unknown_run(run_id: str) -> RunError:
    """Return the one error for a run that is missing *or* belongs to another owner."""
    return RunError(ErrorName.UNKNOWN_RUN, f"no run {run_id!r}")


@dataclass(frozen=True)
class Stale:
    """A completion or failure from an older epoch: ignored; ``run`` is unchanged."""

    run: RunInfo
    epoch: int

    @property
    def detail(self) -> str:
        """Say what was ignored."""
        return (
            f"stale epoch ignored: epoch {self.epoch} of run {self.run.id!r} "
            f"is older than its current epoch {self.run.epoch}"
        )


@dataclass(frozen=True)
class StopOutcome:
    """What StopRun did: runs it stopped, the subtree, and the agents to terminate."""

    stopped: list[RunInfo]
    subtree: list[str]
    agents: list[str] = field(default_factory=list)


class RunBook:
    """Every run, indexed by id and by parent.

    Args:
        runs: runs to start with (e.g. loaded from the store), in any order.
    """

    def __init__(self, runs: Iterable[RunInfo] = ()) -> None:
        self._runs: dict[str, RunInfo] = {}
        self._children: dict[str, list[str]] = {}
        for run in sorted(runs, key=lambda r: r.seq):
            self._put(run)
        self._seq = max((r.seq for r in self._runs.values()), default=0)

    def __len__(self) -> int:
        return len(self._runs)

    # --- Queries ------------------------------------------------------------------------------

    def get(self, run_id: str, owner: str) -> RunInfo:
        """Return ``owner``'s run ``run_id``.

        Raises:
            RunError: UnknownRun (missing, or another owner's).
        """
        return self._own(run_id, owner)

    def runs(
        self, owner: str, *, status: RunStatus | None = None, parent: str | None = None
    ) -> list[RunInfo]:
        """Return ``owner``'s runs in creation order, filtered by ``status`` and ``parent``."""
        return [
            r
            for r in self._runs.values()
            if r.owner == owner
            and (status is None or r.status == status)
            and (parent is None or r.parent == parent)
        ]

    def all_runs(self) -> list[RunInfo]:
        """Return every run of every owner, in creation order (for the store and tests)."""
        return list(self._runs.values())

    def subtree(self, run_id: str) -> list[str]:
        """Return ``run_id`` and its descendants, depth first in creation order (unchecked id)."""
        out: list[str] = []
        stack = [run_id]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(self._children.get(current, [])))
        return out

    def descendants(self, run_id: str) -> list[str]:
        """Return the descendants of ``run_id`` (not itself)."""
        return self.subtree(run_id)[1:]

    def statistics(self) -> dict[str, int]:
        """Return how many runs are in each status, and the total (over every owner)."""
        counts = Counter(r.status for r in self._runs.values())
        stats: dict[str, int] = {status: counts.get(status, 0) for status in RUN_STATUSES}
        stats["total"] = len(self._runs)
        return stats

    # --- Commands -----------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        goal: str,
        now: float,
        *,
        parent: str | None = None,
        agents: Iterable[str] = (),
    ) -> RunInfo:
        """Create a running run at epoch 1, named ``run-<seq>``.

        Raises:
            RunError: UnknownRun (the parent), InvalidTransition (the parent is not running).
        """
        if parent is not None:
            up = self._own(parent, owner)
            if up.status != "running":
                raise RunError(
                    "InvalidTransition",
                    f"parent run {parent!r} is {up.status}; a new run needs a running parent",
                )
        seq = self._seq + 1
        run_id = f"run-{seq}"
        while run_id in self._runs:  # only if ids were loaded from elsewhere; never reuse one
            seq += 1
            run_id = f"run-{seq}"
        run = RunInfo(
            id=run_id,
            seq=seq,
            owner=owner,
            parent=parent,
            status="running",
            epoch=FIRST_EPOCH,
            goal=goal,
            agents=_unique(agents),
            created_at=now,
            updated_at=now,
        )
        self._seq = seq
        self._put(run)
        return run

    def complete(
        self,
        run_id: str,
        owner: str,
        epoch: int,
        result: Any,
        now: float,
    ) -> RunInfo | Stale:
        """Complete a running run in its current epoch with ``result`` (a stopped one keeps it
        and stays stopped).

        Raises:
            RunError: UnknownRun, InvalidEpoch, InvalidTransition, InvalidResult.
        """
        run = self._own(run_id, owner)
        checked = self._check_epoch(run, epoch, "CompleteRun")
        if checked is not None:
            return checked
        check_json(result)
        status = "stopped" if run.status == "stopped" else "completed"
        return self._replace(run, status=status, result=result, updated_at=now)

    def fail(self, run_id: str, owner: str, epoch: int, reason: str, now: float) -> RunInfo | Stale:
        """Fail a running run in its current epoch with ``reason`` (a stopped one keeps it and
        stays stopped).

        Raises:
            RunError: UnknownRun, InvalidEpoch, InvalidTransition.
        """
        run = self._own(run_id, owner)
        checked = self._check_epoch(run, epoch, "FailRun")
        if checked is not None:
            return checked
        status = "stopped" if run.status == "stopped" else "failed"
        return self._replace(run, status=status, reason=reason, updated_at=now)

    def stop(self, run_id: str, owner: str, now: float) -> StopOutcome:
        """Stop the running runs of ``run_id``'s subtree; name the agents to terminate.

        The agents are those of every run in the subtree (whatever its status), minus those
        also attached to a running run outside it: stopping one tree never hurts another.

        Raises:
            RunError: UnknownRun.
        """
        self._own(run_id, owner)
        subtree = self.subtree(run_id)
        inside = set(subtree)
        stopped = [
            self._replace(self._runs[rid], status="stopped", updated_at=now)
            for rid in subtree
            if self._runs[rid].status == "running"
        ]
        in_use = {
            agent
            for r in self._runs.values()
            if r.id not in inside and r.status == "running"
            for agent in r.agents
        }
        agents = _unique(a for rid in subtree for a in self._runs[rid].agents if a not in in_use)
        return StopOutcome(stopped=stopped, subtree=subtree, agents=agents)

    def resume(self, run_id: str, owner: str, now: float) -> RunInfo:
        """Run a stopped or failed run again in a new epoch.

        Raises:
            RunError: UnknownRun, InvalidTransition (running, completed, or parent not running).
        """
        run = self._own(run_id, owner)
        if run.status not in ("stopped", "failed"):
            raise RunError(
                "InvalidTransition",
                f"ResumeRun applies to stopped or failed runs; run {run_id!r} is {run.status}",
            )
        if run.parent is not None:
            up = self._runs[run.parent]
            if up.status != "running":
                raise RunError(
                    "InvalidTransition",
                    f"parent run {run.parent!r} of run {run_id!r} is {up.status}; "
                    "resume the parent first",
                )
        return self._replace(
            run, status="running", epoch=run.epoch + 1, reason=None, result=None, updated_at=now
        )

    def attach(self, run_id: str, owner: str, agent: str, now: float) -> RunInfo:
        """Add ``agent`` to a running run's agents (once).

        Raises:
            RunError: UnknownRun, InvalidTransition (the run is not running).
        """
        run = self._own(run_id, owner)
        if run.status != "running":
            raise RunError(
                "InvalidTransition",
                f"AttachAgent applies to running runs; run {run_id!r} is {run.status}",
            )
        if agent in run.agents:
            return run
        return self._replace(run, agents=[*run.agents, agent], updated_at=now)

    # --- Internals ------------------------------------------------------------------------------

    def _own(self, run_id: str, owner: str) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None or run.owner != owner:
            raise unknown_run(run_id)
        return run

    def _check_epoch(self, run: RunInfo, epoch: int, command: str) -> Stale | None:
        if epoch < run.epoch:
            return Stale(run=run, epoch=epoch)
        if epoch > run.epoch:
            raise RunError(
                "InvalidEpoch",
                f"{command} names epoch {epoch} of run {run.id!r}, whose current "
                f"epoch is {run.epoch}",
            )
        if run.status not in ("running", "stopped"):
            raise RunError(
                "InvalidTransition",
                f"{command} applies to running (or stopped) runs; run {run.id!r} is {run.status}",
            )
        return None

    def _put(self, run: RunInfo) -> None:
        if run.id not in self._runs and run.parent is not None:
            self._children.setdefault(run.parent, []).append(run.id)
        self._runs[run.id] = run

    def _replace(self, run: RunInfo, **changes: Any) -> RunInfo:
        new = run.model_copy(update=changes)
        self._runs[run.id] = new
        return new


def check_json(value: Any) -> None:
    """Check that ``value`` is plain JSON (dicts with str keys, lists, str, finite numbers...).

    Raises:
        RunError: InvalidResult, naming what is not JSON.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RunError("InvalidResult", f"the result is not plain JSON: {exc}") from exc
    if json.loads(text) != value:
        raise RunError(
            "InvalidResult", "the result does not survive a JSON round trip (tuples, non-str keys?)"
        )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


__all__ = [
    "FIRST_EPOCH",
    "RunBook",
    "RunError",
    "Stale",
    "StopOutcome",
    "check_json",
    "unknown_run",
]
