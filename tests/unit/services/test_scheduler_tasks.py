"""The scheduler's pure parts: the TaskBook's rules and the helpers around it."""

from __future__ import annotations

import math

import pytest

from actors.services.scheduler_tasks import TaskBook, TaskError, agent_under, is_json_value
from protocols.scheduler import SubmitTask
from protocols.supervision import SupervisionEvent, exited_path


def event(name: str, supervisor: str, child_id: str | None) -> SupervisionEvent:
    return SupervisionEvent(
        seq=1, time=0.0, supervisor=supervisor, child_id=child_id, event=name, reason="killed"
    )


@pytest.mark.parametrize(
    ("name", "supervisor", "child_id", "expected"),
    [
        ("child_exited", "root/agents", "a1", "root/agents/a1"),
        ("child_terminated", "root", "agents", "root/agents"),
        ("supervisor_shutdown", "root/agents", None, "root/agents"),
        ("child_started", "root/agents", "a1", None),
        ("child_restarted", "root/agents", "a1", None),
        ("child_deleted", "root/agents", "a1", None),
    ],
)
def test_exited_path_names_the_actor_an_exit_event_is_about(
    name: str, supervisor: str, child_id: str | None, expected: str | None
) -> None:
    assert expected == exited_path(event(name, supervisor, child_id))


@pytest.mark.parametrize(
    ("agent", "path", "expected"),
    [
        ("root/agents/a1", "root/agents/a1", True),
        ("root/agents/a1", "root/agents", True),
        ("root/agents/a1", "root", True),
        ("root/agents/a10", "root/agents/a1", False),
        ("root/agentsX/a1", "root/agents", False),
        (None, "root", False),
    ],
)
def test_an_agent_is_under_its_own_path_and_its_supervisors_paths(
    agent: str | None, path: str, expected: bool
) -> None:
    assert expected == agent_under(agent, path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("text", True),
        ({"a": [1, 2.5, True]}, True),
        (math.nan, False),
        (math.inf, False),
        (b"bytes", False),
        ((1, 2), False),
        ({1: "a"}, False),
    ],
)
def test_a_result_must_be_plain_json(value: object, expected: bool) -> None:
    assert expected == is_json_value(value)


def test_completing_with_a_result_that_is_not_json_is_refused_and_changes_nothing() -> None:
    book = TaskBook()
    book.submit(SubmitTask(description="d", task_id="t"), 1.0)
    book.start("t", 2.0)
    before = book.tasks()

    with pytest.raises(TaskError) as info:
        book.complete("t", 3.0, [math.nan])

    assert "InvalidResult" == info.value.error
    assert before == book.tasks()


def test_a_book_rebuilt_from_tasks_keeps_numbering_after_the_last_one() -> None:
    book = TaskBook()
    for _ in range(3):
        book.submit(SubmitTask(description="d"), 1.0)

    rebuilt = TaskBook(reversed(book.tasks()))

    assert ["task-1", "task-2", "task-3"] == [t.id for t in rebuilt.tasks()]
    assert "task-4" == rebuilt.submit(SubmitTask(description="d"), 2.0).id


def test_a_reap_fails_only_running_tasks_of_the_agent_with_the_exit_reason() -> None:
    book = TaskBook()
    for task_id, agent in [("run", "root/a/x"), ("wait", "root/a/x"), ("other", "root/a/y")]:
        book.submit(SubmitTask(description="d", agent=agent, task_id=task_id), 1.0)
    book.start("run", 2.0)
    book.start("other", 2.0)

    reaped = book.reap("root/a/x", "killed", exited_at=3.0, now=4.0)

    assert ["run"] == [t.id for t in reaped]
    assert ("failed", "agent root/a/x exited: killed", 4.0) == (
        reaped[0].state,
        reaped[0].reason,
        reaped[0].finished_at,
    )
    assert "pending" == book.get("wait").state
    assert "running" == book.get("other").state


def test_the_invalid_transition_message_names_command_task_state_and_allowed_states() -> None:
    book = TaskBook()
    book.submit(SubmitTask(description="d", task_id="t"), 1.0)

    with pytest.raises(TaskError) as info:
        book.complete("t", 2.0)

    assert "InvalidTransition" == info.value.error
    assert (
        "CompleteTask does not apply to task 't': it is pending (allowed from running)"
        == info.value.message
    )
