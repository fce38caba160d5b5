"""Properties of the run book: cascading stops, stale epochs, owner isolation, durability.

Each example builds a book from a random sequence of commands (refused ones are skipped, as the
run manager would refuse them), then checks one property against an independent reference:
the subtree of a run is recomputed by walking parent pointers up from every run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.services.runs import RunStore
from actors.services.runs_book import RunBook, RunError, Stale
from protocols.runs import RunInfo

OWNERS = ("alice", "bob", "carol")
AGENTS = tuple(f"root/agents/agent-{n}" for n in range(5))
T0 = 1_000.0

# One command: (name, a number picking the run, a number picking the owner / epoch / agent).
commands = st.lists(
    st.tuples(
        st.sampled_from(
            ["create", "child", "complete", "fail", "stop", "resume", "attach", "stale"]
        ),
        st.integers(0, 50),
        st.integers(0, 50),
    ),
    min_size=1,
    max_size=40,
)


def apply(book: RunBook, command: tuple[str, int, int], now: float) -> None:
    """Apply one drawn command with the run's own owner; skip it when it is refused."""
    name, pick, other = command
    runs = book.all_runs()
    if name == "create" or not runs:
        book.create(
            OWNERS[other % len(OWNERS)],
            "goal",
            now,
            agents=[AGENTS[other % len(AGENTS)]] if other % 2 else [],
        )
        return
    run = runs[pick % len(runs)]
    try:
        match name:
            case "child":
                book.create(
                    run.owner, "sub goal", now, parent=run.id, agents=[AGENTS[other % len(AGENTS)]]
                )
            case "complete":
                book.complete(run.id, run.owner, run.epoch, {"n": other}, now)
            case "fail":
                book.fail(run.id, run.owner, run.epoch, f"reason {other}", now)
            case "stop":
                book.stop(run.id, run.owner, now)
            case "resume":
                book.resume(run.id, run.owner, now)
            case "attach":
                book.attach(run.id, run.owner, AGENTS[other % len(AGENTS)], now)
            case "stale":
                book.complete(run.id, run.owner, max(1, run.epoch - 1), None, now)
    except RunError:
        pass


def build(drawn: list[tuple[str, int, int]]) -> RunBook:
    book = RunBook()
    for n, command in enumerate(drawn):
        apply(book, command, T0 + n)
    return book


def reference_subtree(runs: dict[str, RunInfo], top: str) -> set[str]:
    """Every run whose chain of parents reaches ``top`` (itself included)."""
    inside = set()
    for run_id in runs:
        current: str | None = run_id
        while current is not None:
            if current == top:
                inside.add(run_id)
                break
            current = runs[current].parent
    return inside


def snapshot(book: RunBook) -> dict[str, RunInfo]:
    return {r.id: r for r in book.all_runs()}


@settings(max_examples=300)
@given(commands, st.integers(0, 50))
def test_stopping_a_run_stops_exactly_its_running_descendants(
    drawn: list[tuple[str, int, int]], pick: int
) -> None:
    book = build(drawn)
    before = snapshot(book)
    top = list(before.values())[pick % len(before)]
    inside = reference_subtree(before, top.id)

    outcome = book.stop(top.id, top.owner, T0 + 1_000)

    after = snapshot(book)
    assert inside == set(outcome.subtree)
    assert {i for i in inside if before[i].status == "running"} == {r.id for r in outcome.stopped}
    for run_id, run in after.items():
        if run_id in inside and before[run_id].status == "running":
            assert "stopped" == run.status
            assert before[run_id].epoch == run.epoch
        else:
            assert before[run_id] == run
    assert not any(after[i].status == "running" for i in inside)
    in_use = {
        a for r in before.values() if r.id not in inside and r.status == "running" for a in r.agents
    }
    assert {a for i in inside for a in before[i].agents} - in_use == set(outcome.agents)


@settings(max_examples=300)
@given(commands, st.integers(0, 50), st.booleans(), st.data())
def test_a_stale_epoch_completion_or_failure_never_changes_state(
    drawn: list[tuple[str, int, int]], pick: int, complete: bool, data: st.DataObject
) -> None:
    book = build(drawn)
    runs = book.all_runs()
    run = runs[pick % len(runs)]
    if run.status == "running":
        book.stop(run.id, run.owner, T0)
    if book.get(run.id, run.owner).status != "completed" and (
        run.parent is None or book.get(run.parent, run.owner).status == "running"
    ):
        book.resume(run.id, run.owner, T0)  # now at least epoch 2
    current = book.get(run.id, run.owner).epoch
    assume(current > 1)
    stale_epoch = data.draw(st.integers(1, current - 1))
    before = snapshot(book)

    if complete:
        outcome = book.complete(run.id, run.owner, stale_epoch, {"late": True}, T0 + 9_999)
    else:
        outcome = book.fail(run.id, run.owner, stale_epoch, "late", T0 + 9_999)

    assert isinstance(outcome, Stale)
    assert before[run.id] == outcome.run
    assert before == snapshot(book)


def _refusal(call: Any) -> tuple[str, str]:
    try:
        call()
    except RunError as exc:
        return exc.error, exc.message
    raise AssertionError("the command was not refused")


@settings(max_examples=200)
@given(commands)
def test_owners_never_see_or_touch_other_owners_runs(drawn: list[tuple[str, int, int]]) -> None:
    book = build(drawn)
    before = snapshot(book)

    for owner in OWNERS:
        assert [r for r in before.values() if r.owner == owner] == book.runs(owner)
        for run in before.values():
            if run.owner == owner:
                continue
            epoch = run.epoch
            for make in (
                lambda i, o=owner: book.get(i, o),
                lambda i, o=owner: book.stop(i, o, T0),
                lambda i, o=owner: book.resume(i, o, T0),
                lambda i, o=owner: book.attach(i, o, AGENTS[0], T0),
                lambda i, o=owner, e=epoch: book.complete(i, o, e, None, T0),
                lambda i, o=owner, e=epoch: book.fail(i, o, e, "x", T0),
                lambda i, o=owner: book.create(o, "g", T0, parent=i),
            ):
                theirs = _refusal(lambda m=make, i=run.id: m(i))
                missing = _refusal(lambda m=make: m("no-such-run"))
                assert ("UnknownRun", f"no run {run.id!r}") == theirs
                assert missing == (theirs[0], theirs[1].replace(run.id, "no-such-run"))
            assert [] == book.runs(owner, parent=run.id)

    assert before == snapshot(book)


@settings(max_examples=50)
@given(commands)
def test_the_store_gives_back_the_same_book(drawn: list[tuple[str, int, int]]) -> None:
    book = build(drawn)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs.db", synchronous="NORMAL")
        store.commit(book.all_runs())
        store.close()
        reopened = RunStore(Path(tmp) / "runs.db")
        loaded = reopened.load_runs()
        reopened.close()

    assert book.all_runs() == loaded
    assert book.statistics() == RunBook(loaded).statistics()


class RunTreeMachine(RuleBasedStateMachine):
    """Random commands; the tree's invariants hold after each one."""

    def __init__(self) -> None:
        super().__init__()
        self.book = RunBook()
        self.epochs: dict[str, int] = {}
        self.now = T0

    @rule(
        command=st.tuples(
            st.sampled_from(
                ["create", "child", "complete", "fail", "stop", "resume", "attach", "stale"]
            ),
            st.integers(0, 50),
            st.integers(0, 50),
        )
    )
    def command(self, command: tuple[str, int, int]) -> None:
        self.now += 1
        apply(self.book, command, self.now)

    @precondition(lambda self: len(self.book) > 0)
    @rule(pick=st.integers(0, 50))
    def stop_then_nothing_below_runs(self, pick: int) -> None:
        runs = self.book.all_runs()
        run = runs[pick % len(runs)]
        self.book.stop(run.id, run.owner, self.now)
        assert all(
            self.book.get(i, run.owner).status != "running" for i in self.book.subtree(run.id)
        )

    @invariant()
    def epochs_never_go_back_and_owners_match_their_parents(self) -> None:
        runs = snapshot(self.book)
        for run in runs.values():
            assert run.epoch >= self.epochs.get(run.id, 1)
            self.epochs[run.id] = run.epoch
            if run.parent is not None:
                assert runs[run.parent].owner == run.owner
                assert runs[run.parent].seq < run.seq
        assert sum(1 for _ in runs) == self.book.statistics()["total"]


TestRunTree = RunTreeMachine.TestCase
TestRunTree.settings = settings(max_examples=50, stateful_step_count=30)
