"""Member hosts for an experiment, on this machine: each runs ``understudy join`` against the
leader, and host faults act on them.

``netns``: each host in a Linux network namespace of its own, joined to the leader by a veth
pair on a bridge (the leader binds the bridge's address): a host killed, paused or cut off is
a real host lost to the network (needs root and ``ip``; ``tc`` for one-way partitions).
``loopback``: hosts bind 127.0.0.x addresses in this namespace (no partitions). Everything the
lab made (processes, namespaces, links) is removed by ``stop``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import psutil
import structlog

from actors.core.runtime import Runtime
from protocols.errors import UnderstudyError
from protocols.experiment import HostSpec

__all__ = ["HostLab", "HostLabError", "lab_unavailable"]

log = structlog.get_logger(__name__)

Network = Literal["netns", "loopback"]
_JOIN_WAIT = 30.0
_LEAVE_WAIT = 15.0


class HostLabError(UnderstudyError):
    """The member hosts could not be set up or did not join."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: S603, S607


def lab_unavailable(network: str) -> str | None:
    """Why hosts in ``network`` mode cannot run here (None: they can)."""
    if network == "loopback":
        return None
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"usx-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"cannot create a network namespace ({exc}; {detail.decode().strip()})"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", probe)
    return None


@dataclass
class _Host:
    spec: HostSpec
    address: str
    netns: str | None = None
    outer: str | None = None
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    cut: bool = False
    one_way: bool = False


class HostLab:
    """Member hosts for an experiment (see the module doc)."""

    def __init__(
        self, hosts: Sequence[HostSpec], *, network: Network = "netns", state_dir: Path
    ) -> None:
        self._network = network
        self._state = state_dir
        self._tag = secrets.token_hex(3)
        self._subnet = 1 + secrets.randbelow(250)
        self._bridge: str | None = None
        self._hosts: dict[str, _Host] = {}
        for index, spec in enumerate(hosts, start=2):
            prefix = f"10.215.{self._subnet}" if network == "netns" else "127.0.0"
            address = f"{prefix}.{index}"
            self._hosts[spec.name] = _Host(spec, address)
        self._prepared = False

    def __enter__(self) -> HostLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def names(self) -> list[str]:
        """The hosts' names, sorted."""
        return sorted(self._hosts)

    def leader_listen(self) -> str:
        """The address the leader's ``system.listen`` must be."""
        return f"10.215.{self._subnet}.1" if self._network == "netns" else "127.0.0.1"

    def prepare(self) -> None:
        """Make the bridge and the namespaces (netns), before the leader starts."""
        if self._prepared:
            return
        self._prepared = True
        if self._network != "netns":
            return
        bridge = f"usxb{self._tag}"
        try:
            _ip("link", "add", bridge, "type", "bridge")
            self._bridge = bridge
            _ip("addr", "add", f"{self.leader_listen()}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for index, host in enumerate(self._hosts.values()):
                name = f"usx-{self._tag}-{index}"
                outer, inner = f"usx{self._tag}{index}a", f"usx{self._tag}{index}b"
                _ip("netns", "add", name)
                host.netns = name
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                host.outer = outer
                _ip("link", "set", inner, "netns", name)
                _ip("link", "set", outer, "master", bridge)
                _ip("link", "set", outer, "up")
                _ip("-n", name, "addr", "add", f"{host.address}/24", "dev", inner)
                _ip("-n", name, "link", "set", inner, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.stop()
            detail = (exc.stderr or b"").decode().strip()
            msg = f"cannot make the hosts' network: {' '.join(exc.cmd)}: {detail}"
            raise HostLabError(msg) from None

    def join_all(
        self,
        leader_port: int,
        secret_file: Path,
        *,
        timeout: float = _JOIN_WAIT,
        runtime: Runtime | None = None,
    ) -> None:
        """Start every host's ``understudy join``; with ``runtime``, wait until each is up.

        Raises:
            HostLabError: a host was not up within ``timeout`` seconds.
        """
        self.prepare()
        for host in self._hosts.values():
            self._join(host, leader_port, secret_file)
        if runtime is None:
            return
        for name in self._hosts:
            try:
                runtime.wait_event("host_up", child_id=name, timeout=timeout)
            except UnderstudyError as exc:
                msg = f"host {name!r} did not join within {timeout} s ({exc})"
                raise HostLabError(msg) from None

    def _join(self, host: _Host, leader_port: int, secret_file: Path) -> None:
        state = self._state / host.spec.name
        state.mkdir(parents=True, exist_ok=True)
        secret = state / "secret"
        secret.write_bytes(secret_file.read_bytes())
        secret.chmod(0o600)
        argv = [
            sys.executable,
            "-m",
            "actors.cli",
            "join",
            f"{self.leader_listen()}:{leader_port}",
            "--name",
            host.spec.name,
            "--listen",
            host.address,
            "--state-dir",
            str(state),
            "--secret-file",
            str(secret),
        ]
        for key, value in host.spec.capabilities.items():
            argv += ["--capability", f"{key}={value}"]
        if host.netns is not None:
            argv = ["ip", "netns", "exec", host.netns, *argv]
        log_file = (state / "join.log").open("ab")
        host.process = subprocess.Popen(argv, stdout=log_file, stderr=log_file)  # noqa: S603
        log_file.close()
        log.info("host_joining", host=host.spec.name, address=host.address)

    def host_pids(self, name: str) -> set[int]:
        """Every process of the host ``name`` (its namespace's, or its join command's and
        whatever binds its address)."""
        host = self._hosts[name]
        found: set[int] = set()
        if host.process is not None and host.process.poll() is None:
            found.add(host.process.pid)
        if host.netns is not None:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                out = subprocess.run(  # noqa: S603
                    ["ip", "netns", "pids", host.netns],  # noqa: S607
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                found |= {int(pid) for pid in out.split()}
            return found
        with contextlib.suppress(psutil.Error):
            for conn in psutil.net_connections("tcp"):
                if conn.laddr and conn.laddr.ip == host.address and conn.pid:
                    found.add(conn.pid)
        if host.process is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(host.process.pid)
                found |= {p.pid for p in root.children(recursive=True)}
        return found

    def _signal(self, name: str, sig: signal.Signals) -> None:
        for pid in self.host_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_host(self, name: str) -> None:
        """SIGKILL every process of the host (a host that dies at once)."""
        self._signal(name, signal.SIGKILL)
        host = self._hosts[name]
        if host.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.process.wait(timeout=10)
        log.warning("host_killed", host=name)

    def pause_host(self, name: str) -> None:
        """SIGSTOP every process of the host."""
        self._hosts[name].paused = True
        self._signal(name, signal.SIGSTOP)
        log.warning("host_paused", host=name)

    def resume_host(self, name: str) -> None:
        """SIGCONT every process of the host."""
        self._hosts[name].paused = False
        self._signal(name, signal.SIGCONT)
        log.info("host_resumed", host=name)

    def partition(
        self, names: Sequence[str], *, mode: Literal["isolate", "one_way"] = "isolate"
    ) -> None:
        """Cut the hosts off: ``isolate`` takes their links down; ``one_way`` drops what the
        leader's side sends them (``tc`` netem on the bridge side of their link).

        Raises:
            HostLabError: hosts on loopback share one network, or ``tc`` is missing.
        """
        for name in names:
            host = self._hosts[name]
            if host.outer is None:
                msg = "a partition needs hosts in network namespaces (network: netns)"
                raise HostLabError(msg)
            if mode == "isolate":
                _ip("link", "set", host.outer, "down")
                host.cut = True
            else:
                if shutil.which("tc") is None:
                    msg = "a one-way partition needs `tc` (iproute2)"
                    raise HostLabError(msg)
                subprocess.run(  # noqa: S603
                    ["tc", "qdisc", "add", "dev", host.outer, "root", "netem", "loss", "100%"],  # noqa: S607
                    check=True,
                    capture_output=True,
                )
                host.one_way = True
            log.warning("host_partitioned", host=name, mode=mode)

    def split_halves(self) -> tuple[list[str], list[str]]:
        """The hosts in two halves, by name: the first is the one a ``halves`` partition
        cuts off (the leader stays with the second)."""
        names = self.names()
        middle = max(1, len(names) // 2)
        return names[:middle], names[middle:]

    def heal(self, name: str | None = None) -> None:
        """Undo partitions and pauses (of every host when ``name`` is None)."""
        for host in self._hosts.values():
            if name is not None and host.spec.name != name:
                continue
            if host.cut and host.outer is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("link", "set", host.outer, "up")
                host.cut = False
            if host.one_way and host.outer is not None:
                with contextlib.suppress(subprocess.CalledProcessError, OSError):
                    subprocess.run(  # noqa: S603
                        ["tc", "qdisc", "del", "dev", host.outer, "root"],  # noqa: S607
                        check=True,
                        capture_output=True,
                    )
                host.one_way = False
            if host.paused:
                self.resume_host(host.spec.name)

    def stop(self) -> None:
        """Stop every member (resumed, then asked to leave, then killed if it lingers) and
        remove the namespaces, links and bridge."""
        self.heal()
        for host in self._hosts.values():
            if host.process is not None and host.process.poll() is None:
                host.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _LEAVE_WAIT
        for host in self._hosts.values():
            if host.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name in self._hosts:
            self._signal(name, signal.SIGKILL)
        for host in self._hosts.values():
            if host.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.process.wait(timeout=5)
            if host.outer is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("link", "del", host.outer)
                host.outer = None
            if host.netns is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("netns", "del", host.netns)
                host.netns = None
        if self._bridge is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", self._bridge)
            self._bridge = None
