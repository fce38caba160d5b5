"""The access protocol: who may do what, on which resource, and the audit log that says so.

Vocabulary
    subject     who acts: an actor of the tree (its path, ``root/agents/agent-3``), a principal
                (``operator``), ``system`` (the built-in superuser: the program that started
                the tree), or a name granted to (``user:alice``); any id without whitespace
    role        a named set of actions: reader < operator < admin < superuser
    action      what is done: read, list, write, execute, network, task.submit, task.cancel,
                agent.spawn, agent.terminate, registry.write, audit.read, admin.permissions,
                admin.grant (the table is in ``actors.services.access_policy``)
    resource    what it is done to: an absolute path (read, list, write), a tool name
                (execute), a host (network), or free text (every other action)
    scope       per-subject tool globs, path patterns and a network switch; default deny

Who asks is never a field of the message: the access manager acts on the sender the seam
verified (``protocols.identity``): administrative commands are authorised for the sender, a
check is for the sender unless it names another subject (which needs admin.permissions), and
an audit entry's actor is the sender. A sender that cannot be identified is refused
(PermissionDenied).

Every decision and every administrative change is appended to a hash-chained JSON-lines audit
log (``<state_dir>/audit.jsonl``). Commands are answered with the subject's resulting grants
(``SubjectGrants``); bad input gets an ``ErrorReply`` whose ``error`` is one of UnknownSubject,
UnknownRole, UnknownAction, InvalidSubject, InvalidPattern, InvalidResource, PermissionDenied,
InvalidAuditDetail, UnexpectedMessage.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocols._base import Message

__all__ = [
    "COMMAND_PATH",
    "SYSTEM_SUBJECT",
    "AccessDenied",
    "AccessGranted",
    "AccessInbox",
    "AccessReply",
    "AppendAudit",
    "AuditStatistics",
    "AuditVerification",
    "CheckAccess",
    "EnsurePermissions",
    "GetAuditStats",
    "GetSubject",
    "GrantRole",
    "RevokePermissions",
    "RevokeRole",
    "SetAgentPermissions",
    "SubjectGrants",
    "VerifyAudit",
]

#: The built-in superuser: the program that started the tree acts as it.
SYSTEM_SUBJECT = "system"

#: Where ``run_command`` looks up a program named without a directory (its scrubbed PATH); a
#: program glob without a ``/`` matches only programs found here.
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"


# --- Decisions ------------------------------------------------------------------------------


class CheckAccess(Message):
    """May I (or ``subject``) do ``action`` on ``resource``? Answered AccessGranted or
    AccessDenied.

    ``subject`` None: the verified sender itself. Naming another subject needs
    admin.permissions. Paths are resolved (``..``, repeated slashes, symlinks) against the real
    filesystem before they are matched, so a path that leads outside every allowed tree is
    denied.
    """

    kind: Literal["access.check_access"] = "access.check_access"
    subject: str | None = None
    action: str
    resource: str = ""
    tool: str | None = Field(
        default=None,
        description="the tool being called: its name must match the subject's tool globs too; "
        "for run_command, execute's resource is the program (an absolute path)",
    )


class AccessGranted(Message):
    """The action is allowed; ``reason`` says which role and which pattern allowed it.

    ``resolved`` is the path that was matched (after normalisation), or the resource itself
    for non-path actions; ``audit_seq`` is the decision's entry in the audit log.
    """

    kind: Literal["access.access_granted"] = "access.access_granted"
    subject: str
    action: str
    resource: str
    resolved: str
    reason: str
    audit_seq: int
    network: bool = Field(
        default=False,
        description="the subject's network switch: a command runs without a network unless on",
    )


class AccessDenied(Message):
    """The action is denied; ``reason`` says why (unknown subject, no role, no matching scope)."""

    kind: Literal["access.access_denied"] = "access.access_denied"
    subject: str
    action: str
    resource: str
    resolved: str
    reason: str
    audit_seq: int


# --- Administration -------------------------------------------------------------------------


class GrantRole(Message):
    """Give ``subject`` the role ``role`` (creating the subject); the sender needs admin.grant.

    Only a superuser grants the superuser role.
    """

    kind: Literal["access.grant_role"] = "access.grant_role"
    subject: str
    role: str


class RevokeRole(Message):
    """Take the role ``role`` from ``subject`` (a no-op if not held); needs admin.grant."""

    kind: Literal["access.revoke_role"] = "access.revoke_role"
    subject: str
    role: str


class SetAgentPermissions(Message):
    """Replace an agent's scope: tool globs, path patterns, network; None leaves a field as is.

    Needs admin.permissions. Tool globs use fnmatch (``fs.*``); path patterns are absolute
    (``/srv/work/**``: ``**`` spans directories, ``*`` and ``?`` stay within one). A pattern's
    literal leading directories are resolved (symlinks) when it is granted.
    """

    kind: Literal["access.set_agent_permissions"] = "access.set_agent_permissions"
    agent: str
    tools: list[str] | None = None
    paths: list[str] | None = None
    programs: list[str] | None = None
    network: bool | None = None


class EnsurePermissions(Message):
    """The lifecycle's step: make sure ``agent`` has at least these grants (idempotent).

    Adds the tools, the programs ``run_command`` may run, the ``workspace`` path pattern (the
    agent's temp directory is inside it: no ``/tmp``), network when ``network`` is True (False
    leaves it as it is) and the role. Needs admin.permissions and admin.grant.
    """

    kind: Literal["access.ensure_permissions"] = "access.ensure_permissions"
    agent: str
    tools: list[str]
    workspace: str
    programs: list[str] = Field(default_factory=list)
    network: bool = False
    role: str = "operator"


class RevokePermissions(Message):
    """Take every grant from ``agent`` (roles, tools, programs, paths, network): its run has
    ended. Needs admin.permissions and admin.grant; audited and replayed like any change."""

    kind: Literal["access.revoke_permissions"] = "access.revoke_permissions"
    agent: str


class GetSubject(Message):
    """What does ``subject`` hold? Answered SubjectGrants, or UnknownSubject."""

    kind: Literal["access.get_subject"] = "access.get_subject"
    subject: str


class SubjectGrants(Message):
    """A subject's roles, the actions they grant, and its scope."""

    kind: Literal["access.subject_grants"] = "access.subject_grants"
    subject: str
    roles: list[str]
    actions: list[str]
    tools: list[str]
    paths: list[str]
    network: bool
    programs: list[str] = Field(default_factory=list)


# --- The audit log --------------------------------------------------------------------------


class AppendAudit(Message):
    """Another actor records a fact in the audit log (e.g. the scheduler's reaps); answered Ok.

    The entry's actor is the verified sender; ``actor`` (who the fact is about, when that is
    someone else) is kept in the entry's detail as ``about``.

    ``detail`` must be JSON-able (no bytes, no NaN): otherwise InvalidAuditDetail.
    """

    kind: Literal["access.append_audit"] = "access.append_audit"
    actor: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)


class GetAuditStats(Message):
    """Ask for the audit log's statistics (for ``understudy status``)."""

    kind: Literal["access.get_audit_stats"] = "access.get_audit_stats"


class AuditStatistics(Message):
    """The audit log: its file, how many entries it holds, the hash of the last one.

    ``problems_at_start`` counts the problems verification found when the access manager
    started (0: the chain was intact); ``subjects`` counts the known subjects.
    """

    kind: Literal["access.audit_statistics"] = "access.audit_statistics"
    path: str
    entries: int
    last_hash: str
    problems_at_start: int
    subjects: int


class VerifyAudit(Message):
    """Verify the whole audit log now; answered AuditVerification."""

    kind: Literal["access.verify_audit"] = "access.verify_audit"


class AuditVerification(Message):
    """The result of verifying an audit log.

    ``problems`` lists ``(index, description)`` pairs, index being the 0-based line of the
    entry at fault; ``ok`` is True when there are none.
    """

    kind: Literal["access.audit_verification"] = "access.audit_verification"
    ok: bool
    entries: int
    problems: list[tuple[int, str]] = Field(default_factory=list)


#: What the access manager accepts.
AccessInbox = Annotated[
    CheckAccess
    | GrantRole
    | RevokeRole
    | SetAgentPermissions
    | EnsurePermissions
    | RevokePermissions
    | GetSubject
    | AppendAudit
    | GetAuditStats
    | VerifyAudit,
    Field(discriminator="kind"),
]

#: What it answers (besides ``ErrorReply`` and ``Ok``).
AccessReply = Annotated[
    AccessGranted | AccessDenied | SubjectGrants | AuditStatistics | AuditVerification,
    Field(discriminator="kind"),
]
