"""Malformed input proven harmless: Hypothesis draws hostile byte streams (random bytes, bad
length prefixes, truncated frames, valid tags over garbage, pickles of the wrong shape or that
would run code) and a raw socket sends each to every listening port of one live
multiprocTCPBase tree; afterwards every process is alive, answers, and nothing ran."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import Runtime
from actors.core.keyring import read_key_file
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.integration._sockets import _listening, _tree_pids
from tests.integration._workers import Ping, Pong
from tests.strategies import transport_frames

pytestmark = pytest.mark.integration

CHILDREN = ("a", "b")
_FUZZ_KEY: list[bytes] = []


@pytest.fixture(scope="module")
def fuzzed_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, list]]:
    state = tmp_path_factory.mktemp("fuzz") / "state"
    topology = Topology(
        system=SystemConfig(base="multiprocTCPBase", state_dir=str(state)),
        root=SupervisorSpec(
            id="root",
            children=[
                ChildSpec(id=name, start="tests.integration._workers:Echo") for name in CHILDREN
            ],
        ),
    )
    before = _tree_pids()
    with Runtime.start(topology) as rt:
        _answer(rt)
        assert rt.secret_file is not None
        _FUZZ_KEY[:] = read_key_file(rt.secret_file)[:1]
        yield rt, _listening(_tree_pids() - before)


def _answer(rt: Runtime) -> None:
    for name in CHILDREN:
        reply = rt.ask(f"root/{name}", Ping(token=name), timeout=10)
        assert isinstance(reply, Pong)


def _hit(address: tuple[str, int], data: bytes) -> None:
    """Send ``data`` on a new connection and read what comes back until the peer closes or
    0.2 s pass (a truncated frame leaves the receiver waiting: it must not wedge others)."""
    with socket.create_connection(("127.0.0.1", address[1]), timeout=0.2) as conn:
        conn.sendall(data)
        try:
            while conn.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_bytes_on_every_port_leave_the_tree_alive_and_answering(
    fuzzed_tree: tuple[Runtime, list], tmp_path: Path, data: st.DataObject
) -> None:
    rt, sockets = fuzzed_tree
    pids = _tree_pids()
    marker = tmp_path / "ran"
    payload = data.draw(transport_frames(_FUZZ_KEY[0], f"touch {marker}"), label="payload")

    for address in sockets:
        _hit(address, payload)

    assert all(psutil.pid_exists(pid) for pid in pids)
    _answer(rt)
    assert not marker.exists()


def test_slow_half_frames_held_open_do_not_wedge_the_tree(
    fuzzed_tree: tuple[Runtime, list],
) -> None:
    """A slowloris: connections that send half a frame and hold it open."""
    rt, sockets = fuzzed_tree
    held = []
    try:
        for address in sockets:
            conn = socket.create_connection(("127.0.0.1", address[1]), timeout=1)
            conn.sendall(b"5000>" + b"x" * 100)
            held.append(conn)

        _answer(rt)

        assert [c.status for c in rt.which_children("root")] == ["running"] * len(CHILDREN)
    finally:
        for conn in held:
            conn.close()
