"""The scheduler worker on simpleSystemBase: commands, refusals, deadlines, reaping, restarts."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from actors import ActorCrashed, RequestRejected, Runtime
from protocols import Message
from protocols.scheduler import (
    CancelTask,
    CompleteTask,
    FailTask,
    GetStatistics,
    GetTask,
    ListTasks,
    NextTask,
    NoPendingTask,
    SchedulerStatistics,
    StartTask,
    SubmitTask,
    TaskInfo,
    Tasks,
    WaitTask,
)
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._scheduler_workers import Audits, GetAudits
from tests.integration._workers import Crash

pytestmark = pytest.mark.parametrize("base", ["simpleSystemBase"])

S = "root/scheduler"
A1 = "root/agents/a1"
A2 = "root/agents/a2"


def tree(**args: object) -> SupervisorSpec:
    """An audit recorder, two agents under their own supervisor, and the scheduler."""
    return SupervisorSpec(
        id="root",
        intensity=10,
        children=[
            ChildSpec(id="audit", start="tests.integration._scheduler_workers:AuditRecorder"),
            SupervisorSpec(
                id="agents",
                intensity=10,
                children=[
                    ChildSpec(id="a1", start="tests.integration._workers:Echo"),
                    ChildSpec(id="a2", start="tests.integration._workers:Echo"),
                ],
            ),
            ChildSpec(
                id="scheduler",
                start="actors.services.scheduler:Scheduler",
                args={"audit": "root/audit", **args},
            ),
        ],
    )


@pytest.fixture
def rt(start_tree: StartTree) -> Runtime:
    return start_tree(tree())


def task(rt: Runtime, message: Message) -> TaskInfo:
    reply = rt.ask(S, message)
    assert isinstance(reply, TaskInfo)
    return reply


def rejected(rt: Runtime, message: Message) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        rt.ask(S, message)
    return info.value


def in_state(rt: Runtime, state: str, **submit: object) -> TaskInfo:
    """Submit a task and drive it to ``state``."""
    t = task(rt, SubmitTask(description="job", **submit))
    steps: dict[str, list[Message]] = {
        "pending": [],
        "running": [StartTask(task_id=t.id)],
        "completed": [StartTask(task_id=t.id), CompleteTask(task_id=t.id)],
        "failed": [StartTask(task_id=t.id), FailTask(task_id=t.id, reason="x")],
        "cancelled": [CancelTask(task_id=t.id)],
    }
    for step in steps[state]:
        t = task(rt, step)
    assert state == t.state
    return t


# --- The life cycle ------------------------------------------------------------------------


def test_a_submitted_task_is_pending_with_its_fields(rt: Runtime) -> None:
    before = time.time()

    t = task(
        rt, SubmitTask(description="write the report", priority="high", agent=A1, max_duration=30.0)
    )

    assert "pending" == t.state
    assert ("write the report", "high", A1, 30.0) == (
        t.description,
        t.priority,
        t.agent,
        t.max_duration,
    )
    assert before <= t.created_at <= time.time()
    assert (None, None, None, None) == (t.started_at, t.finished_at, t.result, t.reason)
    assert t == task(rt, GetTask(task_id=t.id))


def test_a_task_runs_to_completion_with_its_result(rt: Runtime) -> None:
    t = task(rt, SubmitTask(description="job"))

    running = task(rt, StartTask(task_id=t.id, agent=A1))
    done = task(rt, CompleteTask(task_id=t.id, result={"output": "42", "steps": [1, 2]}))

    assert ("running", A1) == (running.state, running.agent)
    assert running.started_at is not None
    assert "completed" == done.state
    assert {"output": "42", "steps": [1, 2]} == done.result
    assert done.finished_at is not None
    assert done.finished_at >= running.started_at
    assert done == task(rt, GetTask(task_id=t.id))


@pytest.mark.parametrize(
    ("start_state", "command", "end_state"),
    [
        ("running", lambda i: FailTask(task_id=i, reason="tool broke"), "failed"),
        ("pending", lambda i: CancelTask(task_id=i, reason="not needed"), "cancelled"),
        ("running", lambda i: CancelTask(task_id=i, reason="not needed"), "cancelled"),
    ],
)
def test_fail_and_cancel_finish_a_task_with_a_reason(
    rt: Runtime, start_state: str, command: Callable[[str], Message], end_state: str
) -> None:
    t = in_state(rt, start_state)

    finished = task(rt, command(t.id))

    assert end_state == finished.state
    assert finished.reason in ("tool broke", "not needed")
    assert finished.finished_at is not None


# --- Refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "command", "name"),
    [
        ("pending", lambda i: CompleteTask(task_id=i), "CompleteTask"),
        ("pending", lambda i: FailTask(task_id=i, reason="r"), "FailTask"),
        ("running", lambda i: StartTask(task_id=i), "StartTask"),
        ("completed", lambda i: StartTask(task_id=i), "StartTask"),
        ("failed", lambda i: CompleteTask(task_id=i), "CompleteTask"),
        ("cancelled", lambda i: CancelTask(task_id=i), "CancelTask"),
        ("completed", lambda i: CancelTask(task_id=i), "CancelTask"),
    ],
)
def test_an_invalid_transition_is_refused_naming_the_task_its_state_and_the_command(
    rt: Runtime, state: str, command: Callable[[str], Message], name: str
) -> None:
    t = in_state(rt, state)
    stats = rt.ask(S, GetStatistics())

    error = rejected(rt, command(t.id))

    assert "InvalidTransition" == error.error
    assert name in error.detail
    assert repr(t.id) in error.detail
    assert f"it is {state}" in error.detail
    assert t == task(rt, GetTask(task_id=t.id))
    assert stats == rt.ask(S, GetStatistics())


@pytest.mark.parametrize(
    "command",
    [
        StartTask(task_id="ghost"),
        CompleteTask(task_id="ghost"),
        FailTask(task_id="ghost", reason="r"),
        CancelTask(task_id="ghost"),
        GetTask(task_id="ghost"),
        WaitTask(task_id="ghost", timeout=1.0),
    ],
    ids=lambda m: m.kind,
)
def test_an_unknown_task_id_is_refused(rt: Runtime, command: Message) -> None:
    error = rejected(rt, command)

    assert "UnknownTask" == error.error
    assert "'ghost'" in error.detail


def test_a_duplicate_task_id_is_refused_and_the_first_task_is_kept(rt: Runtime) -> None:
    first = task(rt, SubmitTask(description="one", task_id="t1"))

    error = rejected(rt, SubmitTask(description="two", task_id="t1"))

    assert "DuplicateTask" == error.error
    assert "'t1'" in error.detail
    assert first == task(rt, GetTask(task_id="t1"))
    assert 1 == rt.ask(S, GetStatistics()).total  # type: ignore[attr-defined]


def test_starting_a_task_for_another_agent_than_its_own_is_refused(rt: Runtime) -> None:
    t = task(rt, SubmitTask(description="job", agent=A1))

    error = rejected(rt, StartTask(task_id=t.id, agent=A2))

    assert "AgentMismatch" == error.error
    assert "pending" == task(rt, GetTask(task_id=t.id)).state


def test_an_unexpected_message_is_refused_and_the_scheduler_keeps_running(rt: Runtime) -> None:
    error = rejected(rt, Crash())

    assert "UnexpectedMessage" == error.error
    assert isinstance(rt.ask(S, GetStatistics()), SchedulerStatistics)


# --- NextTask, ListTasks, statistics -------------------------------------------------------------


def test_next_task_hands_out_by_priority_then_in_submission_order_and_starts_it(
    rt: Runtime,
) -> None:
    for n, priority in enumerate(["low", "normal", "critical", "normal", "high", "critical"]):
        rt.ask(S, SubmitTask(description=f"{priority}-{n}", priority=priority, task_id=f"t{n}"))

    handed = [task(rt, NextTask()) for _ in range(6)]

    assert ["t2", "t5", "t4", "t1", "t3", "t0"] == [t.id for t in handed]
    assert all("running" == t.state for t in handed)
    assert isinstance(rt.ask(S, NextTask()), NoPendingTask)


def test_next_task_for_an_agent_takes_its_own_or_unassigned_tasks_and_assigns_them(
    rt: Runtime,
) -> None:
    rt.ask(S, SubmitTask(description="for a2", priority="critical", agent=A2, task_id="x"))
    rt.ask(S, SubmitTask(description="anyone", task_id="y"))
    rt.ask(S, SubmitTask(description="for a1", priority="low", agent=A1, task_id="z"))

    first = task(rt, NextTask(agent=A1))
    second = task(rt, NextTask(agent=A1))
    nothing = rt.ask(S, NextTask(agent=A1))

    assert ("y", A1, "running") == (first.id, first.agent, first.state)
    assert ("z", A1, "running") == (second.id, second.agent, second.state)
    assert NoPendingTask(agent=A1) == nothing
    assert "pending" == task(rt, GetTask(task_id="x")).state


def test_list_tasks_filters_by_state_agent_and_priority(rt: Runtime) -> None:
    rt.ask(S, SubmitTask(description="a", agent=A1, priority="high", task_id="a"))
    rt.ask(S, SubmitTask(description="b", agent=A2, priority="high", task_id="b"))
    rt.ask(S, SubmitTask(description="c", agent=A1, priority="low", task_id="c"))
    rt.ask(S, StartTask(task_id="c"))

    def ids(**filters: object) -> list[str]:
        reply = rt.ask(S, ListTasks(**filters))
        assert isinstance(reply, Tasks)
        return [t.id for t in reply.tasks]

    assert ["a", "b", "c"] == ids()
    assert ["a", "c"] == ids(agent=A1)
    assert ["a", "b"] == ids(priority="high")
    assert ["c"] == ids(state="running")
    assert ["a"] == ids(state="pending", agent=A1)
    assert [] == ids(state="completed")


def test_statistics_count_the_tasks_in_each_state(rt: Runtime) -> None:
    for state in ["pending", "pending", "running", "completed", "failed", "cancelled"]:
        in_state(rt, state)

    stats = rt.ask(S, GetStatistics())

    assert (
        SchedulerStatistics(
            pending=2, running=1, completed=1, failed=1, cancelled=1, timed_out=0, total=6
        )
        == stats
    )
    assert isinstance(stats, SchedulerStatistics)
    assert "6 tasks (2 pending, 1 running, 1 completed, 1 failed, 1 cancelled)" == stats.summary()


def test_statistics_of_an_empty_scheduler_say_so(rt: Runtime) -> None:
    stats = rt.ask(S, GetStatistics())

    assert isinstance(stats, SchedulerStatistics)
    assert SchedulerStatistics() == stats
    assert "0 tasks" == stats.summary()


# --- Deadlines ---------------------------------------------------------------------------------


def test_a_running_task_past_its_deadline_is_timed_out_by_the_next_command(rt: Runtime) -> None:
    t = in_state(rt, "running", deadline=time.time() - 1.0)

    seen = task(rt, GetTask(task_id=t.id))

    assert "timed_out" == seen.state
    assert seen.reason is not None
    assert "deadline" in seen.reason
    assert 1 == rt.ask(S, GetStatistics()).timed_out  # type: ignore[attr-defined]


def test_a_deadline_timer_times_out_a_running_task_without_any_other_command(
    rt: Runtime,
) -> None:
    t = in_state(rt, "running", max_duration=0.2)
    assert t.started_at is not None

    finished = task(rt, WaitTask(task_id=t.id, timeout=5.0))

    assert "timed_out" == finished.state
    assert t.deadline == pytest.approx(t.started_at + 0.2)
    assert finished.finished_at is not None
    assert finished.finished_at >= t.started_at + 0.2


def test_an_absolute_deadline_earlier_than_the_relative_one_wins(rt: Runtime) -> None:
    deadline = time.time() + 100.0

    t = in_state(rt, "running", deadline=deadline, max_duration=1000.0)

    assert deadline == t.deadline


def test_a_pending_task_past_its_deadline_stays_pending_until_it_starts(rt: Runtime) -> None:
    t = in_state(rt, "pending", deadline=time.time() - 1.0)

    assert "pending" == task(rt, GetTask(task_id=t.id)).state
    task(rt, StartTask(task_id=t.id))
    assert "timed_out" == task(rt, GetTask(task_id=t.id)).state


def test_wait_task_answers_with_the_current_state_when_its_timeout_passes(rt: Runtime) -> None:
    t = in_state(rt, "running")

    seen = task(rt, WaitTask(task_id=t.id, timeout=0.1))

    assert "running" == seen.state


# --- Reaping tasks whose agent exited ----------------------------------------------------------


def test_a_task_whose_agent_crashes_is_reaped_as_failed_and_audited(rt: Runtime) -> None:
    t = task(rt, SubmitTask(description="job", agent=A1, task_id="zombie"))
    other = task(rt, SubmitTask(description="job", agent=A2, task_id="alive"))
    rt.ask(S, StartTask(task_id=t.id))
    rt.ask(S, StartTask(task_id=other.id))

    with pytest.raises(ActorCrashed):
        rt.ask(A1, Crash(text="boom"))
    reaped = task(rt, WaitTask(task_id=t.id, timeout=5.0))
    audits = rt.ask("root/audit", GetAudits(count=1))

    assert "failed" == reaped.state
    assert f"agent {A1} exited: error:ValueError: boom" == reaped.reason
    assert "running" == task(rt, GetTask(task_id=other.id)).state
    assert isinstance(audits, Audits)
    assert 1 == len(audits.records)
    record = audits.records[0]
    assert (S, "task.reaped") == (record["actor"], record["action"])
    assert ("zombie", A1, reaped.reason) == (
        record["detail"]["task_id"],
        record["detail"]["agent"],
        record["detail"]["reason"],
    )


def test_the_exit_of_a_supervisor_reaps_the_tasks_of_the_agents_below_it(rt: Runtime) -> None:
    t = in_state(rt, "running", agent=A2)

    rt.terminate_child("root", "agents")
    reaped = task(rt, WaitTask(task_id=t.id, timeout=5.0))

    assert "failed" == reaped.state
    assert f"agent {A2} exited: shutdown" == reaped.reason


def test_an_agent_exit_before_its_task_started_does_not_reap_the_task(rt: Runtime) -> None:
    with pytest.raises(ActorCrashed):
        rt.ask(A1, Crash())
    rt.wait_event("child_restarted", child_id="a1")
    t = in_state(rt, "running", agent=A1)

    rt.terminate_child("root", "scheduler")  # the restarted scheduler replays every event
    rt.restart_child("root", "scheduler")

    assert "running" == task(rt, GetTask(task_id=t.id)).state


# --- Durability across restarts ----------------------------------------------------------------


def test_every_task_survives_a_restart_of_the_scheduler_in_its_last_state(rt: Runtime) -> None:
    tasks = [
        in_state(rt, s, task_id=s)
        for s in ["pending", "running", "completed", "failed", "cancelled"]
    ]
    stats = rt.ask(S, GetStatistics())

    rt.terminate_child("root", "scheduler")
    rt.restart_child("root", "scheduler")

    assert tasks == [task(rt, GetTask(task_id=t.id)) for t in tasks]
    assert stats == rt.ask(S, GetStatistics())
    assert "task-6" == task(rt, SubmitTask(description="next")).id


def test_an_agent_exit_missed_while_the_scheduler_was_down_reaps_its_task(rt: Runtime) -> None:
    t = in_state(rt, "running", agent=A1)

    rt.terminate_child("root", "scheduler")
    with pytest.raises(ActorCrashed):
        rt.ask(A1, Crash(text="while nobody watched"))
    rt.restart_child("root", "scheduler")
    reaped = task(rt, WaitTask(task_id=t.id, timeout=5.0))
    audits = rt.ask("root/audit", GetAudits(count=1))

    assert "failed" == reaped.state
    assert reaped.reason is not None
    assert "while nobody watched" in reaped.reason
    assert isinstance(audits, Audits)
    assert [t.id] == [r["detail"]["task_id"] for r in audits.records]


def test_an_audit_record_waits_in_the_outbox_until_the_audit_log_is_there(
    start_tree: StartTree,
) -> None:
    spec = tree(audit="root/late", audit_retry=0.05)
    rt = start_tree(spec)
    t = in_state(rt, "running", agent=A1)

    with pytest.raises(ActorCrashed):
        rt.ask(A1, Crash())
    assert "failed" == task(rt, WaitTask(task_id=t.id, timeout=5.0)).state
    rt.start_child(
        "root", ChildSpec(id="late", start="tests.integration._scheduler_workers:AuditRecorder")
    )
    audits = rt.ask("root/late", GetAudits(count=1, timeout=5.0))

    assert isinstance(audits, Audits)
    assert [t.id] == [r["detail"]["task_id"] for r in audits.records]


def test_an_acknowledged_audit_record_is_not_sent_again_after_a_restart(rt: Runtime) -> None:
    t = in_state(rt, "running", agent=A1)
    with pytest.raises(ActorCrashed):
        rt.ask(A1, Crash())
    assert "failed" == task(rt, WaitTask(task_id=t.id, timeout=5.0)).state
    assert isinstance(rt.ask("root/audit", GetAudits(count=1)), Audits)

    rt.terminate_child("root", "scheduler")
    rt.restart_child("root", "scheduler")
    rt.ask(S, GetStatistics())
    audits = rt.ask("root/audit", GetAudits(count=2, timeout=0.3))

    assert isinstance(audits, Audits)
    assert 1 == len(audits.records)
