"""Hosts for the cluster tests: members started with `understudy join` on loopback addresses
(127.0.0.x: several ActorSystems in one network namespace), found and killed by address."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.integration._netns import Netns


@dataclass
class Member:
    """One joined host: the `understudy join` process and the address it binds."""

    name: str
    listen: str
    process: subprocess.Popen[bytes]
    ns: Netns | None = None

    def pids(self) -> set[int]:
        """Every process of this host: those in its namespace, else the join command and
        whatever binds its address."""
        if self.ns is not None:
            return self.ns.pids() | {self.process.pid}
        found = {self.process.pid}
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.ip == self.listen and conn.pid:
                found.add(conn.pid)
        return found

    def kill(self) -> None:
        """SIGKILL every process of the host (a host that dies at once)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def leave(self) -> None:
        """Ask the member to leave (SIGTERM), and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def reap(self) -> None:
        """Make sure nothing of the host is left."""
        if self.process.poll() is None:
            self.leave()
        procs = []
        for pid in self.pids() - {self.process.pid}:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        _gone, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def join(
    leader_port: int,
    name: str,
    listen: str,
    state_dir: Path,
    capabilities: dict[str, str] | None = None,
    *,
    leader: str = "127.0.0.1",
    ns: Netns | None = None,
) -> Member:
    """Start `understudy join` for a host called ``name`` binding ``listen`` (inside the
    namespace ``ns`` when given)."""
    argv = [
        sys.executable,
        "-m",
        "actors.cli",
        "join",
        f"{leader}:{leader_port}",
        "--name",
        name,
        "--listen",
        listen,
        "--state-dir",
        str(state_dir),
        "--secret-file",
        str(state_dir / "secret"),
    ]
    for key, value in (capabilities or {}).items():
        argv += ["--capability", f"{key}={value}"]
    if ns is not None:
        argv = ns.command(argv)
    return Member(name, listen, subprocess.Popen(argv), ns)
