"""The access manager in a running tree: decisions, administration, the audit log, restarts."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from actors import RequestRejected, Runtime
from actors.core.keyring import read_key_file
from actors.errors import error_from_reply
from actors.services.access_audit import verify_audit_log
from protocols._base import Message
from protocols.access import (
    AccessDenied,
    AccessGranted,
    AppendAudit,
    AuditStatistics,
    AuditVerification,
    CheckAccess,
    EnsurePermissions,
    GetAuditStats,
    GetSubject,
    GrantRole,
    RevokePermissions,
    RevokeRole,
    SetAgentPermissions,
    SubjectGrants,
    VerifyAudit,
)
from protocols.common import ErrorReply, Ok
from protocols.topology import ChildSpec, SupervisorSpec
from tests.conftest import StartTree
from tests.integration._access_workers import Forward

ACCESS = "root/access"
TCP = "multiprocTCPBase"


def tree_keys(audit_path: str) -> list[bytes]:
    """The deployment secret of the tree whose audit log is ``audit_path``."""
    return read_key_file(Path(audit_path).parent / "secret")


def tree() -> SupervisorSpec:
    return SupervisorSpec(
        id="root",
        intensity=5,
        children=[ChildSpec(id="access", start="actors.services.access_manager:AccessManager")],
    )


def ask(rt: Runtime, message: Message) -> Message:
    return rt.ask(ACCESS, message, timeout=10.0)


def stats(rt: Runtime) -> AuditStatistics:
    reply = ask(rt, GetAuditStats())
    assert isinstance(reply, AuditStatistics)
    return reply


def entries(path: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(path).read_bytes().splitlines()]


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """A real tree: work/ (the workspace, with a link out to /etc) and ws-link -> work."""
    real = Path(os.path.realpath(tmp_path))
    (real / "work" / "src").mkdir(parents=True)
    (real / "work" / "src" / "a.py").write_text("")
    (real / "work" / "etc-link").symlink_to("/etc")
    (real / "ws-link").symlink_to(real / "work")
    return real


def ensure(rt: Runtime, area: Path, **extra: object) -> SubjectGrants:
    """Give "coder" its workspace, named through the ws-link symlink."""
    reply = ask(
        rt,
        EnsurePermissions(agent="coder", tools=["fs.*"], workspace=f"{area}/ws-link/**", **extra),
    )
    assert isinstance(reply, SubjectGrants)
    return reply


def test_checks_are_answered_with_reasons_and_each_is_audited(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(tree())

    grants = ensure(rt, area)
    inside = ask(rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work/src/a.py"))
    escape = ask(
        rt,
        CheckAccess(
            subject="coder", action="read", resource=f"{area}/work/src/../../../../../../etc/passwd"
        ),
    )
    link = ask(
        rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work/etc-link/passwd")
    )
    tool = ask(rt, CheckAccess(subject="coder", action="execute", resource="shell.run"))
    net = ask(rt, CheckAccess(subject="coder", action="network", resource="example.org"))
    audit = stats(rt)

    assert ["operator"] == grants.roles
    assert [f"{area}/work/**"] == grants.paths  # no /tmp: an agent's temp dir is its own
    assert isinstance(inside, AccessGranted)
    assert f"matches '{area}/work/**'" in inside.reason
    assert isinstance(escape, AccessDenied)
    assert "/etc/passwd" == escape.resolved
    assert isinstance(link, AccessDenied)
    assert "/etc/passwd" == link.resolved
    assert isinstance(tool, AccessDenied)
    assert isinstance(net, AccessDenied)
    assert "network access is off for 'coder'" == net.reason
    assert [1, 2, 3, 4, 5] == [r.audit_seq for r in (inside, escape, link, tool, net)]
    assert 6 == audit.entries
    assert Path(audit.path).parent.is_dir()
    logged = entries(audit.path)
    assert ["admin"] + ["decision"] * 5 == [e["type"] for e in logged]
    assert [
        "permissions_ensured",
        "access_granted",
        "access_denied",
        "access_denied",
        "access_denied",
        "access_denied",
    ] == [e["action"] for e in logged]
    assert audit.last_hash == logged[-1]["hash"]
    assert verify_audit_log(audit.path, keys=tree_keys(audit.path)).ok
    verified = ask(rt, VerifyAudit())
    assert isinstance(verified, AuditVerification)
    assert (True, 6) == (verified.ok, verified.entries)


def test_bad_input_gets_typed_errors_and_the_manager_keeps_running(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(tree())
    ensure(rt, area)
    bad: list[tuple[Message, str]] = [
        (GetSubject(subject="ghost"), "UnknownSubject"),
        (RevokeRole(subject="ghost", role="reader"), "UnknownSubject"),
        (GrantRole(subject="coder", role="wizard"), "UnknownRole"),
        (GrantRole(subject="two words", role="reader"), "InvalidSubject"),
        (SetAgentPermissions(agent="coder", paths=["["]), "InvalidPattern"),
        (SetAgentPermissions(agent="coder", paths=[""]), "InvalidPattern"),
        (SetAgentPermissions(agent="coder", tools=["fs.["]), "InvalidPattern"),
        (EnsurePermissions(agent="coder", tools=[], workspace="work/**"), "InvalidPattern"),
        (CheckAccess(subject="coder", action="read", resource="relative/path"), "InvalidResource"),
        (CheckAccess(subject="coder", action="teleport", resource="x"), "UnknownAction"),
        (AppendAudit(actor="", action="task_reaped"), "InvalidAuditDetail"),
    ]

    errors = []
    for message, _expected in bad:
        with pytest.raises(RequestRejected) as caught:
            ask(rt, message)
        errors.append(caught.value.error)
    after = ask(rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work"))

    assert [expected for _, expected in bad] == errors
    assert isinstance(after, AccessGranted)
    assert [] == [e for e in rt.events() if e.event == "child_exited"]
    logged = entries(stats(rt).path)
    assert ["permissions_ensured", "access_granted"] == [e["action"] for e in logged], (
        "bad input is not audited"
    )


def _actors_tree() -> SupervisorSpec:
    """The access manager, an actor acting with the admin role, and one with no role."""
    forwarder = "tests.integration._access_workers:Forwarder"
    return SupervisorSpec(
        id="root",
        intensity=5,
        children=[
            ChildSpec(id="access", start="actors.services.access_manager:AccessManager"),
            ChildSpec(id="alice", start=forwarder, roles=["admin"]),
            ChildSpec(id="mallory", start=forwarder),
        ],
    )


def as_actor(rt: Runtime, actor: str, message: Message) -> Message:
    """Send ``message`` to the access manager from the actor ``root/<actor>``."""
    body = message.model_dump(mode="json", exclude={"kind"})
    forward = Forward(to=ACCESS, message_kind=message.kind, body=body)
    reply = rt.ask(f"root/{actor}", forward, timeout=10.0)
    if isinstance(reply, ErrorReply):
        raise error_from_reply(reply, ACCESS)
    return reply


def test_administration_is_authorised_by_the_senders_verified_roles(
    start_tree: StartTree,
) -> None:
    rt = start_tree(_actors_tree())

    granted = as_actor(rt, "alice", GrantRole(subject="user:bob", role="operator"))
    with pytest.raises(RequestRejected) as too_much:
        as_actor(rt, "alice", GrantRole(subject="user:bob", role="superuser"))
    with pytest.raises(RequestRejected) as no_role:
        as_actor(rt, "mallory", GrantRole(subject="root/mallory", role="superuser"))
    revoked = as_actor(rt, "alice", RevokeRole(subject="user:bob", role="operator"))

    assert isinstance(granted, SubjectGrants)
    assert ["operator"] == granted.roles
    assert ("PermissionDenied", True) == (
        too_much.value.error,
        "only a superuser" in str(too_much.value),
    )
    assert "PermissionDenied" == no_role.value.error
    assert "'root/mallory'" in no_role.value.detail
    assert isinstance(revoked, SubjectGrants)
    assert [] == revoked.roles
    logged = entries(stats(rt).path)
    assert [
        ("root/alice", "role_granted"),
        ("root/alice", "admin_denied"),
        ("root/mallory", "admin_denied"),
        ("root/alice", "role_revoked"),
    ] == [(e["actor"], e["action"]) for e in logged]


def test_a_check_is_for_the_sender_unless_it_may_administer_permissions(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(_actors_tree())
    ask(rt, SetAgentPermissions(agent="root/mallory", paths=[f"{area}/work/**"]))
    ask(rt, GrantRole(subject="root/mallory", role="reader"))

    own = as_actor(rt, "mallory", CheckAccess(action="read", resource=f"{area}/work/src/a.py"))
    with pytest.raises(RequestRejected) as other:
        as_actor(rt, "mallory", CheckAccess(subject="system", action="read", resource="/etc"))
    for_mallory = as_actor(
        rt, "alice", CheckAccess(subject="root/mallory", action="read", resource="/etc/passwd")
    )

    assert isinstance(own, AccessGranted)
    assert "root/mallory" == own.subject
    assert "PermissionDenied" == other.value.error
    assert isinstance(for_mallory, AccessDenied)
    assert "root/mallory" == for_mallory.subject
    assert "root/alice" == entries(stats(rt).path)[-1]["detail"]["asked_by"]


def test_an_audit_entry_names_its_verified_sender(start_tree: StartTree) -> None:
    rt = start_tree(_actors_tree())

    as_actor(rt, "mallory", AppendAudit(actor="system", action="task_reaped", detail={"n": 1}))

    [entry] = entries(stats(rt).path)
    assert "root/mallory" == entry["actor"]
    assert {"n": 1, "about": "system"} == entry["detail"]


def test_ensure_permissions_is_idempotent_and_audited_each_time(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(tree())

    first = ensure(rt, area, network=True)
    second = ensure(rt, area, network=True)

    assert first == second
    assert first.network
    logged = entries(stats(rt).path)
    assert [True, False] == [e["detail"]["changed"] for e in logged]  # type: ignore[index]


def test_other_actors_append_to_the_audit_log(start_tree: StartTree) -> None:
    rt = start_tree(tree())

    reply = ask(
        rt,
        AppendAudit(
            actor="root/system/scheduler",
            action="task_reaped",
            detail={"task": "t-7", "agent": "coder"},
        ),
    )

    assert isinstance(reply, Ok)
    [entry] = entries(stats(rt).path)
    assert ("external", "system", "task_reaped") == (
        entry["type"],
        entry["actor"],
        entry["action"],
    )  # the verified sender (here the program that started the tree)
    assert {"task": "t-7", "agent": "coder", "about": "root/system/scheduler"} == entry["detail"]


def kill_access(rt: Runtime) -> None:
    """SIGKILL the access manager's process and wait for its replacement."""
    seq0 = rt.events()[-1].seq
    [child] = rt.which_children("root")
    assert child.pid is not None
    assert child.pid != os.getpid()
    os.kill(child.pid, signal.SIGKILL)
    exited = rt.wait_event("child_exited", child_id="access", after=seq0, timeout=10)
    assert "killed" == exited.reason
    rt.wait_event("child_restarted", child_id="access", after=seq0, timeout=10)


def restart_by_terminate_and_restart_child(rt: Runtime) -> None:
    rt.terminate_child("root", "access")
    rt.restart_child("root", "access")


def check_grants_survive(rt: Runtime, area: Path, restart: Callable[[Runtime], None]) -> None:
    ensure(rt, area, network=True)
    ask(rt, GrantRole(subject="user:alice", role="admin"))
    ask(rt, SetAgentPermissions(agent="coder", tools=["fs.read", "git.*"]))
    ask(rt, RevokeRole(subject="user:alice", role="admin"))
    ask(rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work/src/a.py"))
    before = stats(rt)
    coder_before = ask(rt, GetSubject(subject="coder"))
    (area / "ws-link").unlink()
    (area / "ws-link").symlink_to("/etc")  # grants were resolved when made: replay keeps them

    restart(rt)
    coder_after = ask(rt, GetSubject(subject="coder"))
    alice_after = ask(rt, GetSubject(subject="user:alice"))
    decision = ask(rt, CheckAccess(subject="coder", action="execute", resource="git.status"))
    after = stats(rt)

    assert coder_before == coder_after
    assert isinstance(coder_after, SubjectGrants)
    assert ["fs.read", "git.*"] == coder_after.tools
    assert isinstance(alice_after, SubjectGrants)
    assert [] == alice_after.roles
    assert isinstance(decision, AccessGranted)
    assert before.entries == decision.audit_seq, "the chain continues where it was"
    assert (before.entries + 1, 0) == (after.entries, after.problems_at_start)
    assert before.path == after.path
    logged = entries(after.path)
    assert before.last_hash == logged[before.entries]["prev"]
    assert verify_audit_log(after.path, keys=tree_keys(after.path)).ok


def test_grants_and_the_chain_survive_terminate_and_restart_child(
    start_tree: StartTree, area: Path
) -> None:
    check_grants_survive(start_tree(tree()), area, restart_by_terminate_and_restart_child)


@pytest.mark.parametrize("base", [pytest.param(TCP, marks=pytest.mark.integration)])
def test_grants_and_the_chain_survive_a_sigkill_of_the_access_manager(
    start_tree: StartTree, area: Path
) -> None:
    check_grants_survive(start_tree(tree()), area, kill_access)


def test_a_broken_log_is_reported_at_start_and_appended_to_not_rewritten(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(tree())
    ensure(rt, area)
    for resource in ("/etc/a", "/etc/b", "/etc/c"):
        ask(rt, CheckAccess(subject="coder", action="read", resource=resource))
    path = Path(stats(rt).path)
    rt.terminate_child("root", "access")
    lines = path.read_bytes().splitlines()
    lines[2] = lines[2].replace(b"/etc/b", b"/etc/B")
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    tampered = path.read_bytes()

    rt.restart_child("root", "access")
    decision = ask(rt, CheckAccess(subject="coder", action="read", resource="/etc/d"))
    after = stats(rt)
    verified = ask(rt, VerifyAudit())

    assert isinstance(decision, AccessDenied)
    assert 4 == decision.audit_seq
    assert 1 == after.problems_at_start
    assert 5 == after.entries
    assert path.read_bytes().startswith(tampered)
    assert isinstance(verified, AuditVerification)
    assert [2] == [index for index, _ in verified.problems]
    assert "edited" in verified.problems[0][1]
    coder = ask(rt, GetSubject(subject="coder"))
    assert isinstance(coder, SubjectGrants)
    assert ["operator"] == coder.roles, "intact admin entries are still replayed"


@pytest.mark.parametrize("base", ["simpleSystemBase"])
def test_decisions_and_changes_are_structlog_events(start_tree: StartTree, area: Path) -> None:
    rt = start_tree(tree())

    with capture_logs() as logs:
        ensure(rt, area)
        ask(rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work/src/a.py"))
        ask(rt, CheckAccess(subject="coder", action="read", resource="/etc/passwd"))
        ask(rt, AppendAudit(actor="x", action="y"))

    events = [e["event"] for e in logs if e["event"] != "audit_appended"]
    assert ["permissions_ensured", "access_granted", "access_denied"] == events
    assert 4 == sum(1 for e in logs if e["event"] == "audit_appended")
    denied = next(e for e in logs if e["event"] == "access_denied")
    assert ("coder", "read", "/etc/passwd") == (
        denied["subject"],
        denied["action"],
        denied["resource"],
    )


def test_a_runs_grants_are_revoked_and_the_revocation_survives_a_restart(
    start_tree: StartTree, area: Path
) -> None:
    rt = start_tree(tree())
    ensure(rt, area)

    revoked = ask(rt, RevokePermissions(agent="coder"))
    rt.terminate_child("root", "access")
    rt.restart_child("root", "access")
    after = ask(rt, CheckAccess(subject="coder", action="read", resource=f"{area}/work/src/a.py"))

    assert isinstance(revoked, SubjectGrants)
    assert ([], [], []) == (revoked.roles, revoked.tools, revoked.paths)
    assert isinstance(after, AccessDenied)
    assert "unknown subject 'coder'" in after.reason
    logged = entries(stats(rt).path)
    assert ("system", "permissions_revoked") == (logged[1]["actor"], logged[1]["action"])
