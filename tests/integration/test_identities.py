"""Verified senders: a worker with ``verify_senders`` learns who sent each message from the
guardian's registry (an actor's path and roles, the owner as ``system``, a logged-in
principal), never from a field the sender fills."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors import Runtime
from actors.core.keyring import create_key_file, principal_key_path
from protocols.identity import SYSTEM_IDENTITY, Identity
from protocols.topology import ChildSpec, SupervisorSpec, SystemConfig, Topology
from tests.conftest import StartTree
from tests.integration._identity_workers import AskWho, WhoAmI, YouAre

REPO = Path(__file__).resolve().parents[2]
WORKERS = "tests.integration._identity_workers"


def _root() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=5,
        children=[
            ChildSpec(id="probe", start=f"{WORKERS}:Probe"),
            ChildSpec(id="relay", start=f"{WORKERS}:Relay", roles=["operator"]),
            ChildSpec(id="plain", start=f"{WORKERS}:Unverified"),
        ],
    )


def _who(rt: Runtime, path: str = "root/probe") -> Identity | None:
    reply = rt.ask(path, WhoAmI(), timeout=10)
    assert isinstance(reply, YouAre)
    return reply.identity


def test_the_program_that_started_the_tree_is_system(start_tree: StartTree) -> None:
    rt = start_tree(_root())

    assert SYSTEM_IDENTITY == _who(rt)


def test_an_actor_is_its_path_with_the_roles_of_its_spec(start_tree: StartTree) -> None:
    rt = start_tree(_root())

    reply = rt.ask("root/relay", AskWho(path="root/probe"), timeout=10)

    assert isinstance(reply, YouAre)
    assert Identity(name="root/relay", kind="actor", roles=("operator",)) == reply.identity


def test_a_restarted_actor_is_identified_at_its_new_address(start_tree: StartTree) -> None:
    rt = start_tree(_root())
    assert isinstance(rt.ask("root/relay", AskWho(path="root/probe"), timeout=10), YouAre)

    rt.terminate_child("root", "relay")
    rt.restart_child("root", "relay")
    reply = rt.ask("root/relay", AskWho(path="root/probe"), timeout=10)

    assert isinstance(reply, YouAre)
    assert reply.identity is not None
    assert "root/relay" == reply.identity.name


def test_a_worker_that_does_not_verify_sees_no_sender(start_tree: StartTree) -> None:
    rt = start_tree(_root())

    assert _who(rt, "root/plain") is None


# --- External clients: a principal proves its key ---------------------------------------------

_ATTACH = """
import json, sys
from actors import Runtime
from actors.errors import RequestRejected
from protocols.errors import UnderstudyError
from tests.integration._identity_workers import WhoAmI
port, secret, state, principal = sys.argv[1:]
try:
    rt = Runtime.attach(int(port), secret_file=secret, state_dir=state, principal=principal)
except RequestRejected as exc:
    print("RESULT", json.dumps({"error": exc.error, "detail": exc.detail}))
    raise SystemExit(0)
except UnderstudyError as exc:
    print("RESULT", json.dumps({"error": type(exc).__name__, "detail": str(exc)}))
    raise SystemExit(0)
try:
    print("RESULT", rt.ask("root/probe", WhoAmI(), timeout=10).model_dump_json())
finally:
    rt.shutdown()
"""


def _attach_as(rt: Runtime, state_dir: Path, principal: str) -> dict[str, object]:
    """Attach from another process (a client of its own) and ask the probe who it is."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _ATTACH,
            str(rt.admin_port),
            str(rt.secret_file),
            str(state_dir),
            principal,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    answer: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    return answer


@pytest.fixture
def tcp_tree(tmp_path: Path) -> tuple[Runtime, Path]:
    state = tmp_path / "state"
    topology = Topology(
        system=SystemConfig(base="multiprocTCPBase", state_dir=str(state)), root=_root()
    )
    rt = Runtime.start(topology)
    yield rt, state  # type: ignore[misc]
    rt.shutdown()


@pytest.mark.integration
def test_an_attached_client_acts_as_the_principal_whose_key_it_holds(
    tcp_tree: tuple[Runtime, Path],
) -> None:
    rt, state = tcp_tree

    answer = _attach_as(rt, state, "admin")

    assert {"name": "admin", "kind": "principal", "roles": ["admin"]} == answer["identity"]
    assert SYSTEM_IDENTITY == _who(rt)  # the owner is still system


@pytest.mark.integration
def test_a_client_with_another_principals_key_is_refused(tcp_tree: tuple[Runtime, Path]) -> None:
    rt, state = tcp_tree
    client_state = state.parent / "client"  # what the client holds: a key that is not admin's
    create_key_file(principal_key_path(client_state, "admin"))

    answer = _attach_as(rt, client_state, "admin")

    assert "PermissionDenied" == answer["error"]
    assert "does not match" in str(answer["detail"])


@pytest.mark.integration
def test_an_undeclared_principal_is_refused(tcp_tree: tuple[Runtime, Path]) -> None:
    rt, state = tcp_tree
    create_key_file(principal_key_path(state, "mallory"))

    answer = _attach_as(rt, state, "mallory")

    assert "PermissionDenied" == answer["error"]
    assert "unknown principal 'mallory'" in str(answer["detail"])


@pytest.mark.integration
def test_a_principal_without_a_key_file_cannot_attach(tcp_tree: tuple[Runtime, Path]) -> None:
    rt, state = tcp_tree

    answer = _attach_as(rt, state, "nobody")

    assert "SecretError" == answer["error"]
    assert "nobody.key" in str(answer["detail"])
