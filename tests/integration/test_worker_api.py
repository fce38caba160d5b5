"""What a worker can use besides handle: events, its state directory, deferred replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import ActorCrashed
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._workers import Crash, GetWatched, Watched


def test_a_subscribed_worker_sees_supervision_events_with_replay(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root",
            intensity=3,
            children=[
                ChildSpec(id="echo", start="tests.integration._workers:Echo"),
                ChildSpec(
                    id="watch", start="tests.integration._workers:Watcher", args={"replay": True}
                ),
            ],
        )
    )

    with pytest.raises(ActorCrashed):
        rt.ask("root/echo", Crash())
    rt.wait_event("child_restarted", child_id="echo")
    watched = rt.ask("root/watch", GetWatched())

    assert isinstance(watched, Watched)
    assert "child_started:echo" in watched.events
    assert watched.events.index("child_exited:echo") < watched.events.index("child_restarted:echo")


def test_a_worker_knows_the_topology_state_directory(start_tree: StartTree) -> None:
    rt = start_tree(
        SupervisorSpec(
            id="root", children=[ChildSpec(id="watch", start="tests.integration._workers:Watcher")]
        )
    )

    watched = rt.ask("root/watch", GetWatched())

    assert isinstance(watched, Watched)
    assert Path(watched.state_dir).is_absolute()
    assert Path(watched.state_dir).is_dir()


def test_call_later_delivers_a_message_to_the_worker_itself(start_tree: StartTree) -> None:
    from tests.integration._workers import Remind, Reminded

    rt = start_tree(
        SupervisorSpec(
            id="root", children=[ChildSpec(id="rem", start="tests.integration._workers:Reminder")]
        )
    )

    reply = rt.ask("root/rem", Remind(seconds=0.05, note="n1"), timeout=5)

    assert Reminded(note="n1") == reply


def test_a_flow_runs_parallel_calls_in_order_and_raises_errors_inside(
    start_tree: StartTree,
) -> None:
    from protocols.topology import ChildSpec as Spec
    from tests.integration._workers import Provision, Provisioned

    rt = start_tree(
        SupervisorSpec(
            id="root",
            children=[
                SupervisorSpec(
                    id="pool",
                    strategy="simple_one_for_one",
                    template=Spec(id="job", start="tests.integration._workers:Echo"),
                ),
                ChildSpec(id="prov", start="tests.integration._workers:Provisioner"),
            ],
        )
    )

    reply = rt.ask(
        "root/prov", Provision(pool="root/pool", count=3, missing="root/nope"), timeout=20
    )

    assert isinstance(reply, Provisioned)
    assert 3 == len(set(reply.paths))
    assert reply.paths == reply.tokens
    assert "ActorNotFound" == reply.missing_error
    assert 3 == rt.count_children("root/pool").active


def test_an_ask_times_out_on_every_base_when_the_handler_outlasts_the_timeout(
    start_tree: StartTree,
) -> None:
    from actors import AskTimeout
    from tests.integration._workers import Hang, Ping, Pong

    rt = start_tree(
        SupervisorSpec(
            id="root", children=[ChildSpec(id="echo", start="tests.integration._workers:Echo")]
        )
    )

    with pytest.raises(AskTimeout):
        rt.ask("root/echo", Hang(seconds=0.5), timeout=0.1)

    assert isinstance(rt.ask("root/echo", Ping(token="after"), timeout=5), Pong)
