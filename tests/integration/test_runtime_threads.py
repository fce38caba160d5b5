"""The Runtime from several threads: on multiprocTCPBase each thread asks through an endpoint
of its own, so requests are in flight together; on simpleSystemBase they take turns."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from actors import Runtime
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Meet, Met, Ping, Pong

W = "tests.integration._workers"


def _tree() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        children=[
            ChildSpec(id="meet", start=f"{W}:Rendezvous"),
            ChildSpec(id="echo", start=f"{W}:Echo"),
        ],
    )


@pytest.mark.integration
@pytest.mark.parametrize("base", ["multiprocTCPBase"])
def test_asks_from_several_threads_are_in_flight_together(start_tree: StartTree) -> None:
    """The rendezvous answers nobody until four requests wait: asks that took turns would
    each time out."""
    rt = start_tree(_tree())
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: rt.ask("root/meet", Meet(n=4), timeout=20), range(4)))
    assert all(isinstance(r, Met) and 4 == r.n for r in replies)


def test_threads_asking_at_once_each_get_their_own_replies(start_tree: StartTree) -> None:
    rt = start_tree(_tree())

    def client(n: int) -> list[str]:
        tokens = [f"{n}-{k}" for k in range(15)]
        return [_token(rt, t) for t in tokens]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client, range(4)))
    assert [[f"{n}-{k}" for k in range(15)] for n in range(4)] == results


def _token(rt: Runtime, token: str) -> str:
    reply = rt.ask("root/echo", Ping(token=token), timeout=20)
    assert isinstance(reply, Pong)
    return reply.token
