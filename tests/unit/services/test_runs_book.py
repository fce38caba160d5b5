"""The run book (pure): creation, transitions, epochs, cascading stops and owner isolation."""

from __future__ import annotations

import pytest

from actors.services.runs_book import RunBook, RunError, Stale, check_json
from protocols.runs import RunInfo

T0 = 1_000.0


def error_of(call: object) -> tuple[str, str]:
    assert callable(call)
    with pytest.raises(RunError) as exc:
        call()
    return exc.value.error, exc.value.message


def test_a_new_run_is_running_at_epoch_one_with_a_sequential_id() -> None:
    book = RunBook()

    first = book.create("alice", "goal one", T0, agents=["root/agents/a", "root/agents/a"])
    second = book.create("alice", "goal two", T0 + 1, parent=first.id)

    assert ("run-1", 1, "running", 1) == (first.id, first.seq, first.status, first.epoch)
    assert ["root/agents/a"] == first.agents
    assert ("run-2", "run-1") == (second.id, second.parent)
    assert (T0 + 1, T0 + 1) == (second.created_at, second.updated_at)


def test_ids_continue_after_the_highest_loaded_run() -> None:
    book = RunBook()
    book.create("alice", "a", T0)
    book.create("alice", "b", T0)

    reloaded = RunBook(reversed(book.all_runs()))

    assert "run-3" == reloaded.create("bob", "c", T0).id
    assert ["run-1", "run-2", "run-3"] == [r.id for r in reloaded.all_runs()]


def test_a_run_cannot_be_created_under_a_parent_that_is_not_running() -> None:
    book = RunBook()
    parent = book.create("alice", "p", T0)
    book.stop(parent.id, "alice", T0)

    assert (
        "InvalidTransition" == error_of(lambda: book.create("alice", "c", T0, parent=parent.id))[0]
    )
    assert 1 == len(book)


def test_completing_a_run_records_its_result_and_is_final() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)

    done = book.complete(run.id, "alice", 1, {"answer": [1, 2]}, T0 + 5)

    assert not isinstance(done, Stale)
    assert ("completed", {"answer": [1, 2]}, T0 + 5) == (done.status, done.result, done.updated_at)
    error, message = error_of(lambda: book.resume(run.id, "alice", T0 + 6))
    assert "InvalidTransition" == error
    assert "completed" in message
    assert "InvalidTransition" == error_of(lambda: book.fail(run.id, "alice", 1, "x", T0))[0]


def test_a_failed_run_resumes_in_a_new_epoch_without_its_old_reason() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.fail(run.id, "alice", 1, "tool crashed", T0 + 1)

    resumed = book.resume(run.id, "alice", T0 + 2)

    assert ("running", 2, None) == (resumed.status, resumed.epoch, resumed.reason)
    assert "InvalidTransition" == error_of(lambda: book.resume(run.id, "alice", T0 + 3))[0]


def test_an_older_epoch_is_stale_and_changes_nothing() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.stop(run.id, "alice", T0 + 1)
    resumed = book.resume(run.id, "alice", T0 + 2)

    stale = book.complete(run.id, "alice", 1, "late", T0 + 3)
    stale_failure = book.fail(run.id, "alice", 1, "late", T0 + 3)

    assert isinstance(stale, Stale)
    assert isinstance(stale_failure, Stale)
    assert resumed == stale.run
    assert stale.detail.startswith("stale epoch ignored")
    assert [resumed] == book.all_runs()


def test_a_stale_epoch_is_ignored_even_when_the_run_has_finished() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.fail(run.id, "alice", 1, "first try", T0)
    book.resume(run.id, "alice", T0)
    done = book.complete(run.id, "alice", 2, "ok", T0)

    assert isinstance(book.fail(run.id, "alice", 1, "late", T0), Stale)
    assert [done] == book.all_runs()


def test_a_newer_epoch_than_the_runs_is_invalid() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)

    error, message = error_of(lambda: book.complete(run.id, "alice", 2, None, T0))

    assert "InvalidEpoch" == error
    assert "epoch 2" in message
    assert "running" == book.get(run.id, "alice").status


def test_a_completion_after_a_stop_keeps_its_result_and_the_run_stays_stopped() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.stop(run.id, "alice", T0)

    late = book.complete(run.id, "alice", 1, {"answer": 42}, T0 + 1)

    assert isinstance(late, RunInfo)
    assert ("stopped", {"answer": 42}) == (late.status, late.result)
    assert ("stopped", {"answer": 42}) == (
        book.get(run.id, "alice").status,
        book.get(run.id, "alice").result,
    )


def test_a_failure_after_a_stop_keeps_its_reason_and_the_run_stays_stopped() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.stop(run.id, "alice", T0)

    late = book.fail(run.id, "alice", 1, "the agent was killed", T0 + 1)

    assert isinstance(late, RunInfo)
    assert ("stopped", "the agent was killed") == (late.status, late.reason)


def test_a_completion_of_a_completed_run_is_refused() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)
    book.complete(run.id, "alice", 1, "first", T0)

    assert "InvalidTransition" == error_of(lambda: book.complete(run.id, "alice", 1, 2, T0))[0]
    assert "first" == book.get(run.id, "alice").result


def test_stop_stops_running_descendants_and_keeps_finished_ones() -> None:
    book = RunBook()
    root = book.create("alice", "root", T0, agents=["root/agents/r"])
    done = book.create("alice", "done", T0, parent=root.id, agents=["root/agents/d"])
    book.complete(done.id, "alice", 1, "ok", T0)
    busy = book.create("alice", "busy", T0, parent=root.id)
    deep = book.create("alice", "deep", T0, parent=busy.id, agents=["root/agents/x"])
    other = book.create("alice", "other", T0)

    outcome = book.stop(root.id, "alice", T0 + 1)

    assert [root.id, done.id, busy.id, deep.id] == outcome.subtree
    assert [root.id, busy.id, deep.id] == [r.id for r in outcome.stopped]
    assert ["root/agents/r", "root/agents/d", "root/agents/x"] == outcome.agents
    assert "completed" == book.get(done.id, "alice").status
    assert "running" == book.get(other.id, "alice").status
    assert [done.id, busy.id, deep.id] == book.descendants(root.id)


def test_stop_keeps_an_agent_that_a_running_run_outside_the_subtree_still_uses() -> None:
    book = RunBook()
    shared = "root/agents/shared"
    a = book.create("alice", "a", T0, agents=[shared, "root/agents/own"])
    book.create("alice", "b", T0, agents=[shared])

    outcome = book.stop(a.id, "alice", T0)

    assert ["root/agents/own"] == outcome.agents


def test_stopping_a_stopped_run_again_changes_nothing_but_names_its_agents() -> None:
    book = RunBook()
    a = book.create("alice", "a", T0, agents=["root/agents/a"])
    book.stop(a.id, "alice", T0)

    again = book.stop(a.id, "alice", T0 + 1)

    assert [] == again.stopped
    assert ["root/agents/a"] == again.agents
    assert T0 == book.get(a.id, "alice").updated_at


def test_resume_needs_a_running_parent_and_resumes_only_that_run() -> None:
    book = RunBook()
    parent = book.create("alice", "p", T0)
    child = book.create("alice", "c", T0, parent=parent.id)
    book.stop(parent.id, "alice", T0)

    assert "InvalidTransition" == error_of(lambda: book.resume(child.id, "alice", T0))[0]
    book.resume(parent.id, "alice", T0)
    assert "stopped" == book.get(child.id, "alice").status
    assert 2 == book.resume(child.id, "alice", T0).epoch


def test_attach_adds_an_agent_once_and_only_to_a_running_run() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)

    book.attach(run.id, "alice", "root/agents/a", T0)
    again = book.attach(run.id, "alice", "root/agents/a", T0 + 1)
    book.fail(run.id, "alice", 1, "x", T0)

    assert ["root/agents/a"] == again.agents
    assert T0 == again.updated_at
    assert (
        "InvalidTransition"
        == error_of(lambda: book.attach(run.id, "alice", "root/agents/b", T0))[0]
    )


def test_another_owners_run_is_unknown_exactly_like_a_missing_one() -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)

    theirs = error_of(lambda: book.get(run.id, "bob"))
    missing = error_of(lambda: book.get("run-77", "bob"))

    assert ("UnknownRun", f"no run {run.id!r}") == theirs
    assert ("UnknownRun", "no run 'run-77'") == missing
    assert [] == book.runs("bob")
    assert theirs == error_of(lambda: book.create("bob", "g", T0, parent=run.id))


def test_runs_filter_by_status_and_parent() -> None:
    book = RunBook()
    parent = book.create("alice", "p", T0)
    kid = book.create("alice", "k", T0, parent=parent.id)
    book.create("bob", "b", T0)
    book.fail(kid.id, "alice", 1, "x", T0)

    assert [parent.id, kid.id] == [r.id for r in book.runs("alice")]
    assert [kid.id] == [r.id for r in book.runs("alice", status="failed")]
    assert [kid.id] == [r.id for r in book.runs("alice", parent=parent.id)]
    assert [] == book.runs("alice", status="stopped")


def test_statistics_count_every_status_over_every_owner() -> None:
    book = RunBook()
    book.create("alice", "a", T0)
    b = book.create("bob", "b", T0)
    book.stop(b.id, "bob", T0)

    assert {"running": 1, "stopped": 1, "completed": 0, "failed": 0, "total": 2} == (
        book.statistics()
    )


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, float("nan"), b"bytes", {"x": {1, 2}}])
def test_a_result_that_is_not_plain_json_is_refused(value: object) -> None:
    book = RunBook()
    run = book.create("alice", "g", T0)

    assert "InvalidResult" == error_of(lambda: check_json(value))[0]
    assert "InvalidResult" == error_of(lambda: book.complete(run.id, "alice", 1, value, T0))[0]
    assert "running" == book.get(run.id, "alice").status


@pytest.mark.parametrize("value", [None, 1, 1.5, "s", [1, "a", None], {"k": [True, {"n": 0}]}])
def test_plain_json_results_are_accepted(value: object) -> None:
    check_json(value)
