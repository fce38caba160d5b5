"""Access manager: answers CheckAccess, administers roles and scopes, keeps the audit log.

Topology entry (default path ``root/system/access``)::

    - {id: access, start: "actors.services.access_manager:AccessManager",
       args: {audit_file: audit.jsonl, fsync: false}}

    audit_file  the audit log, relative to the topology's state directory (default audit.jsonl)
    fsync       fsync after every entry (default false: an entry survives the access manager's
                process dying at once, but not the machine losing power)

Who asks is the sender the seam verified (``self.sender``: an actor's path with its spec's
roles, a logged-in principal, or ``system``), never a field of the message; the roles an
identity carries count as held. A sender that cannot be identified is refused
(PermissionDenied).

Every decision (type ``decision``), every administrative change and refusal (type ``admin``)
and every AppendAudit (type ``external``) becomes one entry of the hash-chained log before the
reply is sent; if the entry cannot be written the handler raises, the asker gets ActorCrashed
and nothing is granted (fail closed). Grants are durable through the log itself: at start the
manager verifies the file, continues its chain from the last line, and replays its intact
``admin`` entries in order (path patterns as recorded: resolved once, when granted; so a
start costs one pass over the file). A broken chain is logged (``audit_chain_broken``) and counted
in
AuditStatistics.problems_at_start; it is never rewritten. The rules themselves (roles,
actions, patterns) are documented in ``actors.services.access_policy``; the file format in
``actors.services.access_audit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from actors.core.keyring import Keyring
from actors.core.worker import Worker
from actors.services.access_audit import AuditLog, EntryType, InvalidAuditDetail, verify_audit_log
from actors.services.access_policy import AccessPolicy, PermissionDenied, PolicyError
from protocols._base import Message
from protocols.access import (
    AccessDenied,
    AccessGranted,
    AppendAudit,
    AuditStatistics,
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
from protocols.common import ErrorName, ErrorReply, Ok
from protocols.identity import Identity

__all__ = [
    "DEFAULT_AUDIT_FILE",
    "AccessManager",
    "AdminCommand",
]

log = structlog.get_logger("understudy.access")

DEFAULT_AUDIT_FILE = "audit.jsonl"

AdminCommand = GrantRole | RevokeRole | SetAgentPermissions | EnsurePermissions | RevokePermissions


class AccessManager(Worker):
    """The access manager worker (``actors.services.access_manager:AccessManager``)."""

    verify_senders = True

    _audit: AuditLog
    _policy: AccessPolicy
    _problems_at_start: int

    def on_start(self) -> None:
        """Open the audit log, report a broken chain, and replay the grants it records."""
        self._log = log.bind(actor=self.path)
        path = self.state_dir / str(self.args.get("audit_file", DEFAULT_AUDIT_FILE))
        self._audit, report = AuditLog.open(
            path,
            keyring=Keyring(self.secret_file),
            clock=time.time,
            fsync=bool(self.args.get("fsync", False)),
        )
        self._problems_at_start = len(report.problems)
        if report.problems:
            index, what = report.problems[0]
            self._log.error(
                "audit_chain_broken",
                path=str(path),
                problems=len(report.problems),
                first_index=index,
                first_problem=what,
            )
        if report.repaired_tail:
            self._log.warning("audit_tail_completed", path=str(path))
        self._policy = AccessPolicy()
        replayed = sum(self._replay(entry) for entry in report.admin_entries)
        self._log.info(
            "access_manager_started",
            path=str(path),
            entries=self._audit.entries,
            replayed=replayed,
            subjects=len(self._policy.subjects),
        )

    def on_stop(self, reason: str) -> None:
        """Close the audit file."""
        self._audit.close()

    # --- handle: the messages we accept ---------------------------------------------------

    def handle(self, message: Message) -> Message | None:
        """Answer one access-protocol message; bad input gets a typed ErrorReply."""
        try:
            match message:
                case CheckAccess():
                    return self._check(message, self._sender_identity())
                case (
                    GrantRole()
                    | RevokeRole()
                    | SetAgentPermissions()
                    | EnsurePermissions()
                    | RevokePermissions()
                ):
                    return self._administer(message, self._sender_identity())
                case GetSubject():
                    return self._grants(message.subject)
                case AppendAudit():
                    return self._append_external(message, self._sender_identity())
                case GetAuditStats():
                    return self._statistics()
                case VerifyAudit():
                    return verify_audit_log(self._audit.path, keys=self._audit.keyring.keys)
                case _:
                    self._log.warning("unexpected_message", kind=message.kind)
                    text = f"the access manager does not handle {message.kind!r}"
                    return ErrorReply(error=ErrorName.UNEXPECTED_MESSAGE, message=text)
        except (PolicyError, InvalidAuditDetail) as exc:
            self._log.info(
                "access_request_rejected", kind=message.kind, error=exc.error, detail=str(exc)
            )
            return ErrorReply(error=exc.error, message=str(exc))

    def _sender_identity(self) -> Identity:
        """The verified sender of the message being handled.

        Raises:
            PermissionDenied: the sender is not an actor of this tree nor a logged-in principal.
        """
        identity = self.sender
        if identity is None:
            msg = (
                "the sender could not be identified (not an actor of this tree nor a "
                "logged-in principal); access requests need a verified sender"
            )
            raise PermissionDenied(msg)
        return identity

    def _check(self, msg: CheckAccess, asker: Identity) -> Message:
        subject = msg.subject if msg.subject is not None else asker.name
        own = subject == asker.name
        if not own:
            try:
                self._policy.authorize(asker.name, "admin.permissions", extra_roles=asker.roles)
            except PermissionDenied as exc:
                msg_text = f"checking the access of {subject!r} (not the sender): {exc}"
                raise PermissionDenied(msg_text) from exc
        extra = asker.roles if own else ()
        decision = self._policy.check(
            subject, msg.action, msg.resource, tool=msg.tool, extra_roles=extra
        )
        event = "access_granted" if decision.allowed else "access_denied"
        detail: dict[str, Any] = {
            "action": msg.action,
            "tool": msg.tool,
            "resource": msg.resource,
            "resolved": decision.resolved,
            "reason": decision.reason,
        }
        if not own:
            detail["asked_by"] = asker.name
        entry = self._append("decision", subject, event, detail)
        self._log.info(
            event,
            subject=subject,
            action=msg.action,
            resource=msg.resource,
            reason=decision.reason,
            audit_seq=entry["seq"],
        )
        common = {
            "subject": subject,
            "action": msg.action,
            "resource": msg.resource,
            "resolved": decision.resolved,
            "reason": decision.reason,
            "audit_seq": entry["seq"],
        }
        if not decision.allowed:
            return AccessDenied(**common)
        held = self._policy.holder(subject, extra)
        return AccessGranted(**common, network=bool(held and held.network))

    def _administer(self, msg: AdminCommand, by: Identity) -> Message:
        """Authorise the sender, apply the change, audit it (or the refusal), answer the grants."""
        subject = msg.subject if isinstance(msg, GrantRole | RevokeRole) else msg.agent
        try:
            event, detail = self._apply(msg, by)
        except PermissionDenied as exc:
            self._append(
                "admin",
                by.name,
                "admin_denied",
                {"command": msg.kind, "subject": subject, "reason": str(exc)},
            )
            self._log.warning(
                "admin_denied", by=by.name, command=msg.kind, subject=subject, reason=str(exc)
            )
            raise
        entry = self._append("admin", by.name, event, {"subject": subject, **detail})
        self._log.info(event, by=by.name, subject=subject, audit_seq=entry["seq"], **detail)
        if isinstance(msg, RevokePermissions):
            return SubjectGrants(
                subject=subject, roles=[], actions=[], tools=[], paths=[], network=False
            )
        return self._grants(subject)

    def _apply(self, msg: AdminCommand, by: Identity) -> tuple[str, dict[str, Any]]:
        policy = self._policy
        roles = by.roles
        match msg:
            case GrantRole():
                policy.authorize(by.name, "admin.grant", role=msg.role, extra_roles=roles)
                changed = policy.grant_role(msg.subject, msg.role)
                return "role_granted", {"role": msg.role, "changed": changed}
            case RevokeRole():
                policy.authorize(by.name, "admin.grant", role=msg.role, extra_roles=roles)
                changed = policy.revoke_role(msg.subject, msg.role)
                return "role_revoked", {"role": msg.role, "changed": changed}
            case SetAgentPermissions():
                policy.authorize(by.name, "admin.permissions", extra_roles=roles)
                paths = (
                    None if msg.paths is None else [policy.resolve_pattern(p) for p in msg.paths]
                )
                changed = policy.set_permissions(
                    msg.agent,
                    tools=msg.tools,
                    paths=paths,
                    network=msg.network,
                    programs=msg.programs,
                )
                return "permissions_set", {
                    "tools": msg.tools,
                    "paths": paths,
                    "programs": msg.programs,
                    "network": msg.network,
                    "changed": changed,
                }
            case EnsurePermissions():
                policy.authorize(
                    by.name, "admin.permissions", "admin.grant", role=msg.role, extra_roles=roles
                )
                workspace = policy.resolve_pattern(msg.workspace)
                changed = policy.ensure_permissions(
                    msg.agent,
                    tools=msg.tools,
                    programs=msg.programs,
                    workspace=workspace,
                    network=msg.network,
                    role=msg.role,
                )
                return "permissions_ensured", {
                    "tools": msg.tools,
                    "programs": msg.programs,
                    "workspace": workspace,
                    "network": msg.network,
                    "role": msg.role,
                    "changed": changed,
                }
            case RevokePermissions():
                policy.authorize(by.name, "admin.permissions", "admin.grant", extra_roles=roles)
                changed = policy.revoke_permissions(msg.agent)
                return "permissions_revoked", {"changed": changed}

    def _replay(self, entry: dict[str, Any]) -> bool:
        """Apply one admin entry from the log (authorised when it was written).

        Its patterns were resolved when granted and are applied as recorded, never resolved
        again: a symlink planted since cannot redirect a grant at the next start.
        """
        appliers: dict[str, Callable[[dict[str, Any]], object]] = {
            "role_granted": lambda d: self._policy.grant_role(d["subject"], d["role"]),
            "role_revoked": lambda d: self._policy.revoke_role(d["subject"], d["role"]),
            "permissions_set": lambda d: self._policy.set_permissions(
                d["subject"],
                tools=d["tools"],
                paths=d["paths"],
                network=d["network"],
                programs=d.get("programs"),
            ),
            "permissions_ensured": lambda d: self._policy.ensure_permissions(
                d["subject"],
                tools=d["tools"],
                programs=d.get("programs", []),
                workspace=d["workspace"],
                network=d["network"],
                role=d["role"],
                tmp=d.get("tmp"),
            ),
            "permissions_revoked": lambda d: self._policy.revoke_permissions(d["subject"]),
        }
        apply = appliers.get(entry["action"])
        if apply is None:
            return False
        try:
            apply(entry["detail"])
        except (PolicyError, KeyError, TypeError) as exc:
            self._log.warning(
                "audit_replay_skipped", seq=entry["seq"], action=entry["action"], error=repr(exc)
            )
            return False
        return True

    def _append_external(self, msg: AppendAudit, by: Identity) -> Message:
        if not msg.actor or not msg.action:
            msg_text = f"actor and action must be non-empty, got {msg.actor!r}, {msg.action!r}"
            return ErrorReply(error=InvalidAuditDetail.error, message=msg_text)
        detail = msg.detail if msg.actor == by.name else {**msg.detail, "about": msg.actor}
        self._append("external", by.name, msg.action, detail)
        return Ok()

    def _append(
        self, entry_type: EntryType, actor: str, action: str, detail: dict[str, Any]
    ) -> dict[str, Any]:
        entry = self._audit.append(entry_type, actor, action, detail)
        self._log.debug(
            "audit_appended", seq=entry["seq"], type=entry_type, actor=actor, audit_action=action
        )
        return entry

    def _grants(self, subject: str) -> SubjectGrants:
        held = self._policy.get(subject)
        return SubjectGrants(
            subject=subject,
            roles=sorted(held.roles),
            actions=sorted(held.actions()),
            tools=list(held.tools),
            paths=list(held.paths),
            network=held.network,
            programs=list(held.programs),
        )

    def _statistics(self) -> AuditStatistics:
        return AuditStatistics(
            path=str(self._audit.path),
            entries=self._audit.entries,
            last_hash=self._audit.last_hash,
            problems_at_start=self._problems_at_start,
            subjects=len(self._policy.subjects),
        )
