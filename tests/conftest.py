"""Shared fixtures: runtimes on each base, and a check that no actor process outlives the suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psutil
import pytest
import structlog
from hypothesis import HealthCheck, settings

from actors import Runtime
from protocols.topology import SupervisorSpec, SystemConfig, Topology

settings.register_profile("understudy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("understudy")

BASES = ["simpleSystemBase", pytest.param("multiprocTCPBase", marks=pytest.mark.integration)]

StartTree = Callable[[SupervisorSpec], Runtime]


def _actor_processes() -> set[int]:
    """Live processes forked from this test process (same command line): admins and actors.

    Thespian's admin daemonizes (its parent becomes init), so descendants are found by the
    command line they inherited, not by parentage.
    """
    me = psutil.Process(os.getpid())
    mine = me.cmdline()
    found: set[int] = set()
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if info["pid"] == me.pid or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["cmdline"] == mine:
            found.add(info["pid"])
    return found


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """CLI tests configure structlog (level filters): do not let that leak into other tests."""
    yield
    structlog.reset_defaults()


@pytest.fixture(params=BASES)
def base(request: pytest.FixtureRequest) -> str:
    """Each Thespian base the runtime supports."""
    return str(request.param)


@pytest.fixture
def start_tree(base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartTree]:
    """Start a runtime for a root spec on the current base, with a fresh state directory;
    shut every one down afterwards."""
    started: list[Runtime] = []

    def start(root: SupervisorSpec) -> Runtime:
        state_dir = str(tmp_path_factory.mktemp("state"))
        system = SystemConfig(base=base, state_dir=state_dir)  # type: ignore[arg-type]
        runtime = Runtime.start(Topology(system=system, root=root))
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.shutdown()


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail the session if any actor process started by the tests is still alive."""
    before = _actor_processes()
    yield
    leftover = _actor_processes() - before
    # Processes of the last system may still be exiting: wait for them (not a sleep: an exit).
    procs = []
    for pid in leftover:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    leftover = {p.pid for p in alive}
    for pid in leftover:
        try:
            proc = psutil.Process(pid)
            desc = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        pytest.fail(f"process {pid} ({desc}) outlived the test suite")
