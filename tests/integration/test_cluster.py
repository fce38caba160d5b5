"""Several hosts, one tree (loopback variant: each host an ActorSystem on its own 127.0.0.x
address in this network namespace, joined with the real `understudy join` command).

Join, placement by host and by capability, a remote crash restarted on its host, a host whose
processes are all SIGKILLed (host_down within the detector's bound, one `noconnection` exit,
restart elsewhere where placement allows), a graceful leave, and a placement no host allows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from actors import ActorCrashed, Runtime
from actors.core.keyring import create_key_file
from actors.demo import Fail, Ping, Pong
from protocols.supervision import ChildInfo
from protocols.topology import (
    ChildSpec,
    ClusterConfig,
    Placement,
    SupervisorSpec,
    SystemConfig,
    Topology,
)
from tests.integration._cluster import Member, join
from tests.integration._fast_workers import Burst, Seen, WaitSeen
from tests.integration._netns import bridge, netns_unavailable

pytestmark = pytest.mark.integration

ECHO = "actors.demo:Echo"
Cluster = Callable[..., tuple[Runtime, dict[str, Member]]]


_NETNS = netns_unavailable()


@pytest.fixture(
    params=[
        "loopback",
        pytest.param("netns", marks=pytest.mark.skipif(_NETNS is not None, reason=_NETNS or "")),
    ]
)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Hosts as ActorSystems on 127.0.0.x in this namespace (loopback), or each in its own
    network namespace on a bridge, the leader on the bridge's address (netns)."""
    started: list[Runtime] = []
    members: list[Member] = []
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(bridge(3)) if request.param == "netns" else None
        secret = tmp_path / "secret"
        create_key_file(secret)

        def start(
            children: list[ChildSpec], hosts: dict[str, dict[str, str]]
        ) -> tuple[Runtime, dict[str, Member]]:
            system = SystemConfig(
                base="multiprocTCPBase",
                listen=net.gateway if net is not None else "127.0.0.1",
                state_dir=str(tmp_path / "leader"),
                cluster=ClusterConfig(capabilities={"zone": "home"}, secret_file=str(secret)),
            )
            root = SupervisorSpec(id="root", intensity=10, children=children)
            rt = Runtime.start(Topology(system=system, root=root))
            started.append(rt)
            assert rt.admin_port is not None
            joined = {}
            for index, (name, caps) in enumerate(hosts.items(), start=2):
                state = tmp_path / name
                state.mkdir()
                (state / "secret").write_bytes(secret.read_bytes())
                (state / "secret").chmod(0o600)
                if net is not None:
                    ns = net.host(index)
                    member = join(
                        rt.admin_port, name, ns.address, state, caps, leader=net.gateway, ns=ns
                    )
                else:
                    member = join(rt.admin_port, name, f"127.0.0.{index}", state, caps)
                members.append(member)
                joined[name] = member
            for name in hosts:
                rt.wait_event("host_up", child_id=name, timeout=30)
            return rt, joined

        try:
            yield start
        finally:
            for rt in started:
                rt.shutdown()
            for member in members:
                member.reap()


def _child(rt: Runtime, child_id: str) -> ChildInfo:
    return next(c for c in rt.which_children("root") if c.id == child_id)


def _runs_on(pid: int | None, member: Member) -> bool:
    """Whether process ``pid`` is one of ``member``'s host."""
    assert pid is not None
    return pid in member.pids()


def test_a_host_joins_and_children_are_placed_by_host_and_by_capability(cluster: Cluster) -> None:
    rt, members = cluster(
        [
            ChildSpec(id="local", start=ECHO),
            ChildSpec(id="by-host", start=ECHO, placement=Placement(host="m1")),
            ChildSpec(id="by-cap", start=ECHO, placement=Placement(capabilities={"gpu": "yes"})),
        ],
        {"m1": {"gpu": "yes"}},
    )
    rt.wait_event("child_restarted", child_id="by-cap", timeout=30)
    rt.wait_event("child_restarted", child_id="by-host", timeout=30)

    hosts = {h.name: h for h in rt.hosts()}
    local, by_host, by_cap = (_child(rt, c) for c in ("local", "by-host", "by-cap"))
    pong = rt.ask("root/by-cap", Ping(token="remote"), timeout=10)

    assert ("up", {"gpu": "yes"}) == (hosts["m1"].status, hosts["m1"].capabilities)
    assert hosts["leader"].leader
    assert ("leader", "m1", "m1") == (local.host, by_host.host, by_cap.host)
    assert _runs_on(by_cap.pid, members["m1"])
    assert isinstance(pong, Pong)
    assert pong.pid == by_cap.pid


def test_a_remote_child_that_crashes_is_restarted_on_its_host(cluster: Cluster) -> None:
    rt, members = cluster(
        [ChildSpec(id="remote", start=ECHO, placement=Placement(host="m1"))], {"m1": {}}
    )
    first = rt.wait_event("child_restarted", child_id="remote", timeout=30)  # m1 joined
    before = _child(rt, "remote")

    with pytest.raises(ActorCrashed):
        rt.ask("root/remote", Fail(), timeout=10)
    # The restart the crash causes (the supervisor hears of the crash from m1 in its own time).
    event = rt.wait_event("child_restarted", child_id="remote", after=first.seq, timeout=30)
    after = _child(rt, "remote")

    assert event.seq > first.seq
    assert "m1" == after.host
    assert after.pid != before.pid
    assert _runs_on(after.pid, members["m1"])


def test_a_killed_host_is_detected_and_its_child_restarts_elsewhere(cluster: Cluster) -> None:
    placement = Placement(capabilities={"gpu": "yes"})
    rt, members = cluster(
        [ChildSpec(id="job", start=ECHO, placement=placement)],
        {"m1": {"gpu": "yes"}, "m2": {"gpu": "yes"}},
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    first = _child(rt, "job")
    victim = members[first.host or ""]
    survivor = next(m for m in members.values() if m is not victim)
    seen = len(rt.events())

    victim.kill()
    down = rt.wait_event("host_down", child_id=victim.name, after=seen, timeout=10)
    exited = rt.wait_event("child_exited", child_id="job", after=seen, timeout=10)
    rt.wait_event("child_restarted", child_id="job", after=seen, timeout=30)
    now = _child(rt, "job")

    assert down.host == victim.name
    assert ("noconnection", victim.name) == (exited.reason, exited.host)
    assert 1 == sum(1 for e in rt.events()[seen:] if e.event == "child_exited")
    assert survivor.name == now.host
    assert _runs_on(now.pid, survivor)
    assert "down" == {h.name: h.status for h in rt.hosts()}[victim.name]


def test_a_host_that_leaves_moves_its_children_first(cluster: Cluster) -> None:
    """`understudy join` stopped with SIGTERM: before its ActorSystem goes, its child is
    stopped in order (shutdown) and started again on the other host its placement allows;
    then the host is down. The child never exits abnormally."""
    placement = Placement(capabilities={"gpu": "yes"})
    rt, members = cluster(
        [ChildSpec(id="job", start=ECHO, placement=placement)],
        {"m1": {"gpu": "yes"}, "m2": {"gpu": "yes"}},
    )
    rt.wait_event("child_restarted", child_id="job", timeout=30)
    first = _child(rt, "job").host
    leaving = members[first or ""]
    other = next(m for m in members.values() if m is not leaving)
    seen = len(rt.events())

    leaving.leave()
    down = rt.wait_event("host_down", child_id=leaving.name, after=seen, timeout=30)
    events = rt.events()[seen:]
    job = _child(rt, "job")

    assert 0 == leaving.process.returncode
    assert [] == [e for e in events if e.event == "child_exited"]
    stopped = [e for e in events if e.event == "child_terminated"]
    assert [("job", "shutdown")] == [(e.child_id, e.reason) for e in stopped]
    assert stopped[0].seq < down.seq
    assert ("running", other.name) == (job.status, job.host)
    assert _runs_on(job.pid, other)


def test_a_host_that_leaves_stops_a_child_that_can_go_nowhere_else(cluster: Cluster) -> None:
    rt, members = cluster(
        [ChildSpec(id="pinned", start=ECHO, placement=Placement(host="m1"))], {"m1": {}}
    )
    rt.wait_event("child_restarted", child_id="pinned", timeout=30)
    seen = len(rt.events())

    members["m1"].leave()
    rt.wait_event("host_down", child_id="m1", after=seen, timeout=30)
    events = rt.events()[seen:]
    pinned = _child(rt, "pinned")

    assert [] == [e for e in events if e.event == "child_exited"]
    assert [("pinned", "shutdown")] == [
        (e.child_id, e.reason) for e in events if e.event == "child_terminated"
    ]
    assert ("restarting", "placement: no host up with host 'm1'") == (
        pinned.status,
        pinned.reason,
    )


def test_a_placement_no_host_allows_leaves_the_child_restarting_with_the_reason(
    cluster: Cluster,
) -> None:
    rt, _members = cluster(
        [
            ChildSpec(id="ok", start=ECHO),
            ChildSpec(id="tpu", start=ECHO, placement=Placement(capabilities={"tpu": "v5"})),
        ],
        {},
    )

    tpu = _child(rt, "tpu")

    assert "running" == _child(rt, "ok").status
    assert ("restarting", "placement: no host up with capabilities tpu=v5") == (
        tpu.status,
        tpu.reason,
    )


def test_the_data_path_keeps_its_guarantees_across_hosts(cluster: Cluster) -> None:
    """A local sender, a receiver on another host: a burst arrives complete, in order, once,
    and the ledger balances."""
    fast = "tests.integration._fast_workers"
    rt, _members = cluster(
        [
            ChildSpec(id="sink", start=f"{fast}:Sink", placement=Placement(host="m1")),
            ChildSpec(id="source", start=f"{fast}:Source"),
        ],
        {"m1": {}},
    )
    rt.wait_event("child_restarted", child_id="sink", timeout=30)

    rt.ask("root/source", Burst(target="root/sink", count=5000), timeout=30)
    seen = rt.ask("root/sink", WaitSeen(count=5000), timeout=60)
    ledger = rt.ledger()

    assert "m1" == _child(rt, "sink").host
    assert isinstance(seen, Seen)
    assert list(range(5000)) == seen.seqs
    assert ledger.balanced, ledger.total


def test_the_child_api_and_spread_work_across_hosts(cluster: Cluster) -> None:
    """simple_one_for_one children spread round robin over the hosts their placement allows
    (the leader included); terminate_child of a remote child stops its process there."""
    template = ChildSpec(
        id="job",
        start=ECHO,
        restart="temporary",
        placement=Placement(capabilities={"zone": "home"}),
        spread="round_robin",
    )
    rt, members = cluster(
        [SupervisorSpec(id="pool", strategy="simple_one_for_one", template=template)],
        {"m1": {"zone": "home"}, "m2": {"zone": "home"}},
    )

    started = [rt.start_child("root/pool", {}) for _ in range(6)]
    counts = rt.count_children("root/pool")
    remote = next(info for info in started if info.host == "m1")
    process = psutil.Process(remote.pid)
    rt.terminate_child("root/pool", remote.id)
    gone, _alive = psutil.wait_procs([process], timeout=10)

    assert ["leader", "m1", "m2"] * 2 == [info.host for info in started]
    assert 6 == counts.active
    assert [process] == gone
    assert remote.id not in {c.id for c in rt.which_children("root/pool")}
    assert _runs_on(started[2].pid, members["m2"])


def test_shutdown_stops_children_on_every_host_in_reverse_start_order(cluster: Cluster) -> None:
    rt, members = cluster(
        [
            ChildSpec(id="a", start=ECHO),
            ChildSpec(id="b", start=ECHO, placement=Placement(host="m1")),
            ChildSpec(id="c", start=ECHO),
        ],
        {"m1": {}},
    )
    rt.wait_event("child_restarted", child_id="b", timeout=30)
    remote = psutil.Process(_child(rt, "b").pid)

    rt.shutdown()
    events = rt.events()
    gone, _alive = psutil.wait_procs([remote], timeout=10)

    order = [e.child_id for e in events if e.event == "child_terminated"]
    assert ["c", "b", "a"] == order[-3:]
    assert [remote] == gone
    assert members["m1"].process.poll() is None  # the host stays, only the tree is gone
