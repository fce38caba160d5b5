"""The public names are the contract: each package exports exactly these."""

from __future__ import annotations

import subprocess
import sys

import actors
import protocols


def test_actors_exports_the_runtime_api_and_the_error_tree() -> None:
    expected = {
        "Runtime",
        "Worker",
        "ChildInfo",
        "ChildCounts",
        "SupervisionEvent",
        "UnderstudyError",
        "TopologyError",
        "AskTimeout",
        "ActorNotFound",
        "ActorCrashed",
        "ActorExited",
        "ChildNotFound",
        "AlreadyStarted",
        "AlreadyPresent",
        "ChildRunning",
        "ChildRestarting",
        "StartFailed",
        "NotSupported",
        "RuntimeStopped",
        "SupervisorError",
        "RequestRejected",
        "Backpressure",
    }

    assert expected == set(actors.__all__)
    for name in actors.__all__:
        assert getattr(actors, name) is not None


def test_every_error_is_an_understudy_error() -> None:
    for name in actors.__all__:
        obj = getattr(actors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, actors.UnderstudyError), name


def test_protocols_exports_message_and_codec_errors() -> None:
    assert {
        "Message",
        "UnderstudyError",
        "TopologyError",
        "CodecError",
        "DecodeError",
        "UnknownMessageKind",
        "MessageInvalid",
        "MessageTooLarge",
        "message_class",
        "registered_kinds",
    } == set(protocols.__all__)


def test_protocols_never_imports_actors_or_thespian() -> None:
    code = (
        "import sys, protocols, protocols.codec, protocols.supervision, protocols.topology,"
        " protocols.topology_loader, protocols.common, protocols.scheduler, protocols.access,"
        " protocols.registry, protocols.agent, protocols.runs, protocols.orchestrator;"
        " bad = [m for m in sys.modules if m.split('.')[0] in ('actors', 'thespian')];"
        " print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert "" == out.stdout.strip()


def test_every_protocol_class_owns_its_kind() -> None:
    """No two of Understudy's own message classes share a wire tag."""
    import importlib

    from protocols._base import Message, message_class

    modules = [
        "protocols.common",
        "protocols.supervision",
        "protocols._lifecycle",
        "protocols.access",
        "protocols.scheduler",
        "protocols.registry",
        "protocols.agent",
        "protocols.runs",
        "protocols.orchestrator",
    ]
    owned = 0
    for name in modules:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Message)
                and obj.__module__ == name
                and isinstance(obj.model_fields["kind"].default, str)
            ):
                assert message_class(obj.model_fields["kind"].default) is obj, obj
                owned += 1

    assert owned > 50
