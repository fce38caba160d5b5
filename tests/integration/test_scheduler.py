"""The scheduler on real processes: SIGKILL at any moment loses nothing acknowledged.

A command is *acknowledged* when its ask returned a reply. An ask that failed (AskTimeout,
ActorNotFound, ActorExited: the scheduler was killed while it was in flight) is
*unacknowledged*: it may or may not have been applied, but never half. So after the storm:

* a task whose last command was acknowledged is exactly (every field) as its last reply said;
* a task whose last command was not is either exactly as its last acknowledged reply said, or
  in the state that command leads to; a submission never acknowledged may be missing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors import ActorExited, ActorNotFound, AskTimeout, RequestRejected, Runtime
from actors.services.scheduler_journal import Journal
from protocols import Message
from protocols.scheduler import (
    CancelTask,
    CompleteTask,
    FailTask,
    GetTask,
    ListTasks,
    StartTask,
    SubmitTask,
    TaskInfo,
    Tasks,
    WaitTask,
)
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._scheduler_workers import Audits, GetAudits

pytestmark = pytest.mark.integration
tcp_only = pytest.mark.parametrize("base", ["multiprocTCPBase"])

S = "root/scheduler"
UNACKNOWLEDGED = (AskTimeout, ActorNotFound, ActorExited)
ASK_TIMEOUT = 0.5
REPO = Path(__file__).resolve().parents[2]


def scheduler(**args: object) -> ChildSpec:
    return ChildSpec(
        id="scheduler",
        start="actors.services.scheduler:Scheduler",
        args={"audit": "root/audit", **args},
    )


def pid_of(rt: Runtime, child_id: str, supervisor: str = "root") -> int:
    (info,) = [c for c in rt.which_children(supervisor) if c.id == child_id]
    assert info.pid is not None
    return info.pid


# --- Reaping and deadlines across processes ------------------------------------------------------


@tcp_only
def test_a_task_whose_agent_is_sigkilled_is_reaped_and_audited(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=5,
            children=[
                ChildSpec(id="audit", start="tests.integration._scheduler_workers:AuditRecorder"),
                SupervisorSpec(
                    id="agents",
                    children=[ChildSpec(id="a1", start="tests.integration._workers:Echo")],
                ),
                scheduler(),
            ],
        )
    )
    submitted = rt.ask(S, SubmitTask(description="job", agent="root/agents/a1"))
    assert isinstance(submitted, TaskInfo)
    rt.ask(S, StartTask(task_id=submitted.id))

    os.kill(pid_of(rt, "a1", "root/agents"), signal.SIGKILL)
    reaped = rt.ask(S, WaitTask(task_id=submitted.id, timeout=10.0), timeout=12.0)
    audits = rt.ask("root/audit", GetAudits(count=1, timeout=10.0), timeout=12.0)

    assert isinstance(reaped, TaskInfo)
    assert ("failed", "agent root/agents/a1 exited: killed") == (reaped.state, reaped.reason)
    assert isinstance(audits, Audits)
    assert [(S, "task.reaped", submitted.id)] == [
        (r["actor"], r["action"], r["detail"]["task_id"]) for r in audits.records
    ]


@tcp_only
def test_a_deadline_times_out_a_running_task_in_its_own_process(start_tree: StartTree) -> None:
    rt = start_tree(SupervisorSpec(id="root", children=[scheduler()]))
    submitted = rt.ask(S, SubmitTask(description="job", max_duration=0.3))
    assert isinstance(submitted, TaskInfo)
    rt.ask(S, StartTask(task_id=submitted.id))

    finished = rt.ask(S, WaitTask(task_id=submitted.id, timeout=10.0), timeout=12.0)

    assert isinstance(finished, TaskInfo)
    assert "timed_out" == finished.state


# --- SIGKILL storms --------------------------------------------------------------------------


class Killer(threading.Thread):
    """SIGKILLs the published pid at random moments (the fault, not a synchronisation)."""

    def __init__(self, seed: int) -> None:
        super().__init__(daemon=True)
        self.rng = random.Random(seed)  # noqa: S311 - reproducible fault timing
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.done = threading.Event()
        self.kills = 0

    def publish(self, pid: int) -> None:
        with self.lock:
            self.pid = pid

    def killed_last(self) -> bool:
        with self.lock:
            return self.pid is None

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(0.01, 0.2)):
            with self.lock:
                pid, self.pid = self.pid, None
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1


@dataclass
class Known:
    """What the test knows of one task."""

    acked: TaskInfo | None = None  # the last acknowledged reply
    maybe: str | None = None  # the state an unacknowledged later command leads to


def _target(message: Message) -> str:
    return {
        SubmitTask: "pending",
        StartTask: "running",
        CompleteTask: "completed",
        FailTask: "failed",
        CancelTask: "cancelled",
    }[type(message)]


def _check_possible(known: Known, seen: TaskInfo | None, task_id: str) -> None:
    """``seen`` is the task after unacknowledged commands: old state exactly, or the new one."""
    if seen is None:
        assert known.acked is None, f"{task_id}: acknowledged, then lost"
        return
    if known.acked is not None and seen.state == known.acked.state:
        assert known.acked == seen, f"{task_id}: changed without a transition"
        return
    assert known.maybe == seen.state, f"{task_id}: {seen.state} was never asked for"
    finished = seen.state in ("completed", "failed", "cancelled")
    assert finished == (seen.finished_at is not None), f"{task_id}: half applied: {seen}"


def _command_for(rng: random.Random, task_id: str, state: str) -> Message:
    """A valid command for a task in ``state`` (mostly), or an invalid one (sometimes)."""
    valid: dict[str, list[Message]] = {
        "pending": [StartTask(task_id=task_id, agent="root/w"), CancelTask(task_id=task_id)],
        "running": [
            CompleteTask(task_id=task_id, result={"by": task_id}),
            FailTask(task_id=task_id, reason="broke"),
            CancelTask(task_id=task_id),
        ],
    }
    choices = valid.get(state, [])
    if choices and rng.random() < 0.85:
        return rng.choice(choices)
    return rng.choice([StartTask(task_id=task_id), CompleteTask(task_id=task_id)])


@pytest.mark.slow
@tcp_only
def test_acknowledged_tasks_survive_sigkills_of_the_scheduler_at_any_moment(
    start_tree: StartTree,
) -> None:
    rt = start_tree(SupervisorSpec(id="root", intensity=1000, period=1, children=[scheduler()]))
    rng = random.Random(20240611)  # noqa: S311 - a reproducible workload
    known: dict[str, Known] = {}
    killer = Killer(seed=7)
    last_restart = max(e.seq for e in rt.events())
    killer.publish(pid_of(rt, "scheduler"))
    unacknowledged = 0
    killer.start()

    def ask(message: Message) -> Message | RequestRejected | None:
        """The reply, the refusal, or None when unacknowledged."""
        try:
            return rt.ask(S, message, timeout=ASK_TIMEOUT)
        except RequestRejected as exc:
            return exc
        except UNACKNOWLEDGED:
            return None

    def follow_restart() -> None:
        nonlocal last_restart
        if killer.killed_last():
            event = rt.wait_event(
                "child_restarted", child_id="scheduler", after=last_restart, timeout=10.0
            )
            last_restart = event.seq
            killer.publish(pid_of(rt, "scheduler"))

    try:
        for step in range(5000):  # until enough of a storm, whatever the machine load
            follow_restart()
            if step >= 150 and killer.kills >= 10:  # enough of a storm
                break
            uncertain = [i for i, k in known.items() if k.maybe is not None]
            if uncertain:  # learn what became of an unacknowledged command first
                task_id = uncertain[0]
                reply = ask(GetTask(task_id=task_id))
                if reply is None:
                    continue
                seen = reply if isinstance(reply, TaskInfo) else None
                assert seen is not None or reply.error == "UnknownTask"  # type: ignore[union-attr]
                _check_possible(known[task_id], seen, task_id)
                known[task_id] = Known(acked=seen)
                if seen is None:
                    del known[task_id]
                continue
            live = [
                i
                for i, k in known.items()
                if k.acked is not None and k.acked.state in ("pending", "running")
            ]
            if not live or rng.random() < 0.3:
                task_id = f"t{step}"
                message: Message = SubmitTask(
                    description=f"job {step}",
                    task_id=task_id,
                    priority=rng.choice(["critical", "normal", "low"]),
                )
                known[task_id] = Known()
            else:
                task_id = rng.choice(live)
                acked = known[task_id].acked
                assert acked is not None
                message = _command_for(rng, task_id, acked.state)
            reply = ask(message)
            if reply is None:
                unacknowledged += 1
                known[task_id].maybe = _target(message)
            elif isinstance(reply, RequestRejected):
                assert "InvalidTransition" == reply.error, reply
                assert known[task_id].acked is not None
            else:
                assert isinstance(reply, TaskInfo)
                assert _target(message) == reply.state
                known[task_id] = Known(acked=reply)
    finally:
        killer.done.set()
        killer.join()

    follow_restart()
    os.kill(pid_of(rt, "scheduler"), signal.SIGKILL)  # the check reads a freshly loaded journal
    rt.wait_event("child_restarted", child_id="scheduler", after=last_restart, timeout=10.0)
    listed = rt.ask(S, ListTasks(), timeout=10.0)
    assert isinstance(listed, Tasks)
    found = {t.id: t for t in listed.tasks}

    assert killer.kills >= 10
    assert set(found) <= set(known)
    for task_id, k in known.items():
        if k.maybe is None:
            assert k.acked == found.get(task_id), f"{task_id} is not as last acknowledged"
        else:
            _check_possible(k, found.get(task_id), task_id)


@pytest.mark.parametrize("seed", range(5))
def test_a_journal_writer_killed_at_any_moment_keeps_every_acknowledged_commit(
    tmp_path: Path, seed: int
) -> None:
    """Without actors: a process commits and prints; SIGKILL it after a random number of lines."""
    db = tmp_path / "scheduler.db"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._scheduler_workers", str(db), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    acked: dict[str, str] = {}
    for _ in range(random.Random(seed).randint(20, 400)):  # noqa: S311 - reproducible
        task_id, state = writer.stdout.readline().split()
        acked[task_id] = state
    writer.send_signal(signal.SIGKILL)
    for line in writer.stdout:  # printed before the kill: acknowledged too
        task_id, state = line.split()
        acked[task_id] = state
    writer.wait()
    writer.stdout.close()

    journal = Journal(db)
    stored = {t.id: t.state for t in journal.load_tasks()}
    journal.close()
    # The one commit that may have landed without its line being printed:
    differences = {
        i: (acked.get(i), stored.get(i))
        for i in set(acked) | set(stored)
        if acked.get(i) != stored.get(i)
    }

    assert -signal.SIGKILL == writer.returncode
    assert len(differences) <= 1, differences
    for before, after in differences.values():
        assert (before, after) in NEXT_STATES, differences


NEXT_STATES = {
    (None, "pending"),
    ("pending", "running"),
    ("running", "completed"),
    ("running", "failed"),
}
