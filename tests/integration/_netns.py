"""Real hosts on one machine: a network namespace per member host, a veth pair to the root
namespace, addresses only inside them; removed afterwards. Test-only helpers (root needed)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    name = f"us-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"cannot create a network namespace ({exc}; {detail.decode().strip()})"
    _ip("netns", "del", name)
    return None


@dataclass
class Netns:
    """One host's namespace: ``address`` inside it, ``gateway`` (the leader's side) outside."""

    name: str
    outer: str
    gateway: str
    address: str

    def pids(self) -> set[int]:
        """Every process running in the namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return {int(line) for line in out.split()}

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the host."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def cut(self) -> None:
        """Partition: take the link to the host down."""
        _ip("link", "set", self.outer, "down")

    def heal(self) -> None:
        """Bring the link back up."""
        _ip("link", "set", self.outer, "up")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


@contextlib.contextmanager
def netns_host(index: int) -> Iterator[Netns]:
    """A namespace with a veth pair: 10.213.<index>.1 outside, 10.213.<index>.2 inside."""
    tag = secrets.token_hex(3)
    name, outer, inner = f"us-{tag}", f"usv{tag}a", f"usv{tag}b"
    gateway, address = f"10.213.{index}.1", f"10.213.{index}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{gateway}/24", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, outer, gateway, address)
    finally:
        host = Netns(name, outer, gateway, address)
        with contextlib.suppress(subprocess.CalledProcessError):
            host.signal(signal.SIGCONT)
            host.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outer)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", name)


@dataclass
class Bridge:
    """A bridge in the root namespace joining several host namespaces (one subnet)."""

    name: str
    subnet: int
    gateway: str
    hosts: list[Netns]

    def host(self, index: int) -> Netns:
        """A new namespace on the bridge, at 10.214.<subnet>.<index>."""
        tag = secrets.token_hex(3)
        name, outer, inner = f"us-{tag}", f"usv{tag}a", f"usv{tag}b"
        address = f"10.214.{self.subnet}.{index}"
        _ip("netns", "add", name)
        host = Netns(name, outer, self.gateway, address)
        self.hosts.append(host)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("link", "set", outer, "master", self.name)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return host


@contextlib.contextmanager
def bridge(subnet: int) -> Iterator[Bridge]:
    """A bridge at 10.214.<subnet>.1 (the leader's address); its hosts are removed with it."""
    tag = secrets.token_hex(3)
    name = f"usb{tag}"
    gateway = f"10.214.{subnet}.1"
    _ip("link", "add", name, "type", "bridge")
    made = Bridge(name, subnet, gateway, [])
    try:
        _ip("addr", "add", f"{gateway}/24", "dev", name)
        _ip("link", "set", name, "up")
        yield made
    finally:
        for host in made.hosts:
            with contextlib.suppress(subprocess.CalledProcessError):
                host.signal(signal.SIGCONT)
                host.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", host.outer)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", host.name)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", name)
