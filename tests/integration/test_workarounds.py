"""Each Thespian defect Understudy works around (actors/core/workarounds.py): the defect, then the
fix."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import psutil
import pytest
from thespian.actors import Actor, ActorAddress, ActorSystem
from thespian.system import transport as thespian_transport

from actors import Runtime
from actors.core.runtime import free_port
from actors.core.transport_guard import uninstalled
from actors.core.workarounds import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    ask_correlated,
    presigned,
    tune_transport_backoff,
)
from protocols import codec
from protocols.common import Ok
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.integration._workers import Count, Counted, Crash

pytestmark = pytest.mark.integration


@pytest.fixture
def tcp_system() -> Iterator[ActorSystem]:
    with uninstalled():  # raw Thespian, as the defects are measured on it
        system = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()}, transientUnique=True)
        yield system
        system.shutdown()


def _spawn(system: ActorSystem, how: str) -> tuple[int, int]:
    parent = system.createActor("tests.integration._raw_actors.RawParent")
    answer = system.ask(parent, how, 10)
    assert isinstance(answer, tuple), answer
    return answer


def test_thespian_leaves_an_orphan_alive_when_its_parent_is_killed(tcp_system: ActorSystem) -> None:
    parent_pid, leaf_pid = _spawn(tcp_system, "spawn")

    os.kill(parent_pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs([psutil.Process(leaf_pid)], timeout=1.0)

    assert [] == gone
    assert [leaf_pid] == [p.pid for p in alive]
    os.kill(leaf_pid, signal.SIGKILL)  # the defect: nobody else would


def test_die_with_parent_takes_the_orphan_down_with_its_parent(tcp_system: ActorSystem) -> None:
    parent_pid, leaf_pid = _spawn(tcp_system, "spawn-protected")
    leaf = psutil.Process(leaf_pid)

    os.kill(parent_pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs([leaf], timeout=10.0)

    assert [] == alive
    assert [leaf_pid] == [p.pid for p in gone]


def test_a_child_bound_at_creation_dies_with_its_parent_without_a_message(
    tcp_system: ActorSystem,
) -> None:
    """The fix for a child whose parent dies before telling it who its parent is (a spare
    worker): ``die_with_creator`` in the actor's constructor."""
    parent_pid, leaf_pid = _spawn(tcp_system, "spawn-bound")
    leaf = psutil.Process(leaf_pid)

    os.kill(parent_pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs([leaf], timeout=10.0)

    assert [] == alive
    assert [leaf_pid] == [p.pid for p in gone]


def test_thespian_redelivers_a_failing_message_and_keeps_the_actor(tcp_system: ActorSystem) -> None:
    flaky = tcp_system.createActor("tests.integration._raw_actors.RawFlaky")

    tcp_system.ask(flaky, "boom", 5)  # answered with a PoisonMessage
    calls = tcp_system.ask(flaky, "count", 5)

    assert calls is not None and calls > 1


def test_a_worker_handler_runs_once_per_message_and_the_worker_restarts() -> None:
    topology = Topology(
        system=SystemConfig(base="multiprocTCPBase"),
        root=SupervisorSpec(
            id="root",
            intensity=5,
            children=[ChildSpec(id="echo", start="tests.integration._workers:Echo")],
        ),
    )
    with Runtime.start(topology) as rt:
        assert Counted(n=1) == rt.ask("root/echo", Count())
        with pytest.raises(Exception, match="boom"):
            rt.ask("root/echo", Crash())
        rt.wait_event("child_restarted", child_id="echo")

        assert Counted(n=1) == rt.ask("root/echo", Count())
        assert 1 == sum(1 for e in rt.events() if e.event == "child_exited")


def test_bare_ask_returns_a_stale_reply_but_ask_correlated_skips_it() -> None:
    system = ActorSystem("simpleSystemBase", transientUnique=True)
    try:
        actor = system.createActor("tests.integration._raw_actors.RawDoubleReply")
        first = codec.decode_envelope(system.ask(actor, codec.encode(Ok(), message_id=100), 5))
        assert 99 == first.correlation_id  # the defect: whatever arrives next

        result = ask_correlated(
            system,
            actor,
            codec.encode(Ok(), message_id=200),
            200,
            5.0,
            max_size=codec.DEFAULT_MAX_SIZE,
        )

        assert result is not None
        assert 200 == result[0].correlation_id
    finally:
        system.shutdown()


def test_a_killed_owner_takes_its_actor_system_down_in_order(tmp_path: Path) -> None:
    """SIGKILL the program that started a runtime: the guardian notices, stops the tree in
    order (on_stop runs) and then the admin; no process is left."""
    journal = tmp_path / "journal"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    owner = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._owner", str(tmp_path), str(journal)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        actors = [psutil.Process(p) for p in pids]
    finally:
        owner.kill()
        owner.wait()

    gone, alive = psutil.wait_procs(actors, timeout=15)

    assert [] == alive
    assert len(pids) == len(gone)
    assert "echo:stop:shutdown" in journal.read_text()


# --- 5. The transport's backoff ---------------------------------------------------------------


def test_raw_thespian_backs_off_from_34_ms_up_to_seconds() -> None:
    """The defect, read off Thespian itself: the pauses a refused transmit goes through."""
    with _backoff_bounds(_RAW_MIN, _RAW_MAX):
        pauses = _pauses(30)

    assert timedelta(milliseconds=30) < pauses[0]
    assert timedelta(seconds=1) < sum(pauses[:6], timedelta())
    assert timedelta(seconds=7) < max(pauses)


def test_tuned_backoff_starts_near_1_ms_and_stays_under_a_quarter_second() -> None:
    with _backoff_bounds(_RAW_MIN, _RAW_MAX):
        raw = _pauses(6)
        tune_transport_backoff()
        pauses = _pauses(30)

    assert BACKOFF_MIN < pauses[0] < 2 * BACKOFF_MIN  # Thespian multiplies by 1.7 at once
    assert BACKOFF_MAX == max(pauses)
    assert sum(pauses[:6], timedelta()) * 10 < sum(raw, timedelta())


_RAW_MIN, _RAW_MAX = timedelta(milliseconds=20), timedelta(seconds=7, milliseconds=329)


def _pauses(count: int) -> list[timedelta]:
    pauses, pause = [], timedelta()
    for _ in range(count):
        pause = thespian_transport.backoffDelay(pause)
        pauses.append(pause)
    return pauses


@contextlib.contextmanager
def _backoff_bounds(low: timedelta, high: timedelta) -> Iterator[None]:
    saved = thespian_transport.MIN_BACKOFF_DELAY, thespian_transport.MAX_BACKOFF_DELAY
    thespian_transport.MIN_BACKOFF_DELAY, thespian_transport.MAX_BACKOFF_DELAY = low, high
    try:
        yield
    finally:
        thespian_transport.MIN_BACKOFF_DELAY, thespian_transport.MAX_BACKOFF_DELAY = saved


# --- 8. Every createActor computes the class's __init__ signature twice ------------------------


class _Plain(Actor):  # type: ignore[misc]  # thespian is untyped
    """Answers any message with the capabilities Thespian passed to its constructor."""

    def __init__(self, capabilities: dict[str, Any]) -> None:
        super().__init__()
        self.seen = capabilities

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:  # noqa: N802
        self.send(sender, self.seen.get("probe"))


@presigned
class _Presigned(_Plain):
    def __init__(self, capabilities: dict[str, Any]) -> None:
        super().__init__(capabilities)


@pytest.mark.parametrize(("actor_class", "computed"), [(_Plain, 2), (_Presigned, 0)])
def test_create_actor_computes_the_init_signature_twice_unless_presigned(
    actor_class: type, computed: int
) -> None:
    system = ActorSystem("simpleSystemBase", {"probe": "here"}, transientUnique=True)
    try:
        with patch.object(
            inspect, "_signature_from_function", wraps=inspect._signature_from_function
        ) as spy:
            actor = system.createActor(actor_class)
        answer = system.ask(actor, "capabilities?", 5)
    finally:
        system.shutdown()

    assert computed == spy.call_count
    assert "here" == answer  # the constructor still gets the arguments it names


_ADMIN_MASKS = """
import signal, sys
import psutil
from thespian.actors import Actor, ActorAddress, ActorSystem
from actors.core.runtime import free_port
from actors.core.transport_guard import uninstalled
from actors.core.workarounds import detached_signals

def owners_stop(signum, frame):
    raise RuntimeError("the owner's stop")

signal.signal(signal.SIGINT, owners_stop)
port = free_port()
with uninstalled():
    if sys.argv[1] == "detached":
        with detached_signals():
            system = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
    else:
        system = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
try:
    (admin,) = {
        c.pid for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }
    fields = dict(line.split(":\t", 1) for line in open(f"/proc/{admin}/status"))
    print(int(fields["SigIgn"], 16), int(fields["SigCgt"], 16))
finally:
    system.shutdown()
"""


@pytest.mark.parametrize("how", ["raw", "detached"])
def test_the_admin_keeps_the_owners_sigint_handler_unless_detached(how: str) -> None:
    """Raw Thespian's admin daemon keeps the handler its owner had for SIGINT (``understudy
    up`` raises its stop there), so an interrupt runs it inside the admin; started through
    ``open_system`` (``detached_signals``) the admin ignores SIGINT. Each in a process of its
    own, which installs the owner's handler first."""
    done = subprocess.run(
        [sys.executable, "-c", _ADMIN_MASKS, how],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    ignored, caught = (int(x) for x in done.stdout.split()[-2:])
    bit = 1 << (signal.SIGINT - 1)
    if how == "detached":
        assert ignored & bit
        assert not caught & bit
    else:  # the defect: a Python handler (the owner's) catches SIGINT in the admin
        assert caught & bit
        assert not ignored & bit
