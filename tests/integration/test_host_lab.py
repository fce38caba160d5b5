"""The host lab (actors.experiments.hosts): member hosts joined with the real `understudy join`
to a leader Runtime, in network namespaces on a bridge (netns) or on 127.215.x.y (loopback),
and the host faults it makes: a host killed whole, paused past the failure detector, cut off
both ways or one way, healed and rejoined. After each test nothing of the lab is left: no
namespace or link with its tag, no process of its hosts, the Runtime shut down."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psutil
import pytest

from actors import Runtime, RuntimeStopped
from actors.core.keyring import create_key_file
from actors.demo import Ping, Pong
from actors.experiments.hosts import HostLab, HostLabError, lab_unavailable
from protocols.experiment import HostSpec
from protocols.supervision import ChildInfo
from protocols.topology import (
    ChildSpec,
    ClusterConfig,
    Placement,
    SupervisorSpec,
    SystemConfig,
    Topology,
)

pytestmark = pytest.mark.integration

ECHO = "actors.demo:Echo"
_NETNS = lab_unavailable("netns")
needs_netns = pytest.mark.skipif(_NETNS is not None, reason=_NETNS or "")

Network = Literal["netns", "loopback"]
Start = Callable[[str, dict[str, dict[str, str]], list[ChildSpec]], tuple[Runtime, HostLab]]


def _leftovers(lab: HostLab) -> list[str]:
    """Namespaces and links of ``lab`` still there."""
    spaces = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    links = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True, text=True).stdout
    return [line for line in (spaces + links).splitlines() if lab.tag in line]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """A leader Runtime with ``children`` and a host lab of ``hosts`` joined to it."""
    made: list[tuple[Runtime | None, HostLab]] = []
    procs: list[psutil.Process] = []

    def _start(
        network: str, hosts: dict[str, dict[str, str]], children: list[ChildSpec]
    ) -> tuple[Runtime, HostLab]:
        specs = [HostSpec(name=name, capabilities=caps) for name, caps in hosts.items()]
        net: Network = "netns" if network == "netns" else "loopback"
        lab = HostLab(specs, network=net, state_dir=tmp_path / "hosts")
        made.append((None, lab))
        lab.prepare()
        secret = tmp_path / "secret"
        create_key_file(secret)
        system = SystemConfig(
            base="multiprocTCPBase",
            listen=lab.leader_listen(),
            state_dir=str(tmp_path / "leader"),
            cluster=ClusterConfig(secret_file=str(secret)),
        )
        root = SupervisorSpec(id="root", intensity=20, children=children)
        rt = Runtime.start(Topology(system=system, root=root))
        made[-1] = (rt, lab)
        assert rt.admin_port is not None
        lab.join_all(rt.admin_port, secret, runtime=rt, timeout=30)
        return rt, lab

    def remember() -> None:
        for _rt, lab in made:
            for name in lab.names():
                for pid in lab.host_pids(name):
                    try:
                        procs.append(psutil.Process(pid))
                    except psutil.NoSuchProcess:
                        pass

    try:
        yield _start
    finally:
        remember()
        for rt, lab in made:
            if rt is not None:
                rt.shutdown()
            lab.stop()
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert [] == alive
    for rt, lab in made:
        assert [] == _leftovers(lab)
        if rt is not None:
            with pytest.raises(RuntimeStopped):
                rt.hosts()


def _child(rt: Runtime, child_id: str) -> ChildInfo:
    return next(c for c in rt.which_children("root") if c.id == child_id)


def _seen(rt: Runtime) -> int:
    return len(rt.events())


@needs_netns
def test_a_killed_host_is_down_its_child_restarts_on_the_other_and_it_can_rejoin(
    start: Start,
) -> None:
    placement = Placement(capabilities={"gpu": "yes"})
    rt, lab = start(
        "netns",
        {"m1": {"gpu": "yes"}, "m2": {"gpu": "yes"}},
        [ChildSpec(id="job", start=ECHO, placement=placement)],
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    hosts = {h.name: h for h in rt.hosts()}
    first = _child(rt, "job")
    victim = first.host or ""
    survivor = next(name for name in lab.names() if name != victim)
    on_victim = first.pid in lab.host_pids(victim)
    seen = _seen(rt)

    lab.kill_host(victim)
    down = rt.wait_event("host_down", child_id=victim, after=seen, timeout=10)
    exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    moved = _child(rt, "job")
    left_of_victim = lab.host_pids(victim)
    lab.rejoin(victim, runtime=rt, timeout=30)

    assert {"m1": "up", "m2": "up"} == {n: hosts[n].status for n in ("m1", "m2")}
    assert lab.leader_listen() == hosts["leader"].address.split(":")[0]
    assert on_victim
    assert (victim, "noconnection") == (down.host, exited.reason)
    assert set() == left_of_victim
    assert ("running", survivor) == (moved.status, moved.host)
    assert moved.pid in lab.host_pids(survivor)
    assert "up" == {h.name: h.status for h in rt.hosts()}[victim]


@needs_netns
def test_a_host_paused_past_the_detector_is_down_and_back_up_once_resumed(start: Start) -> None:
    rt, lab = start(
        "netns", {"m1": {}}, [ChildSpec(id="job", start=ECHO, placement=Placement(host="m1"))]
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    old = _child(rt, "job")
    seen = _seen(rt)

    lab.pause_host("m1")
    try:
        rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
        exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)
        parked = _child(rt, "job")
    finally:
        lab.resume_host("m1")
    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    pong = rt.ask("root/job", Ping(token="resumed"), timeout=10)

    assert "noconnection" == exited.reason
    assert ("restarting", "placement: no host up with host 'm1'") == (parked.status, parked.reason)
    assert isinstance(pong, Pong)
    assert pong.pid != old.pid
    assert pong.pid in lab.host_pids("m1")


@needs_netns
def test_an_isolated_host_is_down_and_back_up_once_healed(start: Start) -> None:
    rt, lab = start(
        "netns", {"m1": {}}, [ChildSpec(id="job", start=ECHO, placement=Placement(host="m1"))]
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    old = psutil.Process(_child(rt, "job").pid)
    seen = _seen(rt)

    lab.partition(["m1"])
    try:
        rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
        exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)
        gone, _alive = psutil.wait_procs([old], timeout=10)  # the member's agent stops it
    finally:
        lab.heal("m1")
    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    pong = rt.ask("root/job", Ping(token="healed"), timeout=10)

    assert "noconnection" == exited.reason
    assert [old] == gone
    assert isinstance(pong, Pong)
    assert pong.pid in lab.host_pids("m1")


_SEND = (
    "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
    ".sendto(b'hi', (sys.argv[1], int(sys.argv[2])))"
)


@needs_netns
def test_a_one_way_partition_drops_the_leaders_traffic_only(start: Start) -> None:
    rt, lab = start(
        "netns", {"m1": {}}, [ChildSpec(id="job", start=ECHO, placement=Placement(host="m1"))]
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    seen = _seen(rt)
    inbox = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inbox.bind((lab.leader_listen(), 0))
    inbox.settimeout(10)

    lab.partition(["m1"], mode="one_way")
    try:
        rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
        port = str(inbox.getsockname()[1])
        subprocess.run(
            lab.command("m1", [sys.executable, "-c", _SEND, lab.leader_listen(), port]),
            check=True,
            timeout=10,
        )
        heard, sender = inbox.recvfrom(16)
    finally:
        inbox.close()
        lab.heal()
    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)

    assert (b"hi", lab.address("m1")) == (heard, sender[0])


def test_loopback_hosts_are_killed_and_paused_but_cannot_be_partitioned(start: Start) -> None:
    rt, lab = start(
        "loopback", {"m1": {}}, [ChildSpec(id="job", start=ECHO, placement=Placement(host="m1"))]
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    seen = _seen(rt)

    with pytest.raises(HostLabError, match="netns"):
        lab.partition(["m1"])
    lab.pause_host("m1")
    try:
        rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)
    finally:
        lab.resume_host("m1")
    rt.wait_event("host_up", child_id="m1", after=seen, timeout=30)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    job = _child(rt, "job")
    seen = _seen(rt)
    pids = lab.host_pids("m1")
    lab.kill_host("m1")
    rt.wait_event("host_down", child_id="m1", after=seen, timeout=10)

    assert lab.address("m1").startswith("127.215.")
    assert job.pid in pids
    assert set() == lab.host_pids("m1")
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_halves_names_and_availability_need_no_hosts(tmp_path: Path) -> None:
    specs = [HostSpec(name=name) for name in ("e", "c", "a", "d", "b")]
    with HostLab(specs, network="loopback", state_dir=tmp_path) as lab:
        halves = lab.split_halves()
        with pytest.raises(HostLabError, match="no host named"):
            lab.kill_host("z")
        with pytest.raises(HostLabError, match="join_all"):
            lab.rejoin("a")
    with pytest.raises(HostLabError, match="differ"):
        HostLab([HostSpec(name="a"), HostSpec(name="a")], network="loopback", state_dir=tmp_path)

    assert (["a", "b"], ["c", "d", "e"]) == halves
    assert ["a", "b", "c", "d", "e"] == lab.names()
    assert lab_unavailable("loopback") is None
    assert "unknown network" in (lab_unavailable("wifi") or "")
