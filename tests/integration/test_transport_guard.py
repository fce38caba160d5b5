"""The transport guard (actors/core/transport_guard.py): each defect on raw Thespian, then the fix.

Every test sends real bytes to real listening sockets of a multiprocTCPBase tree.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from thespian.actors import ActorAddress, ActorSystem

from actors import Runtime
from actors.core.keyring import create_key_file, read_key_file, tag
from actors.core.runtime import free_port
from actors.core.transport_guard import uninstalled
from protocols.topology import ChildSpec, ClusterConfig, SupervisorSpec, SystemConfig, Topology
from tests.integration._sockets import (
    ACK,
    ACK_ERROR,
    _acknowledgement,
    _frame,
    _listening,
    _listening_by_pid,
    _RunsCommand,
    _send,
    _tree_pids,
)
from tests.integration._workers import Ping, Pong

pytestmark = pytest.mark.integration

ECHO = "tests.integration._workers:Echo"
CHILDREN = ("a", "b", "c")


def _topology(state_dir: Path, secret: Path | None = None) -> Topology:
    return Topology(
        system=SystemConfig(
            base="multiprocTCPBase",
            state_dir=str(state_dir),
            cluster=ClusterConfig(secret_file=str(secret) if secret else None),
        ),
        root=SupervisorSpec(
            id="root", children=[ChildSpec(id=name, start=ECHO) for name in CHILDREN]
        ),
    )


def _all_answer(rt: Runtime) -> None:
    for name in CHILDREN:
        reply = rt.ask(f"root/{name}", Ping(token=name), timeout=10)
        assert isinstance(reply, Pong)
        assert reply.token == name


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Runtime, list[tuple[str, int]], bytes]]:
    """A guarded tree of three children: the runtime, its listening sockets, its key."""
    before = _tree_pids()
    with Runtime.start(_topology(tmp_path / "state")) as rt:
        _all_answer(rt)
        sockets = _listening(_tree_pids() - before)
        assert rt.secret_file is not None
        yield rt, sockets, read_key_file(rt.secret_file)[0]


@pytest.fixture
def raw_sockets() -> Iterator[list[tuple[str, int]]]:
    """A raw Thespian system with one actor: its listening sockets."""
    before = _tree_pids()
    with uninstalled():
        system = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()}, transientUnique=True)
        try:
            echo = system.createActor("bench._raw.RawEcho")
            assert system.ask(echo, "hello", 10) == "hello"
            yield _listening(_tree_pids() - before)
        finally:
            system.shutdown()


# --- 1. Bind where told ---------------------------------------------------------------------


def test_raw_thespian_listens_on_every_interface(raw_sockets: list[tuple[str, int]]) -> None:
    assert raw_sockets
    assert "0.0.0.0" in {ip for ip, _port in raw_sockets}  # noqa: S104 - the defect


def test_every_socket_of_the_tree_binds_the_listen_address(
    tree: tuple[Runtime, list[tuple[str, int]], bytes],
) -> None:
    _rt, sockets, _key = tree
    # the admin, the logger's peers, the guardian, the root and three children at least
    assert len(sockets) >= len(CHILDREN) + 2
    assert {ip for ip, _port in sockets} == {"127.0.0.1"}


# --- 2. A crafted pickle executes nothing ---------------------------------------------------


def test_raw_thespian_runs_a_crafted_pickle(
    raw_sockets: list[tuple[str, int]], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    payload = _frame(pickle.dumps(_RunsCommand(f"touch {marker}")))
    for address in raw_sockets:
        _send(address, payload)
    assert marker.exists()  # the defect: the receiver ran the attacker's command


def test_a_crafted_pickle_sent_to_every_port_runs_nothing(
    tree: tuple[Runtime, list[tuple[str, int]], bytes], tmp_path: Path
) -> None:
    rt, sockets, key = tree
    marker = tmp_path / "ran"
    evil = pickle.dumps(_RunsCommand(f"touch {marker}"))
    by_pid = _listening_by_pid(_tree_pids())
    assert {address for address, _pid in by_pid} >= set(sockets)
    # untagged (an outsider), and tagged with the real key (an insider: the unpickler refuses)
    for payload in (_frame(evil), _frame(tag(key, evil) + evil)):
        refused_by: set[int] = set()
        for address, pid in by_pid:
            answer = _send(address, payload, wait=1.0)
            # A process may hold a second listening socket inherited from its parent at fork,
            # which nobody reads: it answers nothing (and runs nothing).
            if answer:
                assert _acknowledgement(answer, key) == ACK_ERROR
                refused_by.add(pid)
        assert refused_by == {pid for _address, pid in by_pid}
    assert not marker.exists()
    _all_answer(rt)


def test_a_frame_under_the_right_key_is_acknowledged(
    tree: tuple[Runtime, list[tuple[str, int]], bytes],
) -> None:
    rt, _sockets, key = tree
    assert rt.admin_port is not None
    body = pickle.dumps((ActorAddress(None), "not an Understudy frame"))
    answer = _send(("127.0.0.1", rt.admin_port), _frame(tag(key, body) + body))
    assert _acknowledgement(answer, key) == ACK
    _all_answer(rt)


# --- 3. Malformed frames are dropped; the receiver lives -------------------------------------


def _malformed(key: bytes) -> dict[str, bytes]:
    wrong_shape = pickle.dumps(("not an address", 42))
    garbage = os.urandom(200)
    return {
        "wrong tuple shape, tagged": _frame(tag(key, wrong_shape) + wrong_shape),
        "valid tag over garbage": _frame(tag(key, garbage) + garbage),
        "random bytes": garbage,
        "no length prefix": b"x" * 100,
        "negative length": b"-5>" + b"x" * 10,
        "huge length": b"99999999999>" + b"x" * 10,
        "short": _frame(b"abc"),
    }


def _incomplete(key: bytes) -> dict[str, bytes]:
    """Frames the receiver keeps waiting for: nothing comes back, the sender gives up."""
    body = pickle.dumps(("not an address", 42))
    return {"truncated": _frame(tag(key, body) + body)[:20], "empty": b""}


def test_malformed_frames_leave_every_process_alive_and_answering(
    tree: tuple[Runtime, list[tuple[str, int]], bytes],
) -> None:
    rt, sockets, key = tree
    pids = _tree_pids()
    for address in sockets:
        for name, payload in _malformed(key).items():
            answer = _send(address, payload, wait=1.0)
            if not answer:
                break  # a listening socket nobody reads (see above): it takes nothing in
            assert _acknowledgement(answer, key) == ACK_ERROR, name
        for name, payload in _incomplete(key).items():
            assert _send(address, payload, wait=0.2) == b"", name
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert _tree_pids() >= pids
    _all_answer(rt)
    assert [c.status for c in rt.which_children("root")] == ["running"] * len(CHILDREN)


# --- Rotation -------------------------------------------------------------------------------


def _write_keys(path: Path, keys: list[bytes]) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text("".join(k.hex() + "\n" for k in keys))
    fresh.chmod(0o600)
    fresh.replace(path)


def _current_key_of(address: tuple[str, int], keys: list[bytes]) -> bytes | None:
    """The key a process tags with now (read off its acknowledgement of an empty frame)."""
    answer = _send(address, _frame(b"x" * 40), wait=1.0)
    if not answer:
        return None
    size, _, rest = answer.partition(b">")
    rest = rest[: int(size)]
    return next((key for key in keys if tag(key, rest[32:]) == rest[:32]), None)


def _wait_until_all_tag_with(sockets: list[tuple[str, int]], key: bytes, keys: list[bytes]) -> None:
    deadline = time.monotonic() + 10
    pending = set(sockets)
    while pending and time.monotonic() < deadline:
        pending = {a for a in pending if _current_key_of(a, keys) not in (key, None)}
    assert not pending, "some processes never picked up the rotated secret"


def test_a_rotated_secret_keeps_the_tree_running(tmp_path: Path) -> None:
    secret = tmp_path / "cluster.key"
    create_key_file(secret)
    old = read_key_file(secret)[0]
    new = os.urandom(32)
    before = _tree_pids()
    with Runtime.start(_topology(tmp_path / "state", secret)) as rt:
        _all_answer(rt)
        sockets = [a for a in _listening(_tree_pids() - before) if _current_key_of(a, [old])]
        body = pickle.dumps((ActorAddress(None), "hello"))

        # step 1: the new key first, the old one still accepted; every process switches
        _write_keys(secret, [new, old])
        _all_answer(rt)
        answer = _send(sockets[0], _frame(tag(old, body) + body))
        assert _acknowledgement(answer, new, old) == ACK
        _wait_until_all_tag_with(sockets, new, [new, old])
        _all_answer(rt)

        # step 2: the old key is gone; a frame under it is refused, the tree runs on
        _write_keys(secret, [new])
        _all_answer(rt)
        # a process re-reads the file within a second of its last check
        deadline = time.monotonic() + 10
        while True:
            answer = _send(sockets[0], _frame(tag(old, body) + body))
            if _acknowledgement(answer, new) == ACK_ERROR or time.monotonic() > deadline:
                break
        assert _acknowledgement(answer, new) == ACK_ERROR
        answer = _send(sockets[0], _frame(tag(new, body) + body))
        assert _acknowledgement(answer, new) == ACK
        assert [c.status for c in rt.which_children("root")] == ["running"] * len(CHILDREN)
