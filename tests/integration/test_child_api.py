"""The child API (start/terminate/restart/delete_child, which/count_children) with OTP's errors.

From OTP's ``supervisor`` manual:

* ``start_child`` of an id that exists: ``{error, {already_started, Pid}}`` if it runs,
  ``{error, already_present}`` if it is terminated; a child that fails to start is not kept;
* ``terminate_child`` keeps the spec (except temporary children and simple_one_for_one ones);
  ``restart_child`` restarts a terminated child from its spec; ``delete_child`` removes a
  terminated child's spec; both refuse a running child (``running``) and an unknown id
  (``not_found``), and are not supported on simple_one_for_one supervisors;
* dynamic children are not part of the supervisor's spec: a restarted supervisor starts with
  its static children only;
* ``count_children``: specs, active, supervisors, workers (simple_one_for_one: specs is 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import (
    ActorNotFound,
    AlreadyPresent,
    AlreadyStarted,
    ChildNotFound,
    ChildRunning,
    NotSupported,
    StartFailed,
    SupervisorError,
    UnderstudyError,
)
from protocols.supervision import ChildCounts
from tests.integration._workers import Args, GetArgs, Ping, Pong, StopMe
from tests.integration.test_supervision_matrix import (
    BOOM,
    TCP,
    brief,
    child,
    count,
    crash,
    echo,
    events_after,
    ids,
    last_seq,
    lines,
    sup,
)


def counts(specs: int, active: int, supervisors: int, workers: int) -> tuple[int, int, int, int]:
    return specs, active, supervisors, workers


def as_tuple(c: ChildCounts) -> tuple[int, int, int, int]:
    return c.specs, c.active, c.supervisors, c.workers


# --- start_child ------------------------------------------------------------------------------


def test_start_child_adds_a_running_child_at_the_end(start_tree: Any, base: str) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    info = rt.start_child("root", echo("dyn", color="blue"))
    assert (info.id, info.status, info.type, info.restart) == (
        "dyn",
        "running",
        "worker",
        "permanent",
    )
    if base == TCP:
        assert info.pid is not None
    assert ids(rt, "root") == ["a", "dyn"]
    reply = rt.ask("root/dyn", GetArgs())
    assert isinstance(reply, Args) and reply.args == {"color": "blue"}


def test_start_child_of_a_running_id_is_already_started(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(AlreadyStarted):
        rt.start_child("root", echo("a"))
    rt.start_child("root", echo("dyn"))
    with pytest.raises(AlreadyStarted):
        rt.start_child("root", echo("dyn"))
    assert ids(rt, "root") == ["a", "dyn"]


def test_start_child_of_a_terminated_id_is_already_present(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    rt.terminate_child("root", "a")
    with pytest.raises(AlreadyPresent):
        rt.start_child("root", echo("a"))
    assert [(c.id, c.status) for c in rt.which_children("root")] == [("a", "stopped")]


def test_start_child_that_fails_raises_start_failed_and_is_not_kept(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    seq0 = last_seq(rt)
    with pytest.raises(StartFailed) as info:
        rt.start_child("root", echo("bad", fail_start=True))
    assert info.value.child == "root/bad"
    assert info.value.reason == "error:RuntimeError: refusing to start"
    assert ids(rt, "root") == ["a"]
    assert brief(events_after(rt, seq0)) == [
        ("root", "start_failed", "bad", "error:RuntimeError: refusing to start")
    ]
    # The id is free again: a good spec with it starts.
    assert rt.start_child("root", echo("bad")).status == "running"


def test_start_child_of_a_nested_supervisor(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    info = rt.start_child("root", sup("pool", children=[echo("x"), echo("y")]))
    assert (info.id, info.type, info.status) == ("pool", "supervisor", "running")
    assert ids(rt, "root/pool") == ["x", "y"]
    reply = rt.ask("root/pool/y", Ping(token="deep"))
    assert isinstance(reply, Pong) and reply.path == "root/pool/y"


def test_start_child_of_a_nested_supervisor_that_fails_names_the_offender(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(StartFailed) as info:
        rt.start_child("root", sup("pool", children=[echo("x"), echo("bad", fail_start=True)]))
    assert info.value.child == "root/pool/bad"
    assert ids(rt, "root") == ["a"]


# --- terminate_child / restart_child / delete_child -------------------------------------------


def test_terminate_child_unknown_is_child_not_found(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(ChildNotFound):
        rt.terminate_child("root", "nope")


def test_restart_and_delete_of_a_running_child_are_refused(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(ChildRunning):
        rt.restart_child("root", "a")
    with pytest.raises(ChildRunning):
        rt.delete_child("root", "a")
    assert child(rt, "root", "a").status == "running"


def test_restart_and_delete_of_an_unknown_child_are_child_not_found(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(ChildNotFound):
        rt.restart_child("root", "nope")
    with pytest.raises(ChildNotFound):
        rt.delete_child("root", "nope")


def test_child_api_errors_are_supervisor_errors(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    with pytest.raises(SupervisorError):
        rt.terminate_child("root", "nope")
    with pytest.raises(UnderstudyError):
        rt.restart_child("root", "a")


def test_terminate_then_restart_child(start_tree: Any, base: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(children=[echo("a", journal=str(journal)), echo("b")]))
    old_pid = child(rt, "root", "a").pid
    count(rt, "root/a")
    seq0 = last_seq(rt)

    rt.terminate_child("root", "a")
    stopped = child(rt, "root", "a")
    assert (stopped.status, stopped.pid) == ("stopped", None)
    assert lines(journal) == ["a:start", "a:stop:shutdown"]
    with pytest.raises(ActorNotFound):
        rt.ask("root/a", Ping(), timeout=3.0)
    # A terminated child is not restarted by its supervisor.
    assert [e.event for e in events_after(rt, seq0)] == ["child_terminated"]

    info = rt.restart_child("root", "a")
    assert info.status == "running"
    if base == TCP:
        assert info.pid is not None and info.pid != old_pid
    assert count(rt, "root/a") == 1
    assert lines(journal) == ["a:start", "a:stop:shutdown", "a:start"]
    assert ids(rt, "root") == ["a", "b"]  # keeps its place in the start order
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "child_started", "a", None),
    ]


def test_terminate_child_twice_is_fine(start_tree: Any) -> None:
    """OTP: terminating an already terminated (static) child returns ok."""
    rt = start_tree(sup(children=[echo("a")]))
    rt.terminate_child("root", "a")
    rt.terminate_child("root", "a")
    assert child(rt, "root", "a").status == "stopped"


def test_terminate_then_delete_child_removes_the_spec(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a"), echo("b")]))
    seq0 = last_seq(rt)
    rt.terminate_child("root", "a")
    rt.delete_child("root", "a")
    assert ids(rt, "root") == ["b"]
    with pytest.raises(ChildNotFound):
        rt.restart_child("root", "a")
    with pytest.raises(ChildNotFound):
        rt.delete_child("root", "a")
    assert brief(events_after(rt, seq0)) == [
        ("root", "child_terminated", "a", "shutdown"),
        ("root", "child_deleted", "a", None),
    ]
    # The id is free: start_child may reuse it.
    assert rt.start_child("root", echo("a")).status == "running"
    assert ids(rt, "root") == ["b", "a"]


def test_terminate_child_of_a_temporary_child_forgets_it(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("tmp", restart="temporary"), echo("b")]))
    rt.terminate_child("root", "tmp")
    assert ids(rt, "root") == ["b"]
    with pytest.raises(ChildNotFound):
        rt.restart_child("root", "tmp")


def test_restart_child_of_a_transient_child_that_exited_normally(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("t", restart="transient")]))
    seq0 = last_seq(rt)
    rt.ask("root/t", StopMe(reason="normal"))
    rt.wait_event("child_exited", child_id="t", after=seq0)
    assert child(rt, "root", "t").status == "stopped"
    assert rt.restart_child("root", "t").status == "running"
    assert count(rt, "root/t") == 1


def test_restart_child_that_fails_to_start_raises_and_keeps_the_spec(
    start_tree: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    rt = start_tree(sup(children=[echo("a", fail_start_if_exists=str(marker))]))
    rt.terminate_child("root", "a")
    marker.touch()
    with pytest.raises(StartFailed) as info:
        rt.restart_child("root", "a")
    assert info.value.child == "root/a"
    assert info.value.reason == "error:RuntimeError: marker says fail"
    assert child(rt, "root", "a").status == "stopped"
    marker.unlink()
    assert rt.restart_child("root", "a").status == "running"


def test_child_path_prefix_is_accepted(start_tree: Any) -> None:
    rt = start_tree(sup(children=[echo("a")]))
    rt.terminate_child("root", "root/a")
    assert child(rt, "root", "a").status == "stopped"
    rt.restart_child("root", "root/a")
    assert child(rt, "root", "a").status == "running"


# --- Dynamic children and supervisor restarts -------------------------------------------------


def test_restarting_a_supervisor_resets_its_children_to_the_static_spec(
    start_tree: Any, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(
        sup(
            children=[
                sup(
                    "sub",
                    children=[echo("x", journal=str(journal)), echo("y", journal=str(journal))],
                )
            ]
        )
    )
    rt.start_child("root/sub", echo("dyn", journal=str(journal)))
    rt.terminate_child("root/sub", "y")
    rt.delete_child("root/sub", "y")
    rt.terminate_child("root/sub", "x")
    assert [(c.id, c.status) for c in rt.which_children("root/sub")] == [
        ("x", "stopped"),
        ("dyn", "running"),
    ]

    rt.terminate_child("root", "sub")
    with pytest.raises(ActorNotFound):
        rt.which_children("root/sub", timeout=3.0)
    rt.restart_child("root", "sub")

    assert [(c.id, c.status) for c in rt.which_children("root/sub")] == [
        ("x", "running"),
        ("y", "running"),
    ]
    assert lines(journal)[-2:] == ["x:start", "y:start"]
    with pytest.raises(ActorNotFound):
        rt.ask("root/sub/dyn", Ping(), timeout=3.0)


def test_crash_restart_of_a_supervisor_drops_its_dynamic_children(start_tree: Any) -> None:
    rt = start_tree(sup(intensity=5, children=[sup("sub", intensity=0, children=[echo("x")])]))
    rt.start_child("root/sub", echo("dyn"))
    seq0 = last_seq(rt)
    crash(rt, "root/sub/x")  # intensity 0: sub gives up, root restarts it
    rt.wait_event("child_restarted", child_id="sub", supervisor="root", after=seq0)
    assert ids(rt, "root/sub") == ["x"]


# --- count_children ---------------------------------------------------------------------------


def test_count_children_follows_otp(start_tree: Any) -> None:
    rt = start_tree(
        sup(children=[echo("a"), sup("sub", children=[echo("x")]), echo("b", restart="transient")])
    )
    assert as_tuple(rt.count_children("root")) == counts(3, 3, 1, 2)
    assert as_tuple(rt.count_children("root/sub")) == counts(1, 1, 0, 1)

    rt.terminate_child("root", "sub")  # terminated children still count as specs
    assert as_tuple(rt.count_children("root")) == counts(3, 2, 1, 2)

    rt.start_child("root", echo("dyn"))
    assert as_tuple(rt.count_children("root")) == counts(4, 3, 1, 3)

    seq0 = last_seq(rt)
    rt.ask("root/b", StopMe(reason="normal"))
    rt.wait_event("child_exited", child_id="b", after=seq0)
    assert as_tuple(rt.count_children("root")) == counts(4, 2, 1, 3)

    rt.delete_child("root", "sub")
    assert as_tuple(rt.count_children("root")) == counts(3, 2, 0, 3)


def test_count_children_of_simple_one_for_one(start_tree: Any) -> None:
    """OTP: a simple_one_for_one supervisor has one spec (the template) and N children."""
    rt = start_tree(sup(children=[pool("temporary")]))
    assert as_tuple(rt.count_children("root/pool")) == counts(1, 0, 0, 0)
    for _ in range(3):
        rt.start_child("root/pool", {})
    assert as_tuple(rt.count_children("root/pool")) == counts(1, 3, 0, 3)


# --- simple_one_for_one -----------------------------------------------------------------------


def pool(restart: str, **template_args: Any) -> Any:
    """A simple_one_for_one supervisor "pool" with an Echo template "job"."""
    return sup(
        "pool",
        strategy="simple_one_for_one",
        intensity=5,
        template=echo("job", restart=restart, **template_args),
    )


def test_sofo_start_child_merges_args_into_the_template(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("temporary", a=1, b=2)]))
    info = rt.start_child("root/pool", {"b": 3, "c": 4})
    assert info.status == "running" and info.restart == "temporary"
    reply = rt.ask(f"root/pool/{info.id}", GetArgs())
    assert isinstance(reply, Args) and reply.args == {"a": 1, "b": 3, "c": 4}
    other = rt.start_child("root/pool", {})
    reply = rt.ask(f"root/pool/{other.id}", GetArgs())
    assert isinstance(reply, Args) and reply.args == {"a": 1, "b": 2}


def test_sofo_ids_are_unique_and_listed(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("temporary")]))
    started = [rt.start_child("root/pool", {"n": n}).id for n in range(4)]
    assert len(set(started)) == 4
    assert ids(rt, "root/pool") == started
    rt.terminate_child("root/pool", started[1])
    again = rt.start_child("root/pool", {}).id
    assert again not in started  # ids are never reused
    assert ids(rt, "root/pool") == [started[0], started[2], started[3], again]
    for cid in ids(rt, "root/pool"):
        reply = rt.ask(f"root/pool/{cid}", Ping(token=cid))
        assert isinstance(reply, Pong) and reply.path == f"root/pool/{cid}"


def test_sofo_start_child_with_a_spec_is_not_supported(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("temporary")]))
    with pytest.raises(NotSupported):
        rt.start_child("root/pool", echo("x"))


def test_sofo_terminate_child_removes_it(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(children=[pool("permanent", journal=str(journal))]))
    info = rt.start_child("root/pool", {})
    rt.terminate_child("root/pool", info.id)
    assert ids(rt, "root/pool") == []
    assert lines(journal) == [f"{info.id}:start", f"{info.id}:stop:shutdown"]
    with pytest.raises(ChildNotFound):
        rt.terminate_child("root/pool", info.id)


def test_sofo_restart_and_delete_child_are_not_supported(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("permanent")]))
    info = rt.start_child("root/pool", {})
    with pytest.raises(NotSupported):
        rt.restart_child("root/pool", info.id)
    rt.terminate_child("root/pool", info.id)
    with pytest.raises(NotSupported):
        rt.delete_child("root/pool", info.id)


def test_sofo_temporary_children_are_not_restarted(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("temporary")]))
    doomed = rt.start_child("root/pool", {})
    kept = rt.start_child("root/pool", {})
    seq0 = last_seq(rt)
    crash(rt, f"root/pool/{doomed.id}")
    exited = rt.wait_event("child_exited", child_id=doomed.id, supervisor="root/pool", after=seq0)
    assert exited.reason == BOOM
    assert ids(rt, "root/pool") == [kept.id]
    assert [e.event for e in events_after(rt, seq0)] == ["child_exited"]


def test_sofo_transient_children_exiting_normally_are_removed(start_tree: Any) -> None:
    rt = start_tree(sup(children=[pool("transient")]))
    info = rt.start_child("root/pool", {})
    seq0 = last_seq(rt)
    rt.ask(f"root/pool/{info.id}", StopMe(reason="normal"))
    rt.wait_event("child_exited", child_id=info.id, after=seq0)
    assert ids(rt, "root/pool") == []


def test_sofo_permanent_children_are_restarted_on_crash(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(children=[pool("permanent", journal=str(journal))]))
    info = rt.start_child("root/pool", {"x": 1})
    seq0 = last_seq(rt)
    crash(rt, f"root/pool/{info.id}")
    rt.wait_event("child_restarted", child_id=info.id, supervisor="root/pool", after=seq0)
    listed = rt.which_children("root/pool")
    assert [(c.id, c.status, c.restarts) for c in listed] == [(info.id, "running", 1)]
    reply = rt.ask(f"root/pool/{info.id}", GetArgs())
    assert isinstance(reply, Args) and reply.args == {"journal": str(journal), "x": 1}
    assert lines(journal) == [f"{info.id}:start", f"{info.id}:start"]


def test_sofo_shutdown_stops_all_its_children(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(children=[echo("a"), pool("permanent", journal=str(journal))]))
    started = [rt.start_child("root/pool", {}).id for _ in range(3)]
    seq0 = last_seq(rt)

    rt.terminate_child("root", "pool")

    stops = [line for line in lines(journal) if ":stop:" in line]
    assert sorted(stops) == sorted(f"{cid}:stop:shutdown" for cid in started)
    terminated = [e for e in events_after(rt, seq0) if e.supervisor == "root/pool"]
    assert sorted((e.event, e.child_id, e.reason) for e in terminated) == sorted(
        [("child_terminated", cid, "shutdown") for cid in started]
        + [("supervisor_shutdown", None, "shutdown")]
    )
    # Restarted from its spec, the pool has no children.
    rt.restart_child("root", "pool")
    assert ids(rt, "root/pool") == []


def test_sofo_children_stop_on_runtime_shutdown(start_tree: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rt = start_tree(sup(children=[pool("temporary", journal=str(journal))]))
    started = [rt.start_child("root/pool", {}).id for _ in range(3)]
    rt.shutdown()
    stops = sorted(line for line in lines(journal) if ":stop:" in line)
    assert stops == sorted(f"{cid}:stop:shutdown" for cid in started)
