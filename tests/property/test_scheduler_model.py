"""The scheduler's state machine (TaskBook) and its journal against a plain model.

The model is a dict of small records and the rules of the protocol written out the obvious
way. Every command goes to both; replies, refusals and every task's state must agree. The
``restart`` rule closes the journal and rebuilds the book from it, as a restarted scheduler
does: whatever was committed must come back equal.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from actors.services.scheduler_journal import Journal
from actors.services.scheduler_tasks import TaskBook, TaskError
from protocols.scheduler import PRIORITIES, Priority, SubmitTask, TaskInfo

AGENTS = ["root/agents/a1", "root/agents/a2", "root/other/a3"]
EXIT_PATHS = [*AGENTS, "root/agents", "root", "root/agents/a"]
RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}
FROM = {
    "start": {"pending"},
    "complete": {"running"},
    "fail": {"running"},
    "cancel": {"pending", "running"},
}


@dataclass
class ModelTask:
    seq: int
    priority: Priority
    agent: str | None
    state: str = "pending"
    deadline: float | None = None
    max_duration: float | None = None
    started_at: float | None = None


class SchedulerModel(RuleBasedStateMachine):
    """TaskBook + Journal vs. a dict of ModelTask."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="scheduler-model-"))
        self.journal = Journal(self.dir / "scheduler.db", synchronous="NORMAL")
        self.book = TaskBook()
        self.model: dict[str, ModelTask] = {}
        self.now = 1000.0
        self.next_seq = 1

    def teardown(self) -> None:
        self.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start_empty(self) -> None:
        assert [] == self.book.tasks()

    # --- helpers -------------------------------------------------------------------------

    def _commit(self, command: str, changed: list[TaskInfo]) -> None:
        self.journal.commit(command, [(command, t) for t in changed], self.now)

    def _expect_transition(self, command: str, task_id: str) -> str | None:
        """Return the error the model expects for ``command`` on ``task_id``, or None."""
        task = self.model.get(task_id)
        if task is None:
            return "UnknownTask"
        if task.state not in FROM[command]:
            return "InvalidTransition"
        return None

    def _check_refusal(self, error: str, call: Callable[[], object]) -> None:
        before = self.book.tasks()

        with pytest.raises(TaskError) as info:
            call()

        assert error == info.value.error
        assert before == self.book.tasks()

    def _started(self, task_id: str, task: ModelTask, agent: str | None) -> None:
        task.state = "running"
        task.started_at = self.now
        if task.agent is None:
            task.agent = agent
        if task.max_duration is not None:
            relative = self.now + task.max_duration
            task.deadline = relative if task.deadline is None else min(task.deadline, relative)
        assert task_id in self.model

    # --- rules -----------------------------------------------------------------------------

    @rule(
        target=ids,
        chosen_id=st.none() | st.sampled_from(["a", "b", "task-2"]),
        priority=st.sampled_from(PRIORITIES),
        agent=st.none() | st.sampled_from(AGENTS),
        deadline=st.none() | st.integers(0, 6).map(float),
        max_duration=st.none() | st.integers(1, 4).map(float),
    )
    def submit(
        self,
        chosen_id: str | None,
        priority: Priority,
        agent: str | None,
        deadline: float | None,
        max_duration: float | None,
    ) -> str:
        command = SubmitTask(
            description="d",
            priority=priority,
            agent=agent,
            task_id=chosen_id,
            deadline=None if deadline is None else self.now + deadline,
            max_duration=max_duration,
        )
        task_id = chosen_id if chosen_id is not None else f"task-{self.next_seq}"
        if task_id in self.model:
            self._check_refusal("DuplicateTask", lambda: self.book.submit(command, self.now))
            return task_id
        task = self.book.submit(command, self.now)
        self._commit("SubmitTask", [task])
        self.model[task_id] = ModelTask(
            self.next_seq, priority, agent, deadline=command.deadline, max_duration=max_duration
        )
        self.next_seq += 1
        assert task_id == task.id
        assert "pending" == task.state
        return task_id

    @rule(task_id=ids | st.just("nope"), agent=st.none() | st.sampled_from(AGENTS))
    def start(self, task_id: str, agent: str | None) -> None:
        error = self._expect_transition("start", task_id)
        task = self.model.get(task_id)
        if error is None and task is not None and task.agent not in (None, agent) and agent:
            error = "AgentMismatch"
        if error is not None:
            self._check_refusal(error, lambda: self.book.start(task_id, self.now, agent=agent))
            return
        started = self.book.start(task_id, self.now, agent=agent)
        self._commit("StartTask", [started])
        assert task is not None
        self._started(task_id, task, agent)
        assert "running" == started.state

    @rule(task_id=ids | st.just("nope"), result=st.none() | st.integers() | st.text(max_size=3))
    def complete(self, task_id: str, result: object) -> None:
        error = self._expect_transition("complete", task_id)
        if error is not None:
            self._check_refusal(error, lambda: self.book.complete(task_id, self.now, result))
            return
        done = self.book.complete(task_id, self.now, result)
        self._commit("CompleteTask", [done])
        self.model[task_id].state = "completed"
        assert result == done.result

    @rule(task_id=ids | st.just("nope"))
    def fail(self, task_id: str) -> None:
        error = self._expect_transition("fail", task_id)
        if error is not None:
            self._check_refusal(error, lambda: self.book.fail(task_id, self.now, "broke"))
            return
        self._commit("FailTask", [self.book.fail(task_id, self.now, "broke")])
        self.model[task_id].state = "failed"

    @rule(task_id=ids | st.just("nope"))
    def cancel(self, task_id: str) -> None:
        error = self._expect_transition("cancel", task_id)
        if error is not None:
            self._check_refusal(error, lambda: self.book.cancel(task_id, self.now))
            return
        self._commit("CancelTask", [self.book.cancel(task_id, self.now)])
        self.model[task_id].state = "cancelled"

    @rule(agent=st.none() | st.sampled_from(AGENTS))
    def next_task(self, agent: str | None) -> None:
        candidates = [
            (RANK[t.priority], t.seq, task_id)
            for task_id, t in self.model.items()
            if t.state == "pending" and (agent is None or t.agent in (None, agent))
        ]
        handed = self.book.next_task(self.now, agent=agent)
        if not candidates:
            assert handed is None
            return
        expected = min(candidates)[2]
        assert handed is not None
        self._commit("NextTask", [handed])
        self._started(expected, self.model[expected], agent)
        assert expected == handed.id
        assert "running" == handed.state

    @rule(seconds=st.integers(0, 3))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        expected = sorted(
            task_id
            for task_id, t in self.model.items()
            if t.state == "running" and t.deadline is not None and t.deadline <= self.now
        )
        timed_out = self.book.sweep(self.now)
        self._commit("Timeout", timed_out)
        for task_id in expected:
            self.model[task_id].state = "timed_out"
        assert expected == sorted(t.id for t in timed_out)

    @rule(path=st.sampled_from(EXIT_PATHS), ago=st.integers(0, 3))
    def agent_exits(self, path: str, ago: int) -> None:
        exited_at = self.now - ago
        expected = sorted(
            task_id
            for task_id, t in self.model.items()
            if t.state == "running"
            and t.agent is not None
            and (t.agent == path or t.agent.startswith(path + "/"))
            and t.started_at is not None
            and t.started_at <= exited_at
        )
        reaped = self.book.reap(path, "killed", exited_at, self.now)
        self._commit("Reap", reaped)
        for task_id in expected:
            self.model[task_id].state = "failed"
        assert expected == sorted(t.id for t in reaped)
        assert all(f"agent {t.agent} exited: killed" == t.reason for t in reaped)

    @rule()
    def restart(self) -> None:
        """The scheduler restarts: a new journal connection and a book rebuilt from it."""
        self.journal.close()
        self.journal = Journal(self.dir / "scheduler.db", synchronous="NORMAL")
        reloaded = TaskBook(self.journal.load_tasks())
        assert self.book.tasks() == reloaded.tasks()
        assert self.book.statistics() == reloaded.statistics()
        self.book = reloaded

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def states_agree(self) -> None:
        actual = {t.id: (t.state, t.agent, t.seq, t.priority) for t in self.book.tasks()}
        expected = {i: (t.state, t.agent, t.seq, t.priority) for i, t in self.model.items()}
        assert expected == actual

    @invariant()
    def statistics_agree(self) -> None:
        stats = self.book.statistics()
        assert len(self.model) == stats["total"]
        for state in ("pending", "running", "completed", "failed", "cancelled", "timed_out"):
            assert sum(t.state == state for t in self.model.values()) == stats[state]

    @invariant()
    def timestamps_follow_the_state(self) -> None:
        for task in self.book.tasks():
            if task.state == "pending":
                assert task.started_at is None
            elif task.state != "cancelled":  # a task may be cancelled before it started
                assert task.started_at is not None
            assert (task.finished_at is None) == (task.state in ("pending", "running"))

    @invariant()
    def deadlines_agree(self) -> None:
        for task in self.book.tasks():
            assert self.model[task.id].deadline == task.deadline

    @invariant()
    def next_deadline_is_the_earliest_running_one(self) -> None:
        running = [
            t.deadline
            for t in self.model.values()
            if t.state == "running" and t.deadline is not None
        ]
        assert min(running, default=None) == self.book.next_deadline()


SchedulerModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
test_scheduler_matches_the_model = SchedulerModel.TestCase
