"""OTP supervision behaviour, checked through the public API on every Thespian base.

Each expectation comes from Erlang/OTP's ``supervisor`` manual and the supervisor chapter of
the OTP design principles:

* restart types: permanent is always restarted, transient only after an abnormal exit (not
  ``normal``, ``shutdown`` or ``{shutdown, Term}``), temporary never (and is then forgotten);
* strategies: one_for_one, one_for_all (the others are stopped in reverse start order, then
  all are started in order), rest_for_one (the failed child and those started after it);
* restart intensity: more than ``intensity`` restarts within ``period`` seconds makes the
  supervisor stop all its children (reverse order) and exit with reason ``shutdown``; its parent
  then treats it as any exited child; a restart whose start fails counts and is retried;
* start: children start in order; if one fails, the started ones stop in reverse order and the
  supervisor fails to start;
* shutdown: reverse start order, ``shutdown`` timeouts kill, ``brutal_kill`` kills at once,
  ``infinity`` waits;
* significant children and ``auto_shutdown``.

Asynchronous effects are awaited with ``Runtime.wait_event``, never with sleeps.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors import ActorCrashed, ActorNotFound, AskTimeout, Runtime, StartFailed
from protocols.supervision import ChildInfo, SupervisionEvent
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.integration._workers import Count, Counted, Crash, GetArgs, Ping, Pong, StopMe

ECHO = "tests.integration._workers:Echo"
TALLY = "tests.integration._matrix_workers:Tally"
FLAKY = "tests.integration._matrix_workers:FlakyStart"
TCP = "multiprocTCPBase"
BOOM = "error:ValueError: boom"


# --- Helpers ----------------------------------------------------------------------------------


def echo(child_id: str, *, start: str = ECHO, **kwargs: Any) -> ChildSpec:
    """A worker child spec; keyword arguments that are not ChildSpec fields become args."""
    fields = {k: kwargs.pop(k) for k in ("restart", "shutdown", "significant") if k in kwargs}
    return ChildSpec(id=child_id, start=start, args=kwargs, **fields)


def sup(sup_id: str = "root", children: list[Any] | None = None, **kwargs: Any) -> SupervisorSpec:
    """A supervisor spec."""
    return SupervisorSpec(id=sup_id, children=children or [], **kwargs)


def lines(journal: Path) -> list[str]:
    """The journal's lines (empty if nothing was written)."""
    return journal.read_text().splitlines() if journal.exists() else []


def last_seq(rt: Runtime) -> int:
    """The seq of the newest event (0 if none)."""
    events = rt.events()
    return events[-1].seq if events else 0


def child(rt: Runtime, sup_path: str, child_id: str) -> ChildInfo:
    """The ChildInfo of one child; fails the test if it is not listed."""
    found = {c.id: c for c in rt.which_children(sup_path)}
    assert child_id in found, f"{child_id!r} not among {sorted(found)} of {sup_path}"
    return found[child_id]


def ids(rt: Runtime, sup_path: str) -> list[str]:
    """The ids which_children lists, in order."""
    return [c.id for c in rt.which_children(sup_path)]


def events_after(rt: Runtime, seq: int) -> list[SupervisionEvent]:
    """The events with seq > ``seq``."""
    return [e for e in rt.events() if e.seq > seq]


def brief(events: list[SupervisionEvent]) -> list[tuple[str, str | None, str | None, str | None]]:
    """(supervisor, event, child_id, reason) of each event: easy to compare and read."""
    return [(e.supervisor, e.event, e.child_id, e.reason) for e in events]


def count(rt: Runtime, path: str) -> int:
    """Ask the Echo at ``path`` how many messages it has seen (this Count included)."""
    reply = rt.ask(path, Count())
    assert isinstance(reply, Counted)
    return reply.n


def crash(rt: Runtime, path: str, text: str = "boom") -> ActorCrashed:
    """Make the Echo at ``path`` raise in its handler; return the ActorCrashed the asker got."""
    with pytest.raises(ActorCrashed) as info:
        rt.ask(path, Crash(text=text))
    return info.value


def wait_exit_reason(rt: Runtime, timeout: float = 5.0) -> str:
    """Poll ``exit_reason`` (each poll is a round trip to the guardian) until the root exited."""
    deadline = time.monotonic() + timeout
    while True:
        reason = rt.exit_reason
        if reason is not None:
            return reason
        assert time.monotonic() < deadline, "the root did not exit"


def actor_processes() -> set[int]:
    """Live processes forked from this test process (same command line), as in conftest."""
    me = psutil.Process(os.getpid())
    mine = me.cmdline()
    found: set[int] = set()
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if info["pid"] == me.pid or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["cmdline"] == mine:
            found.add(info["pid"])
    return found


def assert_no_new_processes(before: set[int]) -> None:
    """Every actor process started since ``before`` is gone (waiting up to 5 s for exits)."""
    procs = []
    for pid in actor_processes() - before:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=5.0)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"


# --- Restart type x exit reason -----------------------------------------------------------------

EXITS = [
    pytest.param("normal", "normal", id="normal"),
    pytest.param("shutdown", "shutdown", id="shutdown"),
    pytest.param("shutdown:maintenance", "shutdown:maintenance", id="shutdown_detail"),
    pytest.param("custom_reason", "custom_reason", id="custom"),
    pytest.param("crash", BOOM, id="crash"),
    pytest.param("killed", "killed", id="killed"),
]

NORMAL_CLASS = {"normal", "shutdown", "shutdown:maintenance"}


def make_exit(rt: Runtime, base: str, sup_path: str, child_id: str, how: str) -> None:
    """Make a running Echo exit: crash, SIGKILL (TCP only) or stop(reason)."""
    path = f"{sup_path}/{child_id}"
    if how == "crash":
        assert crash(rt, path).reason == BOOM
    elif how == "killed":
        assert base == TCP
        pid = child(rt, sup_path, child_id).pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
    else:
        rt.ask(path, StopMe(reason=how))


@pytest.mark.parametrize(("how", "reason"), EXITS)
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
def test_restart_type_by_exit_reason(
    start_tree: Any,
    base: str,
    restart: str,
    how: str,
    reason: str,
) -> None:
    if how == "killed" and base != TCP:
        pytest.skip("simpleSystemBase runs every actor in this process: nothing to SIGKILL")
    rt = start_tree(sup(children=[echo("t", restart=restart), echo("sib")], intensity=10))
    before = child(rt, "root", "t")
    assert before.status == "running"
    assert count(rt, "root/sib") == 1
    seq0 = last_seq(rt)

    make_exit(rt, base, "root", "t", how)

    exited = rt.wait_event("child_exited", child_id="t", supervisor="root", after=seq0)
    assert exited.reason == reason
    expect_restart = restart == "permanent" or (
        restart == "transient" and reason not in NORMAL_CLASS
    )
    if expect_restart:
        rt.wait_event("child_restarted", child_id="t", supervisor="root", after=exited.seq)
        now = child(rt, "root", "t")
        assert (now.status, now.restarts) == ("running", 1)
        if base == TCP:
            assert now.pid is not None and now.pid != before.pid
        reply = rt.ask("root/t", Ping(token="again"))
        assert isinstance(reply, Pong) and reply.token == "again"
        assert count(rt, "root/t") == 2  # a fresh instance: the Ping and this Count
    else:
        listed = {c.id: c for c in rt.which_children("root")}
        if restart == "temporary":
            assert "t" not in listed, "a temporary child that exited must be forgotten"
        else:
            assert listed["t"].status == "stopped", "a transient child stays listed, stopped"
            assert listed["t"].pid is None
        assert [e for e in events_after(rt, seq0) if e.child_id == "t"] == [exited]
        with pytest.raises(ActorNotFound):
            rt.ask("root/t", Ping(), timeout=3.0)
    # The sibling is untouched whatever happened to t, and the root still runs.
    assert count(rt, "root/sib") == 2
    assert rt.exit_reason is None


# --- Strategies -------------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_failed_child(
    start_tree: Any, base: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            strategy="one_for_one",
            intensity=5,
            children=[echo(c, journal=str(journal)) for c in ("a", "b", "c")],
        )
    )
    pids = {c.id: c.pid for c in rt.which_children("root")}
    for path in ("root/a", "root/c"):
        count(rt, path)
        count(rt, path)
    seq0 = last_seq(rt)

    crash(rt, "root/b")
    rt.wait_event("child_restarted", child_id="b", after=seq0)

    assert count(rt, "root/a") == 3  # state kept: never restarted
    assert count(rt, "root/c") == 3
    assert count(rt, "root/b") == 1  # fresh
    after = {c.id: c for c in rt.which_children("root")}
    assert [after[c].restarts for c in ("a", "b", "c")] == [0, 1, 0]
    if base == TCP:
        assert after["a"].pid == pids["a"] and after["c"].pid == pids["c"]
        assert after["b"].pid != pids["b"]
    assert lines(journal) == ["a:start", "b:start", "c:start", "b:start"]
    assert ids(rt, "root") == ["a", "b", "c"]  # the restarted child keeps its place
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "b", BOOM),
        ("root", "child_restarted", "b", None),
    ]


def test_one_for_all_stops_others_in_reverse_then_starts_all_in_order(
    start_tree: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            strategy="one_for_all",
            intensity=5,
            children=[echo(c, journal=str(journal)) for c in ("a", "b", "c", "d")],
        )
    )
    count(rt, "root/a")
    seq0 = last_seq(rt)

    crash(rt, "root/b")
    rt.wait_event("child_restarted", child_id="d", after=seq0)

    assert lines(journal) == [
        "a:start",
        "b:start",
        "c:start",
        "d:start",
        "d:stop:shutdown",
        "c:stop:shutdown",
        "a:stop:shutdown",
        "a:start",
        "b:start",
        "c:start",
        "d:start",
    ]
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "b", BOOM),
        ("root", "child_terminated", "d", "shutdown"),
        ("root", "child_terminated", "c", "shutdown"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "child_restarted", "a", None),
        ("root", "child_restarted", "b", None),
        ("root", "child_restarted", "c", None),
        ("root", "child_restarted", "d", None),
    ]
    assert count(rt, "root/a") == 1  # a was restarted too: its state is fresh
    assert [c.status for c in rt.which_children("root")] == ["running"] * 4


def test_rest_for_one_restarts_the_failed_child_and_those_after_it(
    start_tree: Any, base: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            strategy="rest_for_one",
            intensity=5,
            children=[echo(c, journal=str(journal)) for c in ("a", "b", "c", "d")],
        )
    )
    pid_a = child(rt, "root", "a").pid
    count(rt, "root/a")
    count(rt, "root/d")
    seq0 = last_seq(rt)

    crash(rt, "root/b")
    rt.wait_event("child_restarted", child_id="d", after=seq0)

    assert lines(journal)[4:] == [
        "d:stop:shutdown",
        "c:stop:shutdown",
        "b:start",
        "c:start",
        "d:start",
    ]
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "b", BOOM),
        ("root", "child_terminated", "d", "shutdown"),
        ("root", "child_terminated", "c", "shutdown"),
        ("root", "child_restarted", "b", None),
        ("root", "child_restarted", "c", None),
        ("root", "child_restarted", "d", None),
    ]
    assert count(rt, "root/a") == 2  # before b: untouched
    assert count(rt, "root/d") == 1  # after b: restarted
    if base == TCP:
        assert child(rt, "root", "a").pid == pid_a


def test_one_for_all_forgets_a_temporary_sibling(start_tree: Any, tmp_path: Path) -> None:
    """OTP: in a group restart, temporary children that were stopped are not restarted."""
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            strategy="one_for_all",
            intensity=5,
            children=[
                echo("a", journal=str(journal)),
                echo("tmp", restart="temporary", journal=str(journal)),
                echo("c", journal=str(journal)),
            ],
        )
    )
    seq0 = last_seq(rt)

    crash(rt, "root/a")
    rt.wait_event("child_restarted", child_id="c", after=seq0)

    assert ids(rt, "root") == ["a", "c"]
    assert lines(journal)[3:] == ["c:stop:shutdown", "tmp:stop:shutdown", "a:start", "c:start"]


# --- Restart intensity ------------------------------------------------------------------------


def test_intensity_allows_n_restarts_and_the_next_one_shuts_the_root_down(
    start_tree: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            intensity=2,
            period=60,
            children=[echo(c, journal=str(journal)) for c in ("a", "b", "c")],
        )
    )
    seq = last_seq(rt)
    for n in (1, 2):
        crash(rt, "root/b")
        seq = rt.wait_event("child_restarted", child_id="b", after=seq).seq
        assert child(rt, "root", "b").restarts == n
    assert rt.exit_reason is None
    start_lines = len(lines(journal))

    crash(rt, "root/b")
    rt.wait_event("supervisor_shutdown", supervisor="root", after=seq)

    assert brief(events_after(rt, seq)) == [
        ("root", "child_exited", "b", BOOM),
        ("root", "intensity_exceeded", "b", "shutdown"),
        ("root", "child_terminated", "c", "shutdown"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert lines(journal)[start_lines:] == ["c:stop:shutdown", "a:stop:shutdown"]
    assert wait_exit_reason(rt) == "shutdown"


def test_intensity_zero_means_no_restart(start_tree: Any) -> None:
    rt = start_tree(sup(intensity=0, children=[echo("a"), echo("b")]))
    seq0 = last_seq(rt)

    crash(rt, "root/a")
    rt.wait_event("supervisor_shutdown", supervisor="root", after=seq0)

    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "a", BOOM),
        ("root", "intensity_exceeded", "a", "shutdown"),
        ("root", "child_terminated", "b", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert wait_exit_reason(rt) == "shutdown"


def test_nested_supervisor_giving_up_escalates_to_its_parent(
    start_tree: Any, base: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    inner = sup(
        "sub",
        intensity=1,
        period=60,
        children=[echo("x", journal=str(journal)), echo("y", journal=str(journal))],
    )
    rt = start_tree(sup(intensity=5, period=60, children=[echo("a"), inner]))
    sub_pid = child(rt, "root", "sub").pid
    rt.start_child("root/sub", echo("dyn", journal=str(journal)))
    count(rt, "root/a")
    seq = last_seq(rt)

    crash(rt, "root/sub/x")
    seq = rt.wait_event("child_restarted", child_id="x", supervisor="root/sub", after=seq).seq
    crash(rt, "root/sub/x")
    rt.wait_event("child_restarted", child_id="sub", supervisor="root", after=seq)

    assert brief(events_after(rt, seq)) == [
        ("root/sub", "child_exited", "x", BOOM),
        ("root/sub", "intensity_exceeded", "x", "shutdown"),
        ("root/sub", "child_terminated", "dyn", "shutdown"),
        ("root/sub", "child_terminated", "y", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_exited", "sub", "shutdown"),
        ("root/sub", "child_started", "x", None),
        ("root/sub", "child_started", "y", None),
        ("root", "child_restarted", "sub", None),
    ]
    # The new sub-supervisor has its static children only, freshly started.
    assert [(c.id, c.status, c.restarts) for c in rt.which_children("root/sub")] == [
        ("x", "running", 0),
        ("y", "running", 0),
    ]
    assert count(rt, "root/sub/x") == 1
    assert child(rt, "root", "sub").restarts == 1
    if base == TCP:
        assert child(rt, "root", "sub").pid != sub_pid
    assert count(rt, "root/a") == 2  # one_for_one at the root: a is untouched
    assert rt.exit_reason is None


def test_escalation_reaches_the_root_when_its_own_intensity_is_exceeded(start_tree: Any) -> None:
    rt = start_tree(
        sup(
            intensity=1,
            period=60,
            children=[echo("a"), sup("sub", intensity=0, children=[echo("x")])],
        )
    )
    seq = last_seq(rt)
    crash(rt, "root/sub/x")  # sub gives up; the root restarts it (restart 1 of 1)
    seq = rt.wait_event("child_restarted", child_id="sub", supervisor="root", after=seq).seq
    crash(rt, "root/sub/x")  # sub gives up again; the root has no restart left
    rt.wait_event("supervisor_shutdown", supervisor="root", after=seq)

    assert brief(events_after(rt, seq)) == [
        ("root/sub", "child_exited", "x", BOOM),
        ("root/sub", "intensity_exceeded", "x", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_exited", "sub", "shutdown"),
        ("root", "intensity_exceeded", "sub", "shutdown"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert wait_exit_reason(rt) == "shutdown"


def test_killed_supervisor_takes_its_subtree_down_and_is_restarted(
    start_tree: Any, base: str
) -> None:
    if base != TCP:
        pytest.skip("simpleSystemBase runs every actor in this process: nothing to SIGKILL")
    rt = start_tree(sup(intensity=5, children=[sup("sub", children=[echo("x"), echo("y")])]))
    sub_pid = child(rt, "root", "sub").pid
    old = {c.id: c.pid for c in rt.which_children("root/sub")}
    assert sub_pid is not None
    seq0 = last_seq(rt)

    os.kill(sub_pid, signal.SIGKILL)
    exited = rt.wait_event("child_exited", child_id="sub", supervisor="root", after=seq0)
    assert exited.reason == "killed"
    rt.wait_event("child_restarted", child_id="sub", supervisor="root", after=exited.seq)

    procs = [
        psutil.Process(pid) for pid in old.values() if pid is not None and psutil.pid_exists(pid)
    ]
    _gone, alive = psutil.wait_procs(procs, timeout=5.0)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "orphans outlived sub"
    new = {c.id: c for c in rt.which_children("root/sub")}
    assert [new[c].status for c in ("x", "y")] == ["running", "running"]
    assert new["x"].pid != old["x"] and new["y"].pid != old["y"]
    assert count(rt, "root/sub/x") == 1


def test_ask_right_after_a_crash_reaches_the_restarted_child(start_tree: Any) -> None:
    """The Runtime waits for a pending restart instead of failing the call."""
    rt = start_tree(sup(intensity=5, children=[echo("a")]))
    count(rt, "root/a")
    crash(rt, "root/a")
    reply = rt.ask("root/a", Ping(token="next"), timeout=5.0)
    assert isinstance(reply, Pong) and reply.token == "next"
    assert count(rt, "root/a") == 2  # the Ping and this Count: a fresh instance


def test_failed_restart_counts_toward_intensity(start_tree: Any, tmp_path: Path) -> None:
    """OTP: a restart whose start fails is retried, and every attempt counts as a restart."""
    marker = tmp_path / "marker"
    rt = start_tree(
        sup(
            intensity=3,
            period=60,
            children=[echo("a", fail_start_if_exists=str(marker)), echo("b")],
        )
    )
    marker.touch()
    seq0 = last_seq(rt)

    crash(rt, "root/a")
    rt.wait_event("supervisor_shutdown", supervisor="root", after=seq0)

    failure = "error:RuntimeError: marker says fail"
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "a", BOOM),
        ("root", "start_failed", "a", failure),
        ("root", "start_failed", "a", failure),
        ("root", "start_failed", "a", failure),
        ("root", "intensity_exceeded", "a", "shutdown"),
        ("root", "child_terminated", "b", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert wait_exit_reason(rt) == "shutdown"


def test_failed_restart_is_retried_until_it_succeeds(start_tree: Any, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    rt = start_tree(
        sup(
            intensity=3,
            period=60,
            children=[echo("a", start=FLAKY, attempts=str(attempts), fail_starts=2), echo("b")],
        )
    )
    seq0 = last_seq(rt)

    crash(rt, "root/a")
    rt.wait_event("child_restarted", child_id="a", after=seq0)

    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "a", BOOM),
        ("root", "start_failed", "a", "error:RuntimeError: flaky start 1"),
        ("root", "start_failed", "a", "error:RuntimeError: flaky start 2"),
        ("root", "child_restarted", "a", None),
    ]
    assert lines(attempts) == [f"attempt {n}" for n in range(4)]
    assert child(rt, "root", "a").status == "running"
    assert count(rt, "root/a") == 1
    # Three restarts (two failed) used the whole intensity: one more crash is too many.
    seq1 = last_seq(rt)
    crash(rt, "root/a")
    rt.wait_event("intensity_exceeded", supervisor="root", after=seq1)
    assert wait_exit_reason(rt) == "shutdown"


def test_failed_restart_retried_after_marker_removed(start_tree: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    rt = start_tree(
        sup(
            intensity=1000,
            period=60,
            children=[echo("a", fail_start_if_exists=str(marker)), echo("b")],
        )
    )
    marker.touch()  # created after the first start: restarts now fail
    seq0 = last_seq(rt)

    crash(rt, "root/a")
    failed = rt.wait_event("start_failed", child_id="a", after=seq0)
    assert failed.reason == "error:RuntimeError: marker says fail"
    marker.unlink()
    restarted = rt.wait_event("child_restarted", child_id="a", after=failed.seq)

    between = [e for e in events_after(rt, failed.seq) if e.seq < restarted.seq]
    assert {e.event for e in between} <= {"start_failed"}
    info = child(rt, "root", "a")
    assert (info.status, info.restarts) == ("running", 1)
    assert rt.ask("root/a", Ping(token="t")).token == "t"  # type: ignore[attr-defined]
    assert rt.exit_reason is None


def test_a_restart_that_keeps_failing_never_wedges_the_caller(
    start_tree: Any, tmp_path: Path
) -> None:
    """OTP retries a failed restart asynchronously (try_again_restart) and keeps answering: on
    simpleSystemBase too, the tell that crashed the child returns and the child shows
    `restarting` until a later attempt succeeds."""
    marker = tmp_path / "marker"
    rt = start_tree(
        sup(intensity=1000, period=60, children=[echo("a", fail_start_if_exists=str(marker))])
    )
    marker.touch()
    seq0 = last_seq(rt)

    rt.tell("root/a", Crash())  # returns: the failing restarts are retried later
    failed = rt.wait_event("start_failed", child_id="a", after=seq0)
    info = child(rt, "root", "a")
    marker.unlink()
    restarted = rt.wait_event("child_restarted", child_id="a", after=failed.seq)

    assert "restarting" == info.status
    assert "error:RuntimeError: marker says fail" == failed.reason
    assert restarted.seq > failed.seq
    assert "running" == child(rt, "root", "a").status
    assert rt.exit_reason is None


# --- Boot -----------------------------------------------------------------------------------


def test_children_start_in_spec_order(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                echo("a", journal=str(journal)),
                sup(
                    "sub",
                    children=[echo("x", journal=str(journal)), echo("y", journal=str(journal))],
                ),
                echo("b", journal=str(journal)),
            ]
        )
    )
    assert lines(journal) == ["a:start", "x:start", "y:start", "b:start"]
    assert ids(rt, "root") == ["a", "sub", "b"]
    assert ids(rt, "root/sub") == ["x", "y"]


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_boot_failure_stops_started_children_in_reverse_and_raises(
    base: str,
    tmp_path: Path,
    nested: bool,
) -> None:
    journal = tmp_path / "journal"
    bad = echo("bad", fail_start=True, journal=str(journal))
    after_bad = echo("never", journal=str(journal))
    if nested:
        children = [
            echo("a", journal=str(journal)),
            sup("sub", children=[echo("x", journal=str(journal)), bad, after_bad]),
            echo("b", journal=str(journal)),
        ]
        offender, stopped = "root/sub/bad", ["x:stop:shutdown", "a:stop:shutdown"]
        started = ["a:start", "x:start"]
    else:
        children = [
            echo("a", journal=str(journal)),
            echo("b", journal=str(journal)),
            bad,
            after_bad,
        ]
        offender, stopped = "root/bad", ["b:stop:shutdown", "a:stop:shutdown"]
        started = ["a:start", "b:start"]
    before = actor_processes()

    with pytest.raises(StartFailed) as info:
        Runtime.start(Topology(system=SystemConfig(base=base), root=sup(children=children)))

    assert info.value.child == offender
    assert info.value.reason == "error:RuntimeError: refusing to start"
    assert lines(journal) == started + stopped
    assert_no_new_processes(before)


# --- Shutdown ------------------------------------------------------------------------------


def test_shutdown_stops_the_tree_in_reverse_start_order(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                echo("a", journal=str(journal)),
                sup(
                    "sub",
                    children=[echo("x", journal=str(journal)), echo("y", journal=str(journal))],
                ),
                echo("b", journal=str(journal)),
            ]
        )
    )
    seq0 = last_seq(rt)

    rt.shutdown()

    assert lines(journal)[4:] == [
        "b:stop:shutdown",
        "y:stop:shutdown",
        "x:stop:shutdown",
        "a:stop:shutdown",
    ]
    assert rt.exit_reason == "shutdown"
    assert brief([e for e in rt.events() if e.seq > seq0]) == [
        ("root", "child_terminated", "b", "shutdown"),
        ("root/sub", "child_terminated", "y", "shutdown"),
        ("root/sub", "child_terminated", "x", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_terminated", "sub", "shutdown"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]


def test_shutdown_timeout_kills_a_child_whose_cleanup_overruns(
    start_tree: Any, base: str, tmp_path: Path
) -> None:
    if base != TCP:
        pytest.skip("on simpleSystemBase a sleeping on_stop blocks the whole system")
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                echo("a", journal=str(journal)),
                echo("slow", shutdown=0.3, slow_stop=5, journal=str(journal)),
            ]
        )
    )
    pid = child(rt, "root", "slow").pid
    seq0 = last_seq(rt)

    started = time.monotonic()
    rt.terminate_child("root", "slow")
    elapsed = time.monotonic() - started

    assert elapsed < 3.0, f"terminate_child took {elapsed:.1f} s for a 0.3 s shutdown"
    assert brief(events_after(rt, seq0)) == [("root", "child_terminated", "slow", "killed")]
    assert lines(journal)[-1] == "slow:stop:shutdown"  # on_stop began, then was cut short
    assert pid is not None
    if psutil.pid_exists(pid):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert child(rt, "root", "slow").status == "stopped"
    assert count(rt, "root/a") == 1


def test_shutdown_timeout_on_runtime_shutdown(start_tree: Any, base: str, tmp_path: Path) -> None:
    if base != TCP:
        pytest.skip("on simpleSystemBase a sleeping on_stop blocks the whole system")
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                echo("a", journal=str(journal)),
                echo("slow", shutdown=0.3, slow_stop=5, journal=str(journal)),
            ]
        )
    )
    seq0 = last_seq(rt)
    started = time.monotonic()
    rt.shutdown()
    assert time.monotonic() - started < 3.0
    assert brief([e for e in rt.events() if e.seq > seq0]) == [
        ("root", "child_terminated", "slow", "killed"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert lines(journal)[2:] == ["slow:stop:shutdown", "a:stop:shutdown"]


def test_brutal_kill_kills_without_cleanup(start_tree: Any, base: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                echo("a", journal=str(journal)),
                echo("brute", shutdown="brutal_kill", journal=str(journal)),
            ]
        )
    )
    seq0 = last_seq(rt)

    rt.terminate_child("root", "brute")

    assert brief(events_after(rt, seq0)) == [("root", "child_terminated", "brute", "killed")]
    assert lines(journal) == ["a:start", "brute:start"]  # on_stop never ran
    assert child(rt, "root", "brute").status == "stopped"

    rt.restart_child("root", "brute")
    seq1 = last_seq(rt)
    rt.shutdown()
    assert brief([e for e in rt.events() if e.seq > seq1]) == [
        ("root", "child_terminated", "brute", "killed"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert lines(journal)[2:] == ["brute:start", "a:stop:shutdown"]


def test_infinity_waits_for_a_slow_cleanup(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(children=[echo("slow", shutdown="infinity", slow_stop=0.6, journal=str(journal))])
    )
    seq0 = last_seq(rt)

    started = time.monotonic()
    rt.terminate_child("root", "slow")

    assert time.monotonic() - started >= 0.6
    assert brief(events_after(rt, seq0)) == [("root", "child_terminated", "slow", "shutdown")]
    assert lines(journal) == ["slow:start", "slow:stop:shutdown"]


# --- Significant children and auto_shutdown ---------------------------------------------------


def auto_tree(policy: str, *, sub_restart: str = "transient", **extra: Any) -> SupervisorSpec:
    """root (one_for_one) -> [keep, sub(auto_shutdown=policy) -> [s1, s2 significant, plain]]."""
    journal = extra.get("journal")
    args = {"journal": journal} if journal else {}
    significant = extra.get("significant_restart", "transient")
    inner = sup(
        "sub",
        auto_shutdown=policy,
        restart=sub_restart,
        intensity=5,
        children=[
            echo("s1", restart=significant, significant=True, **args),
            echo("s2", restart=significant, significant=True, **args),
            echo("plain", **args),
        ],
    )
    return sup(intensity=5, children=[echo("keep"), inner])


def test_any_significant_normal_exit_shuts_the_supervisor_down(
    start_tree: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(auto_tree("any_significant", journal=str(journal)))
    seq0 = last_seq(rt)

    rt.ask("root/sub/s1", StopMe(reason="normal"))
    rt.wait_event("child_exited", child_id="sub", supervisor="root", after=seq0)

    assert brief(events_after(rt, seq0)) == [
        ("root/sub", "child_exited", "s1", "normal"),
        ("root/sub", "auto_shutdown", "s1", "shutdown"),
        ("root/sub", "child_terminated", "plain", "shutdown"),
        ("root/sub", "child_terminated", "s2", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_exited", "sub", "shutdown"),
    ]
    assert lines(journal)[3:] == ["s1:stop:normal", "plain:stop:shutdown", "s2:stop:shutdown"]
    # sub is transient and exited with reason shutdown: not restarted, listed as stopped.
    assert child(rt, "root", "sub").status == "stopped"
    assert count(rt, "root/keep") == 1
    assert rt.exit_reason is None


def test_all_significant_waits_for_the_last_significant_child(start_tree: Any) -> None:
    rt = start_tree(auto_tree("all_significant"))
    seq0 = last_seq(rt)

    rt.ask("root/sub/s1", StopMe(reason="normal"))
    rt.wait_event("child_exited", child_id="s1", supervisor="root/sub", after=seq0)
    assert [(c.id, c.status) for c in rt.which_children("root/sub")] == [
        ("s1", "stopped"),
        ("s2", "running"),
        ("plain", "running"),
    ]
    assert child(rt, "root", "sub").status == "running"
    assert not [e for e in events_after(rt, seq0) if e.event == "auto_shutdown"]

    seq1 = last_seq(rt)
    rt.ask("root/sub/s2", StopMe(reason="shutdown"))
    rt.wait_event("child_exited", child_id="sub", supervisor="root", after=seq1)
    assert brief(events_after(rt, seq1)) == [
        ("root/sub", "child_exited", "s2", "shutdown"),
        ("root/sub", "auto_shutdown", "s2", "shutdown"),
        ("root/sub", "child_terminated", "plain", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_exited", "sub", "shutdown"),
    ]


def test_terminate_child_of_a_significant_child_does_not_auto_shutdown(start_tree: Any) -> None:
    rt = start_tree(auto_tree("any_significant"))
    seq0 = last_seq(rt)

    rt.terminate_child("root/sub", "s1")

    assert brief(events_after(rt, seq0)) == [("root/sub", "child_terminated", "s1", "shutdown")]
    assert child(rt, "root", "sub").status == "running"
    assert [(c.id, c.status) for c in rt.which_children("root/sub")] == [
        ("s1", "stopped"),
        ("s2", "running"),
        ("plain", "running"),
    ]


def test_all_significant_terminated_ones_do_not_count_as_exits(start_tree: Any) -> None:
    """terminate_child never triggers auto_shutdown, even of the last significant child."""
    rt = start_tree(auto_tree("all_significant"))
    seq0 = last_seq(rt)
    rt.terminate_child("root/sub", "s1")
    rt.terminate_child("root/sub", "s2")
    assert not [e for e in events_after(rt, seq0) if e.event == "auto_shutdown"]
    assert child(rt, "root", "sub").status == "running"
    assert count(rt, "root/sub/plain") == 1


def test_crashed_transient_significant_child_is_restarted_not_auto_shutdown(
    start_tree: Any,
) -> None:
    rt = start_tree(auto_tree("any_significant"))
    seq0 = last_seq(rt)

    crash(rt, "root/sub/s1")
    rt.wait_event("child_restarted", child_id="s1", supervisor="root/sub", after=seq0)

    assert brief(events_after(rt, seq0)) == [
        ("root/sub", "child_exited", "s1", BOOM),
        ("root/sub", "child_restarted", "s1", None),
    ]
    assert child(rt, "root", "sub").status == "running"


def test_temporary_significant_child_auto_shuts_down_on_any_exit(start_tree: Any) -> None:
    """OTP: a temporary significant child triggers auto_shutdown whatever its exit reason."""
    rt = start_tree(auto_tree("any_significant", significant_restart="temporary"))
    seq0 = last_seq(rt)

    crash(rt, "root/sub/s2")
    rt.wait_event("child_exited", child_id="sub", supervisor="root", after=seq0)

    assert brief(events_after(rt, seq0))[:2] == [
        ("root/sub", "child_exited", "s2", BOOM),
        ("root/sub", "auto_shutdown", "s2", "shutdown"),
    ]
    assert child(rt, "root", "sub").status == "stopped"


def test_root_auto_shutdown_ends_the_runtime(start_tree: Any) -> None:
    rt = start_tree(
        sup(
            auto_shutdown="any_significant",
            children=[echo("a"), echo("s", restart="transient", significant=True)],
        )
    )
    seq0 = last_seq(rt)

    rt.ask("root/s", StopMe(reason="normal"))
    rt.wait_event("supervisor_shutdown", supervisor="root", after=seq0)

    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "s", "normal"),
        ("root", "auto_shutdown", "s", "shutdown"),
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "supervisor_shutdown", None, "shutdown"),
    ]
    assert wait_exit_reason(rt) == "shutdown"


# --- A handler exception is one crash ---------------------------------------------------------


def test_handler_exception_is_one_crash(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(intensity=5, children=[echo("t", start=TALLY, journal=str(journal))]))
    assert count(rt, "root/t") == 1
    count(rt, "root/t")
    seq0 = last_seq(rt)

    started = time.monotonic()
    crashed = crash(rt, "root/t")
    assert time.monotonic() - started < 2.0, "the asker must learn of the crash at once"
    assert crashed.reason == BOOM
    assert crashed.path == "root/t"
    rt.wait_event("child_restarted", child_id="t", after=seq0)

    assert count(rt, "root/t") == 1  # fresh state after the restart
    handled = lines(journal)
    assert handled.count("t:handle:test.crash") == 1, handled
    assert handled == [
        "t:start",
        "t:handle:test.count",
        "t:handle:test.count",
        "t:handle:test.crash",
        "t:start",
        "t:handle:test.count",
    ]
    # Exactly one exit and one restart for one crash.
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_exited", "t", BOOM),
        ("root", "child_restarted", "t", None),
    ]


def test_crash_reason_carries_the_exception_text(start_tree: Any) -> None:
    rt = start_tree(sup(intensity=5, children=[echo("t")]))
    seq0 = last_seq(rt)
    assert crash(rt, "root/t", text="disk on fire").reason == "error:ValueError: disk on fire"
    exited = rt.wait_event("child_exited", child_id="t", after=seq0)
    assert exited.reason == "error:ValueError: disk on fire"


# --- Events -------------------------------------------------------------------------------


def assert_ordered(events: list[SupervisionEvent]) -> None:
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps: {seqs}"


def test_events_are_ordered_and_include_what_each_call_caused(
    start_tree: Any, tmp_path: Path
) -> None:
    rt = start_tree(
        sup(children=[echo("a"), sup("sub", children=[echo("x"), echo("y")]), echo("b")])
    )

    # Runtime.start returned: every child_started is there, the sub's before root's "sub".
    boot = rt.events()
    assert_ordered(boot)
    assert brief(boot) == [
        ("root", "child_started", "a", None),
        ("root/sub", "child_started", "x", None),
        ("root/sub", "child_started", "y", None),
        ("root", "child_started", "sub", None),
        ("root", "child_started", "b", None),
    ]

    seq = last_seq(rt)
    rt.start_child("root", echo("dyn"))
    assert brief(events_after(rt, seq)) == [("root", "child_started", "dyn", None)]

    seq = last_seq(rt)
    rt.terminate_child("root", "sub")
    assert brief(events_after(rt, seq)) == [
        ("root/sub", "child_terminated", "y", "shutdown"),
        ("root/sub", "child_terminated", "x", "shutdown"),
        ("root/sub", "supervisor_shutdown", None, "shutdown"),
        ("root", "child_terminated", "sub", "shutdown"),
    ]

    seq = last_seq(rt)
    rt.restart_child("root", "sub")
    assert brief(events_after(rt, seq)) == [
        ("root/sub", "child_started", "x", None),
        ("root/sub", "child_started", "y", None),
        ("root", "child_started", "sub", None),
    ]

    seq = last_seq(rt)
    rt.terminate_child("root", "dyn")
    rt.delete_child("root", "dyn")
    assert brief(events_after(rt, seq)) == [
        ("root", "child_terminated", "dyn", "shutdown"),
        ("root", "child_deleted", "dyn", None),
    ]

    seq = last_seq(rt)
    with pytest.raises(StartFailed):
        rt.start_child("root", echo("bad", fail_start=True))
    assert brief(events_after(rt, seq)) == [
        ("root", "start_failed", "bad", "error:RuntimeError: refusing to start")
    ]

    rt.shutdown()
    final = rt.events()
    assert_ordered(final)
    assert brief(final)[-1] == ("root", "supervisor_shutdown", None, "shutdown")


def test_wait_event_times_out_with_ask_timeout(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    started = time.monotonic()
    with pytest.raises(AskTimeout):
        rt.wait_event("child_restarted", child_id="a", timeout=0.5)
    assert time.monotonic() - started < 3.0


def test_args_reach_the_worker(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a", color="red", n=3)]))
    reply = rt.ask("root/a", GetArgs())
    assert reply.args == {"color": "red", "n": 3}  # type: ignore[attr-defined]


def test_ask_a_sibling_restarted_by_one_for_all_right_after_the_crash(start_tree: Any) -> None:
    """A path asked while its actor is being restarted is answered (by the old instance if it
    was still running when the message arrived, as in OTP, or by the new one), never lost."""
    rt = start_tree(sup(strategy="one_for_all", intensity=5, children=[echo("a"), echo("b")]))
    crash(rt, "root/a")
    reply = rt.ask("root/b", Ping(token="b"), timeout=5.0)
    rt.wait_event("child_restarted", child_id="b")
    after = rt.ask("root/b", Ping(token="b2"), timeout=5.0)

    assert isinstance(reply, Pong) and reply.token == "b"
    assert isinstance(after, Pong) and after.token == "b2"
    assert count(rt, "root/b") >= 2  # the restarted instance saw Ping b2 and this Count
