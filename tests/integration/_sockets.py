"""Raw sockets against a tree's listening ports: frames in Thespian's framing, the guarded
peer's acknowledgements, and the tree's processes (shared by the transport guard's tests)."""

from __future__ import annotations

import os
import pickle
import socket
from typing import Any

import psutil

from actors.core.keyring import tag

ACK, ACK_ERROR = "ACK", "ACK+DATAERR"


class _RunsCommand:
    """A pickle that runs a shell command when it is loaded (what an attacker sends)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _frame(body: bytes) -> bytes:
    return b"%d>" % len(body) + body


def _tree_pids() -> set[int]:
    """This test process's admins and actor processes (they inherit its command line)."""
    me = psutil.Process()
    mine = me.cmdline()
    return {
        proc.pid
        for proc in psutil.process_iter(["cmdline", "status"])
        if proc.pid != me.pid
        and proc.info["status"] != psutil.STATUS_ZOMBIE
        and proc.info["cmdline"] == mine
    }


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    return [address for address, _pid in _listening_by_pid(pids)]


def _listening_by_pid(pids: set[int]) -> list[tuple[tuple[str, int], int]]:
    return sorted(
        ((conn.laddr.ip, conn.laddr.port), conn.pid)
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    )


def _complete(answer: bytes) -> bool:
    size, mark, rest = answer.partition(b">")
    return bool(mark) and size.isdigit() and len(rest) >= int(size)


def _send(address: tuple[str, int], data: bytes, *, wait: float = 2.0) -> bytes:
    """Send ``data`` on a new connection; return the peer's answer (one frame), or what it sent
    before closing the connection or ``wait`` seconds passed."""
    host = "127.0.0.1" if address[0] in ("0.0.0.0", "") else address[0]  # noqa: S104
    with socket.create_connection((host, address[1]), timeout=wait) as conn:
        conn.sendall(data)
        answer = b""
        try:
            while not _complete(answer) and (chunk := conn.recv(65536)):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def _acknowledgement(answer: bytes, *keys: bytes) -> str:
    """The guarded peer's tagged acknowledgement: its tag is checked (under one of ``keys``),
    then its text returned."""
    size, _, rest = answer.partition(b">")
    assert int(size) <= len(rest), answer
    rest = rest[: int(size)]  # the peer may send a frame of its own after the acknowledgement
    given, body = rest[:32], rest[32:]
    assert given in {tag(key, body) for key in keys}
    text = pickle.loads(body)  # noqa: S301 - the test's own peer
    assert text in (ACK, ACK_ERROR)
    return str(text)
