"""The invariants an experiment checks, as pure functions over what the run recorded.

Each takes plain data (the ledger report, the supervision events, the operation history, the
scheduler's tasks, the processes seen) and returns a :class:`Verdict`: ok, a one-line detail,
and a counterexample when it failed. The runner gathers the data; nothing here touches a tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocols.scheduler import FINAL_STATES
from protocols.supervision import SupervisionEvent

__all__ = [
    "FAIL_FAST_SLACK",
    "LLM_WAIT_SLACK",
    "RESTART_WINDOW_SLACK",
    "Verdict",
    "fail_fast",
    "liveness_after_heal",
    "llm_budget",
    "no_lost_messages",
    "no_orphans",
    "restart_decisions",
    "restart_limits",
    "single_instance",
    "tasks_terminal",
    "tree_alive",
]

FAIL_FAST_SLACK = 0.5
"""Seconds an operation may outlive its timeout before ``fail_fast`` calls it a wedge (the
time to notice the timeout and raise)."""
RESTART_WINDOW_SLACK = 0.25
"""Seconds of tolerance on the edges of a restart window (events are stamped a little after
the decision they record)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str
    counterexample: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "counterexample": self.counterexample}


def no_lost_messages(ledger: Mapping[str, Any]) -> Verdict:
    """Every message sent ended handled, reported undelivered, dead-lettered or dropped by an
    injected fault (the ledger balances once the tree is quiet)."""
    total = ledger["total"]
    accounted = (
        total["handled"] + total["undelivered"] + total["dead_lettered"] + total["dropped_by_fault"]
    )
    unreported = int(ledger.get("unreported", 0))
    if total["sent"] == accounted:
        detail = (
            f"sent {total['sent']} = handled {total['handled']} + undelivered "
            f"{total['undelivered']} + dead-lettered {total['dead_lettered']} + dropped by "
            f"fault {total['dropped_by_fault']}"
        )
        return Verdict(True, detail)
    rows = {
        kind: counts
        for kind, counts in ledger.get("by_kind", {}).items()
        if counts["sent"]
        != counts["handled"]
        + counts["undelivered"]
        + counts["dead_lettered"]
        + counts["dropped_by_fault"]
    }
    detail = (
        f"sent {total['sent']} but {accounted} accounted for "
        f"({total['sent'] - accounted:+d}); {unreported} incarnation(s) killed without reporting"
    )
    return Verdict(False, detail, {"total": dict(total), "unbalanced_kinds": rows})


def _root_of(events: Sequence[SupervisionEvent], root: str) -> list[SupervisionEvent]:
    return [
        e
        for e in events
        if e.supervisor == root and e.event in ("intensity_exceeded", "supervisor_shutdown")
    ]


def tree_alive(events: Sequence[SupervisionEvent], exit_reason: str | None, root: str) -> Verdict:
    """The root supervisor never gave up (checked before the runner stops the tree)."""
    gave_up = _root_of(events, root)
    if exit_reason is None and not gave_up:
        return Verdict(True, f"{root} ran to the end")
    first = gave_up[0] if gave_up else None
    counter = first.model_dump(mode="json") if first is not None else {"exit_reason": exit_reason}
    return Verdict(False, f"{root} gave up: {exit_reason or (first and first.reason)}", counter)


def restart_decisions(
    events: Sequence[SupervisionEvent],
) -> dict[str, list[list[tuple[float, bool, SupervisionEvent]]]]:
    """Per supervisor and per incarnation of it, each restart decision it made: (when,
    allowed, the event that asked for it). A decision is asked for by a child's exit or a
    failed restart (which is retried), and its outcome is the next restart, failed start or
    ``intensity_exceeded`` of that supervisor (a group restart is one decision; a child's
    ``restart_limit_exceeded`` is its own limit's decision, not one of the intensity). A
    supervisor's shutdown ends an incarnation: the next starts with an empty history."""
    epochs: dict[str, list[list[tuple[float, bool, SupervisionEvent]]]] = {}
    pending: dict[str, SupervisionEvent] = {}
    for event in sorted(events, key=lambda e: e.seq):
        sup = event.supervisor
        current = epochs.setdefault(sup, [[]])
        if event.event == "child_exited":
            pending.setdefault(sup, event)
        elif event.event in ("child_restarted", "start_failed", "intensity_exceeded"):
            cause = pending.pop(sup, None)
            if cause is not None:
                current[-1].append((cause.time, event.event != "intensity_exceeded", cause))
            if event.event == "start_failed" and cause is not None:
                pending[sup] = event  # retried: another decision follows
        elif event.event == "restart_limit_exceeded":
            pending.pop(sup, None)  # the child's own limit decided, not the intensity
        elif event.event == "supervisor_shutdown":
            pending.pop(sup, None)
            current.append([])
    return epochs


def restart_limits(
    events: Sequence[SupervisionEvent], limits: Mapping[str, tuple[int, float]]
) -> Verdict:
    """No supervisor restarted more than its intensity within its period without giving up,
    and none gave up before it had (``limits``: supervisor path -> (intensity, period))."""
    checked = 0
    for sup, incarnations in restart_decisions(events).items():
        if sup not in limits:
            continue
        intensity, period = limits[sup]
        for decisions in incarnations:
            verdict = _within_limits(sup, decisions, intensity, period)
            if verdict is not None:
                return verdict
            checked += len(decisions)
    return Verdict(True, f"{checked} restart decision(s) within their supervisors' limits")


def _within_limits(
    sup: str, decisions: list[tuple[float, bool, SupervisionEvent]], intensity: int, period: float
) -> Verdict | None:
    allowed_times: list[float] = []
    for when, allowed, cause in decisions:
        recent = [t for t in allowed_times if t >= when - period + RESTART_WINDOW_SLACK]
        if allowed and len(recent) + 1 > intensity:
            detail = (
                f"{sup} restarted {len(recent) + 1} times within {period} s "
                f"(intensity {intensity}) and did not give up"
            )
            return Verdict(False, detail, {"supervisor": sup, "at": cause.model_dump()})
        window = [t for t in allowed_times if t >= when - period - RESTART_WINDOW_SLACK]
        if not allowed and len(window) < intensity:
            detail = (
                f"{sup} gave up after {len(window)} restart(s) within {period} s "
                f"(intensity {intensity}): too early"
            )
            return Verdict(False, detail, {"supervisor": sup, "at": cause.model_dump()})
        if allowed:
            allowed_times.append(when)
    return None


def single_instance(events: Sequence[SupervisionEvent]) -> Verdict:
    """No child ran twice at once: every start of a child follows the exit of its previous
    incarnation (on any host)."""
    running: dict[str, SupervisionEvent] = {}
    starts = 0
    for event in sorted(events, key=lambda e: e.seq):
        if event.child_id is None:
            if event.event == "supervisor_shutdown":
                for path in [p for p in running if p.startswith(event.supervisor + "/")]:
                    del running[path]
            continue
        path = f"{event.supervisor}/{event.child_id}"
        if event.event in ("child_started", "child_restarted"):
            starts += 1
            previous = running.get(path)
            if previous is not None:
                detail = f"{path} started again while its previous incarnation ran"
                return Verdict(
                    False,
                    detail,
                    {"running": previous.model_dump(), "started": event.model_dump()},
                )
            running[path] = event
        elif event.event in ("child_exited", "child_terminated", "child_deleted"):
            running.pop(path, None)
    return Verdict(True, f"{starts} start(s), never two incarnations of one child at once")


def fail_fast(history: Iterable[Mapping[str, Any]], slack: float = FAIL_FAST_SLACK) -> Verdict:
    """No operation outlived its timeout: each ended (ok or fail) within ``timeout + slack``
    seconds, and none was still waiting when the run ended."""
    invoked: dict[int, Mapping[str, Any]] = {}
    ended = 0
    for op in history:
        if op["type"] == "invoke":
            invoked[op["op"]] = op
            continue
        start = invoked.pop(op["op"], None)
        if start is None:
            continue
        ended += 1
        timeout = start.get("timeout")
        latency = op.get("latency")
        if timeout is not None and latency is not None and latency > timeout + slack:
            detail = (
                f"{start['f']} on {start.get('value')} took {latency:.3f} s, over its "
                f"{timeout} s timeout"
            )
            return Verdict(False, detail, {"invoke": dict(start), "end": dict(op)})
    if invoked:
        first = next(iter(invoked.values()))
        detail = f"{len(invoked)} operation(s) never ended, first: {first['f']}"
        return Verdict(False, detail, {"invoke": dict(first)})
    return Verdict(True, f"{ended} operation(s), each ended within its timeout")


def tasks_terminal(tasks: Sequence[Mapping[str, Any]]) -> Verdict:
    """Every scheduler task reached a final state."""
    open_tasks = [t for t in tasks if t["state"] not in FINAL_STATES]
    if not open_tasks:
        return Verdict(True, f"{len(tasks)} task(s), all in a final state")
    first = open_tasks[0]
    detail = (
        f"{len(open_tasks)} of {len(tasks)} task(s) not final, first {first['id']} {first['state']}"
    )
    return Verdict(False, detail, dict(first))


def no_orphans(strays: Sequence[Mapping[str, Any]], checked: int) -> Verdict:
    """No actor process outside the tree, during the run or after it (``strays``: processes
    found that no live actor accounts for, with when they were seen)."""
    if not strays:
        return Verdict(True, f"{checked} check(s) of the actor processes found no orphan")
    first = strays[0]
    detail = f"{len(strays)} orphan process(es), first pid {first['pid']} seen {first['when']}"
    return Verdict(False, detail, list(strays[:5]))


LLM_WAIT_SLACK = 0.05
"""Seconds a retry may come before its Retry-After has passed (clock and scheduling jitter)."""


def llm_budget(requests: Sequence[Mapping[str, Any]], retry_after: float) -> Verdict:
    """Within each conversation (``conversation``: a retry has the same one), the request
    after a 429 came no sooner than its Retry-After (``requests``: the model's request log:
    ``at``, ``finished_at``, ``status``, ``conversation``)."""
    by_conversation: dict[Any, list[Mapping[str, Any]]] = {}
    for request in requests:
        by_conversation.setdefault(request.get("conversation"), []).append(request)
    limited = 0
    for conversation in by_conversation.values():
        ordered = sorted(conversation, key=lambda r: r["at"])
        for before, after in itertools.pairwise(ordered):
            if before["status"] != 429:
                continue
            limited += 1
            waited = after["at"] - before["finished_at"]
            if waited < retry_after - LLM_WAIT_SLACK:
                detail = f"a retry came {waited:.3f} s after a 429 that asked for {retry_after} s"
                return Verdict(False, detail, {"limited": dict(before), "next": dict(after)})
    detail = f"{len(requests)} model request(s); each of {limited} retried 429(s) was waited out"
    return Verdict(True, detail)


def liveness_after_heal(answers: Mapping[str, float | None], within: float) -> Verdict:
    """Every live actor answered within ``within`` seconds after the last fault was healed
    (``answers``: path -> seconds to answer, or None when it did not)."""
    slow = {path: t for path, t in answers.items() if t is None or t > within}
    if not slow:
        worst = max((t for t in answers.values() if t is not None), default=0.0)
        return Verdict(True, f"{len(answers)} actor(s) answered, slowest in {worst:.3f} s")
    detail = f"{len(slow)} of {len(answers)} actor(s) did not answer within {within} s"
    return Verdict(False, detail, slow)
