"""Member hosts for an experiment, on this machine: each runs ``understudy join`` against the
leader (as a subprocess, ``python -m actors.cli join``), and host faults act on them.

Networks
    netns      each host in a Linux network namespace of its own, its veth pair on a bridge in
               this namespace; the leader binds the bridge's address (10.215.<free N>.1), the
               hosts 10.215.N.2... A killed, paused or cut-off host is a real host lost to the
               network. Needs root and ``ip`` (iproute2).
    loopback   hosts bind 127.215.<N>.2... in this namespace, the leader 127.0.0.1; kill and
               pause work, partitions cannot (one network stack, no link to cut).

Faults
    kill_host     SIGKILL every process of the host (its namespace's, or its join command's
                  process tree and whatever binds its address)
    pause_host    SIGSTOP them (``resume_host``: SIGCONT)
    partition     ``isolate``: the host's link to the bridge down, nothing passes either way;
                  ``one_way``: the leader's packets to the host go to a MAC nobody has (a
                  permanent neighbour entry on the bridge), what the host sends still arrives
    heal          undoes partitions and pauses

Everything the lab made (processes, namespaces, links, the bridge) is removed by ``stop``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
PartitionMode = Literal["isolate", "one_way"]

_JOIN_WAIT = 30.0
_LEAVE_WAIT = 15.0
_KILL_WAIT = 10.0
_POLL = 0.05
_NOWHERE = "02:75:73:78:00:00"  # a locally administered MAC no interface has
_NETS = ("netns", "loopback")


class HostLabError(UnderstudyError):
    """The member hosts could not be set up, did not join, or a fault cannot be made."""


def _run(*argv: str) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True)  # noqa: S603
    return done.stdout


def _ip(*args: str) -> None:
    _run("ip", *args)


def _quiet(*args: str) -> None:
    """``ip ARGS``, ignoring failure (cleanup of what may already be gone)."""
    with contextlib.suppress(subprocess.CalledProcessError, OSError):
        _ip(*args)


def lab_unavailable(network: str) -> str | None:
    """Why hosts in ``network`` mode cannot run here (None: they can)."""
    if network == "loopback":
        return None
    if network != "netns":
        return f"unknown network {network!r} (one of {', '.join(_NETS)})"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"usx-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (getattr(exc, "stderr", "") or "").strip()
        return f"cannot create a network namespace (root needed): {exc} {detail}".strip()
    _quiet("netns", "del", probe)
    return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class _Host:
    spec: HostSpec
    index: int
    address: str = ""
    netns: str | None = None
    outer: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    paused: bool = False
    cut: bool = False
    one_way: bool = False


class HostLab:
    """Member hosts for an experiment (see the module doc); a context manager that stops
    them on exit."""

    def __init__(
        self, hosts: Sequence[HostSpec], *, network: Network = "netns", state_dir: Path
    ) -> None:
        if network not in _NETS:
            msg = f"unknown network {network!r} (one of {', '.join(_NETS)})"
            raise HostLabError(msg)
        names = [spec.name for spec in hosts]
        if len(set(names)) != len(names):
            msg = f"host names must differ, got {names}"
            raise HostLabError(msg)
        self._network: Network = network
        self._state = state_dir
        self.tag = secrets.token_hex(3)
        """Part of every namespace (``usx-<tag>-<i>``) and link (``usx<tag>...``) made here."""
        self._subnet = 0
        self._bridge: str | None = None
        self._hosts = {spec.name: _Host(spec, i) for i, spec in enumerate(hosts, start=2)}
        self._leader: tuple[int, Path] | None = None
        self._prepared = False
        self._stopped = False

    def __enter__(self) -> HostLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- Setup ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The hosts' names, sorted."""
        return sorted(self._hosts)

    def address(self, name: str) -> str:
        """The address host ``name`` binds (valid after ``prepare``)."""
        return self._host(name).address

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on host ``name`` (inside its namespace, for netns)."""
        netns = self._host(name).netns
        return [*argv] if netns is None else ["ip", "netns", "exec", netns, *argv]

    def leader_listen(self) -> str:
        """The address the leader's ``system.listen`` must be (valid after ``prepare``)."""
        if self._network == "loopback":
            return "127.0.0.1"
        if not self._prepared:
            msg = "leader_listen() is known after prepare()"
            raise HostLabError(msg)
        return f"10.215.{self._subnet}.1"

    def prepare(self) -> None:
        """Pick the addresses; with ``netns``, make the bridge and a namespace per host, before
        the leader starts (it binds the bridge's address). Idempotent.

        Raises:
            HostLabError: the network could not be made (what failed, and why).
        """
        if self._stopped:
            msg = "this host lab was stopped"
            raise HostLabError(msg)
        if self._prepared:
            return
        self._subnet = self._free_subnet()
        self._prepared = True
        if self._network == "loopback":
            for host in self._hosts.values():
                host.address = f"127.215.{self._subnet}.{host.index}"
            return
        try:
            self._make_network()
        except (OSError, subprocess.CalledProcessError) as exc:
            self.stop()
            detail = (getattr(exc, "stderr", "") or "").strip()
            msg = f"cannot make the hosts' network: {exc} {detail}".strip()
            raise HostLabError(msg) from None
        log.info("host_lab_prepared", network=self._network, bridge=self._bridge, tag=self.tag)

    def _free_subnet(self) -> int:
        """A third octet no address of this namespace uses (10.215.N / 127.215.N)."""
        used: set[int] = set()
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = _run("ip", "-o", "-4", "addr", "show")
            used = {int(m) for m in re.findall(r"\b(?:10|127)\.215\.(\d+)\.", out)}
        free = [n for n in range(1, 251) if n not in used]
        if not free:
            msg = "no free 10.215.N.0/24 subnet for the hosts"
            raise HostLabError(msg)
        return free[secrets.randbelow(len(free))]

    def _make_network(self) -> None:
        bridge = f"usxb{self.tag}"
        _ip("link", "add", bridge, "type", "bridge")
        self._bridge = bridge
        _ip("addr", "add", f"{self.leader_listen()}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for number, host in enumerate(self._hosts.values()):
            host.address = f"10.215.{self._subnet}.{host.index}"
            netns = f"usx-{self.tag}-{number}"
            outer, inner = f"usx{self.tag}{number}a", f"usx{self.tag}{number}b"
            _ip("netns", "add", netns)
            host.netns = netns
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            host.outer = outer
            _ip("link", "set", inner, "netns", netns)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", inner)
            _ip("-n", netns, "link", "set", inner, "up")
            _ip("-n", netns, "link", "set", "lo", "up")

    # --- Joining -------------------------------------------------------------------------

    def join_all(
        self,
        leader_port: int,
        secret_file: Path,
        *,
        timeout: float = _JOIN_WAIT,
        runtime: Runtime | None = None,
    ) -> None:
        """Start every host's ``understudy join`` against the leader's admin port; with
        ``runtime``, wait until ``runtime.hosts()`` shows each ``up``.

        Raises:
            HostLabError: a host's join exited, or hosts were not up within ``timeout``.
        """
        self.prepare()
        self._leader = (leader_port, secret_file)
        for host in self._hosts.values():
            if host.process is None or host.process.poll() is not None:
                self._start(host)
        if runtime is not None:
            self.wait_up(runtime, self.names(), timeout=timeout)

    def rejoin(
        self, name: str, *, timeout: float = _JOIN_WAIT, runtime: Runtime | None = None
    ) -> None:
        """Start a fresh ``understudy join`` for host ``name`` (killed, or left), in the same
        namespace and address; with ``runtime``, wait until it is ``up``.

        Raises:
            HostLabError: ``join_all`` never ran, the host still runs, or it did not come up.
        """
        host = self._host(name)
        if self._leader is None:
            msg = "rejoin() needs join_all() first (the leader's port and secret)"
            raise HostLabError(msg)
        if host.process is not None and host.process.poll() is None:
            msg = f"host {name!r} still runs; kill it (or let it leave) before a rejoin"
            raise HostLabError(msg)
        self._reap(host, self.host_pids(name))
        host.seen.clear()
        self._start(host)
        if runtime is not None:
            self.wait_up(runtime, [name], timeout=timeout)

    def _start(self, host: _Host) -> None:
        assert self._leader is not None  # noqa: S101 - set by join_all
        leader_port, secret_file = self._leader
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
        argv = self.command(host.spec.name, argv)
        host.log_file = state / "join.log"
        with host.log_file.open("ab") as out:
            host.process = subprocess.Popen(argv, stdout=out, stderr=out)  # noqa: S603
        host.paused = False
        log.info("host_joining", host=host.spec.name, address=host.address, pid=host.process.pid)

    def wait_up(self, runtime: Runtime, names: Sequence[str], *, timeout: float) -> None:
        """Poll ``runtime.hosts()`` until every host of ``names`` is ``up``.

        Raises:
            HostLabError: a host's join exited, or the hosts not up after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        missing = list(names)
        while True:
            for name in missing:
                process = self._host(name).process
                if process is not None and process.poll() is not None:
                    msg = f"host {name!r}: understudy join exited ({process.returncode}); "
                    raise HostLabError(msg + self._log_tail(name))
            left = deadline - time.monotonic()
            with contextlib.suppress(UnderstudyError):
                status = {h.name: h.status for h in runtime.hosts(timeout=max(0.5, left))}
                missing = [name for name in missing if status.get(name) != "up"]
            if not missing:
                log.info("hosts_up", hosts=list(names))
                return
            if time.monotonic() >= deadline:
                msg = f"hosts not up within {timeout} s: {', '.join(missing)}"
                raise HostLabError(msg)
            time.sleep(_POLL)

    def _log_tail(self, name: str) -> str:
        path = self._host(name).log_file
        if path is None or not path.exists():
            return "no output"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return " | ".join(lines[-5:]) or "no output"

    # --- Processes -----------------------------------------------------------------------

    def _host(self, name: str) -> _Host:
        try:
            return self._hosts[name]
        except KeyError:
            msg = f"no host named {name!r} (hosts: {', '.join(self.names())})"
            raise HostLabError(msg) from None

    def host_pids(self, name: str) -> set[int]:
        """Every live process of host ``name``: its namespace's (netns), else its join
        command's process tree and whatever binds its address; also those seen before whose
        parent died (a killed join leaves its ActorSystem's processes orphaned)."""
        host = self._host(name)
        found: dict[int, psutil.Process] = {}
        if host.process is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(host.process.pid)
                found[root.pid] = root
                found.update((p.pid, p) for p in root.children(recursive=True))
        if host.netns is not None:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                for word in _run("ip", "netns", "pids", host.netns).split():
                    with contextlib.suppress(psutil.Error):
                        found.setdefault(int(word), psutil.Process(int(word)))
        elif host.address:
            with contextlib.suppress(psutil.Error):
                for conn in psutil.net_connections("tcp"):
                    if conn.laddr and conn.laddr.ip == host.address and conn.pid:
                        with contextlib.suppress(psutil.Error):
                            found.setdefault(conn.pid, psutil.Process(conn.pid))
        for pid, proc in list(host.seen.items()):
            if pid not in found and _alive(proc):
                found[pid] = proc
        host.seen = {pid: p for pid, p in found.items() if _alive(p)}
        return set(host.seen)

    def _signal(self, name: str, sig: signal.Signals) -> set[int]:
        pids = self.host_pids(name)
        for pid in pids:
            proc = self._hosts[name].seen.get(pid)
            with contextlib.suppress(psutil.Error):
                if proc is not None:
                    proc.send_signal(sig)
                else:
                    os.kill(pid, sig)
        return pids

    def _reap(self, host: _Host, pids: set[int]) -> None:
        """Wait (bounded) for ``pids`` to be gone; SIGKILL what lingers."""
        if host.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.process.wait(timeout=_KILL_WAIT)
        procs = [host.seen[pid] for pid in pids if pid in host.seen]
        _gone, alive = psutil.wait_procs(procs, timeout=_KILL_WAIT)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=_KILL_WAIT)

    def kill_host(self, name: str) -> None:
        """SIGKILL every process of host ``name`` at once (a host that dies)."""
        host = self._host(name)
        pids = self._signal(name, signal.SIGKILL)
        self._reap(host, pids)
        host.paused = False
        log.warning("host_killed", host=name, processes=len(pids))

    def pause_host(self, name: str) -> None:
        """SIGSTOP every process of host ``name``."""
        host = self._host(name)
        host.paused = True
        pids = self._signal(name, signal.SIGSTOP)
        log.warning("host_paused", host=name, processes=len(pids))

    def resume_host(self, name: str) -> None:
        """SIGCONT every process of host ``name``."""
        host = self._host(name)
        host.paused = False
        pids = self._signal(name, signal.SIGCONT)
        log.info("host_resumed", host=name, processes=len(pids))

    # --- Network faults ------------------------------------------------------------------

    def partition(self, names: Sequence[str], *, mode: PartitionMode = "isolate") -> None:
        """Cut hosts off: ``isolate`` takes each one's link to the bridge down (nothing passes
        either way); ``one_way`` drops only the leader's packets to it (they are addressed to
        a MAC nobody has), what the host sends still reaches the leader.

        Raises:
            HostLabError: hosts on loopback (one network stack: nothing to cut), or the
                change failed.
        """
        hosts = [self._host(name) for name in names]
        if self._network != "netns":
            msg = (
                "a partition needs network 'netns': hosts on loopback share this namespace's "
                "network stack, which has no link to cut between them"
            )
            raise HostLabError(msg)
        for host in hosts:
            assert host.outer is not None and self._bridge is not None  # noqa: S101 - prepared
            try:
                if mode == "isolate":
                    _ip("link", "set", host.outer, "down")
                    host.cut = True
                else:
                    at = (host.address, "lladdr", _NOWHERE, "dev", self._bridge)
                    _ip("neigh", "replace", *at, "nud", "permanent")
                    host.one_way = True
            except subprocess.CalledProcessError as exc:
                msg = f"cannot partition {host.spec.name!r} ({mode}): {exc.stderr.strip()}"
                raise HostLabError(msg) from None
            log.warning("host_partitioned", host=host.spec.name, mode=mode)

    def split_halves(self) -> tuple[list[str], list[str]]:
        """The hosts in two halves by sorted name: the first (the smaller, for an odd count)
        is the one a ``halves`` partition cuts off; the leader stays with the second."""
        names = self.names()
        middle = max(1, len(names) // 2) if names else 0
        return names[:middle], names[middle:]

    def heal(self, name: str | None = None) -> None:
        """Undo partitions and pauses, of host ``name`` or of every host."""
        hosts = list(self._hosts.values()) if name is None else [self._host(name)]
        for host in hosts:
            if host.cut and host.outer is not None:
                _quiet("link", "set", host.outer, "up")
                host.cut = False
                log.info("host_healed", host=host.spec.name, mode="isolate")
            if host.one_way and self._bridge is not None:
                _quiet("neigh", "del", host.address, "dev", self._bridge)
                host.one_way = False
                log.info("host_healed", host=host.spec.name, mode="one_way")
            if host.paused:
                self.resume_host(host.spec.name)

    # --- Teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Resume every member, ask each to leave (SIGTERM), wait (bounded), SIGKILL what is
        left, then remove the namespaces, links and bridge. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.heal()
        for name in self._hosts:
            self.host_pids(name)  # remember the process trees: a join that exits may orphan some
        for host in self._hosts.values():
            if host.process is not None and host.process.poll() is None:
                host.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _LEAVE_WAIT
        for host in self._hosts.values():
            if host.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, host in self._hosts.items():
            self._reap(host, self._signal(name, signal.SIGKILL))
        for host in self._hosts.values():
            if host.outer is not None:
                _quiet("link", "del", host.outer)
                host.outer = None
            if host.netns is not None:
                _quiet("netns", "del", host.netns)
                host.netns = None
        if self._bridge is not None:
            _quiet("link", "del", self._bridge)
            self._bridge = None
        log.info("host_lab_stopped", tag=self.tag)
