"""Access decisions, pure: roles, scopes, glob matching and path normalisation (no Thespian).

Actions (what a role may grant)
    read              read a file                          resource: an absolute path
    list              list a directory                     resource: an absolute path
    write             create, change or delete a file      resource: an absolute path
    execute           call a tool, or run a program        resource: the tool's name, or (for
                                                           the run_command tool) the program
    network           open a network connection            resource: a host or URL (any)
    task.submit       submit a task to the scheduler
    task.cancel       cancel or fail a task
    agent.spawn       start an agent
    agent.terminate   terminate an agent
    registry.write    register or unregister an agent card
    audit.read        read the audit log and its statistics
    admin.permissions set an agent's tools, paths and network
    admin.grant       grant or revoke roles (only a superuser grants or revokes superuser)

Roles (each includes the one before)
    reader      read, list
    operator    reader + write, execute, network, task.submit
    admin       operator + task.cancel, agent.spawn, agent.terminate, registry.write,
                audit.read, admin.permissions, admin.grant
    superuser   every action, and the scopes below do not apply to it

Decision (default deny), in order
    1. an unknown subject is denied;
    2. a subject whose roles do not grant the action is denied;
    3. a superuser is granted;
    4. a check that names the ``tool`` being called: the tool must match one of the subject's
       tool globs (``fnmatch``, case-sensitive), whatever the action;
    5. read/list/write: the path is resolved against the real filesystem (``os.path.realpath``:
       repeated slashes collapse, ``..`` and symlinks are followed) and must match one of the
       subject's path patterns; execute of the run_command tool: the program (an absolute
       path) must match one of its program globs (a glob with a ``/`` matches the whole path,
       one without matches the name of a program in ``COMMAND_PATH``'s directories only);
       execute without a tool: the resource is a tool name matched against the tool globs;
       network: its network switch must be on; any other action needs no scope.

Path patterns are absolute. ``**`` (a whole component) matches zero or more components, so
``/srv/work/**`` matches ``/srv/work`` and everything below it; ``*`` matches within one
component (never ``/``), ``?`` one character, ``[abc]`` / ``[!abc]`` one character of (or not
of) a set. Names starting with a dot are matched like any other. Patterns are normalised
(repeated and trailing slashes dropped); ``.`` and ``..`` components, ``**`` inside a
component, unclosed ``[`` and empty patterns are rejected (InvalidPattern). Python 3.13's
``glob.translate(recursive=True, include_hidden=True)`` has these semantics; 3.11 has not.
The literal leading directories of a pattern are resolved ONCE, when it is granted
(``resolve_pattern``): a workspace given through a symlink is stored as its real directory,
and replacing a directory by a symlink afterwards does not carry the grant elsewhere.

The subject ``system`` is built in, holds superuser, and cannot be changed. A check resolves
the path when it is made: a symlink changed afterwards is the caller's race (check, then open
with ``O_NOFOLLOW`` or re-check where it matters).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from protocols.access import COMMAND_PATH, SYSTEM_SUBJECT

SUPERUSER = "superuser"
TMP_PATTERN = "/tmp/**"  # noqa: S108 - a scope pattern granted to every agent, not a file we use

ACTIONS: dict[str, str] = {
    "read": "read a file",
    "list": "list a directory",
    "write": "create, change or delete a file",
    "execute": "call a tool",
    "network": "open a network connection",
    "task.submit": "submit a task to the scheduler",
    "task.cancel": "cancel or fail a task",
    "agent.spawn": "start an agent",
    "agent.terminate": "terminate an agent",
    "registry.write": "register or unregister an agent card",
    "audit.read": "read the audit log and its statistics",
    "admin.permissions": "set an agent's tools, paths and network",
    "admin.grant": "grant or revoke roles",
}
PATH_ACTIONS = frozenset({"read", "list", "write"})

_READER = frozenset({"read", "list"})
_OPERATOR = _READER | {"write", "execute", "network", "task.submit"}
_ADMIN = _OPERATOR | {
    "task.cancel",
    "agent.spawn",
    "agent.terminate",
    "registry.write",
    "audit.read",
    "admin.permissions",
    "admin.grant",
}
ROLES: dict[str, frozenset[str]] = {
    "reader": _READER,
    "operator": frozenset(_OPERATOR),
    "admin": frozenset(_ADMIN),
    SUPERUSER: frozenset(ACTIONS),
}

Resolver = Callable[[str], str]


# --- Errors: each becomes an ErrorReply named by ``error`` --------------------------------


class PolicyError(Exception):
    """Bad input to the policy; the ErrorReply's ``error`` is the subclass's name."""

    @property
    def error(self) -> str:
        """The name an ErrorReply carries for this error."""
        return type(self).__name__


class UnknownSubject(PolicyError):
    """No subject with that id."""


class UnknownRole(PolicyError):
    """No role with that name."""


class UnknownAction(PolicyError):
    """No action with that name."""


class InvalidSubject(PolicyError):
    """A subject id is empty or contains whitespace."""


class InvalidPattern(PolicyError):
    """A tool glob or path pattern is malformed."""


class InvalidResource(PolicyError):
    """A resource is malformed for its action (e.g. a relative path)."""


class PermissionDenied(PolicyError):
    """The sender may not make this administrative change (or could not be identified)."""


# --- Patterns -------------------------------------------------------------------------------

_GLOB_CHARS = frozenset("*?[")


def _char_class(text: str, start: int, where: str) -> tuple[str, int]:
    """Translate the ``[...]`` starting at ``text[start]``; return (regex, index after it)."""
    i = start + 1
    negate = i < len(text) and text[i] == "!"
    if negate:
        i += 1
    first = i
    # As in fnmatch, a ']' right after '[' or '[!' is a member, not the end.
    if i < len(text) and text[i] == "]":
        i += 1
    end = text.find("]", i)
    if end < 0:
        msg = f"unclosed '[' at position {start} in {where!r}"
        raise InvalidPattern(msg)
    # Escape what re would read as syntax or warn about (nested sets, set operations).
    members = re.sub(r"([\\^\[&~|])", r"\\\1", text[first:end])
    members = members.replace("--", "-\\-")  # "--" would be a future set difference
    regex = f"[^{members}/]" if negate else f"[{members}]"
    try:
        re.compile(regex)
    except re.error as exc:
        msg = f"bad character set {text[start : end + 1]!r} in {where!r}: {exc}"
        raise InvalidPattern(msg) from exc
    return regex, end + 1


def _component_regex(component: str, where: str) -> str:
    """Translate one path component: ``*`` and ``?`` never match ``/``."""
    out: list[str] = []
    i = 0
    while i < len(component):
        char = component[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            regex, i = _char_class(component, i, where)
            out.append(regex)
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class PathPattern:
    """A validated path pattern: literal leading directories, then glob components."""

    text: str
    prefix: tuple[str, ...]
    rest: tuple[str, ...]
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, real_path: str) -> bool:
        """Return True if ``real_path`` (already resolved) lies in this pattern's tree."""
        return self.regex.fullmatch("".join("/" + p for p in _components(real_path))) is not None

    def resolved(self, resolve: Resolver = os.path.realpath) -> str:
        """Return the pattern's text with its literal leading directories resolved."""
        root = resolve("/" + "/".join(self.prefix))
        # A resolved directory name may hold glob characters: make them literal again.
        literal = [re.sub(r"([*?\[])", r"[\1]", part) for part in _components(root)]
        return parse_path_pattern("/" + "/".join([*literal, *self.rest])).text


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


@functools.lru_cache(maxsize=1024)
def parse_path_pattern(pattern: str) -> PathPattern:
    """Validate and normalise a path pattern (see the module doc for the grammar).

    Raises:
        InvalidPattern: naming what is wrong with ``pattern``.
    """
    if not pattern:
        msg = "a path pattern must not be empty"
        raise InvalidPattern(msg)
    if "\x00" in pattern:
        msg = f"path pattern {pattern!r} contains a NUL character"
        raise InvalidPattern(msg)
    if not pattern.startswith("/"):
        msg = f"path pattern {pattern!r} must be absolute (start with '/')"
        raise InvalidPattern(msg)
    parts = _components(pattern)
    for part in parts:
        if part in (".", ".."):
            msg = f"path pattern {pattern!r} must not contain {part!r} components"
            raise InvalidPattern(msg)
        if "**" in part and part != "**":
            msg = f"'**' must be a whole component, got {part!r} in {pattern!r}"
            raise InvalidPattern(msg)
    literal = 0
    while literal < len(parts) and not _GLOB_CHARS & set(parts[literal]):
        literal += 1
    rest = tuple(parts[literal:])
    pieces = ["/" + re.escape(part) for part in parts[:literal]]
    pieces += [
        "(?:/[^/]+)*" if part == "**" else "/" + _component_regex(part, pattern) for part in rest
    ]
    return PathPattern(
        text="/" + "/".join(parts),
        prefix=tuple(parts[:literal]),
        rest=rest,
        regex=re.compile("".join(pieces)),
    )


def check_tool_pattern(pattern: str) -> str:
    """Validate a tool glob (fnmatch syntax) and return it.

    Raises:
        InvalidPattern: empty, whitespace or control characters, or an unclosed ``[``.
    """
    if not pattern:
        msg = "a tool pattern must not be empty"
        raise InvalidPattern(msg)
    if any(char.isspace() or not char.isprintable() for char in pattern):
        msg = f"tool pattern {pattern!r} contains whitespace or control characters"
        raise InvalidPattern(msg)
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            _regex, i = _char_class(pattern, i, pattern)
        else:
            i += 1
    return pattern


def normalise_path(resource: str, resolve: Resolver = os.path.realpath) -> str:
    """Resolve an absolute path against the filesystem: slashes, ``.``, ``..``, symlinks.

    Raises:
        InvalidResource: the path is empty, relative, or contains a NUL character.
    """
    if not resource or "\x00" in resource or not resource.startswith("/"):
        msg = f"a path resource must be an absolute path without NUL characters, got {resource!r}"
        raise InvalidResource(msg)
    # POSIX keeps a leading '//' apart; collapse it so that '//etc' is '/etc'.
    return resolve(re.sub("/+", "/", resource))


def check_subject(subject: str) -> str:
    """Validate a subject id and return it.

    Raises:
        InvalidSubject: empty, or containing whitespace or control characters.
    """
    if not subject or any(char.isspace() or not char.isprintable() for char in subject):
        msg = f"a subject id must be non-empty, without whitespace, got {subject!r}"
        raise InvalidSubject(msg)
    return subject


def check_role(role: str) -> str:
    """Return ``role`` if it exists.

    Raises:
        UnknownRole: listing the roles there are.
    """
    if role not in ROLES:
        msg = f"no role {role!r}; roles are {', '.join(ROLES)}"
        raise UnknownRole(msg)
    return role


# --- Subjects and decisions -----------------------------------------------------------------


@dataclass
class Subject:
    """What one subject holds: roles and its scope."""

    roles: set[str] = field(default_factory=set)
    tools: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    network: bool = False
    programs: list[str] = field(default_factory=list)

    def actions(self) -> set[str]:
        """Return every action the subject's roles grant."""
        return set().union(*(ROLES[role] for role in self.roles))


@dataclass(frozen=True)
class Decision:
    """The answer to a check: allowed or not, why, and the resource as it was matched."""

    allowed: bool
    reason: str
    resolved: str


def _add(existing: list[str], new: Iterable[str]) -> bool:
    changed = False
    for item in new:
        if item not in existing:
            existing.append(item)
            changed = True
    return changed


class AccessPolicy:
    """Subjects, their roles and scopes, and the decisions made from them.

    Mutating methods validate everything before they change anything and return whether the
    state changed. ``by`` checks (``authorize``) are separate, so that replaying the audit log
    applies changes that were authorised when they were made.
    """

    def __init__(self, resolve: Resolver = os.path.realpath) -> None:
        self._resolve = resolve
        self.subjects: dict[str, Subject] = {SYSTEM_SUBJECT: Subject(roles={SUPERUSER})}

    def get(self, subject: str) -> Subject:
        """Return the subject's grants.

        Raises:
            UnknownSubject: no such subject.
        """
        found = self.subjects.get(subject)
        if found is None:
            msg = f"no subject {subject!r}"
            raise UnknownSubject(msg)
        return found

    def holder(self, subject: str, extra_roles: Iterable[str] = ()) -> Subject | None:
        """Return what ``subject`` holds, counting ``extra_roles`` (the roles its verified
        identity carries: a principal's, an actor's spec's) as held; None if it holds nothing.
        """
        held = self.subjects.get(subject)
        extra = {role for role in extra_roles if role in ROLES}
        if not extra or (held is not None and extra <= held.roles):
            return held
        if held is None:
            return Subject(roles=extra)
        return Subject(
            roles=held.roles | extra,
            tools=held.tools,
            paths=held.paths,
            network=held.network,
            programs=held.programs,
        )

    def authorize(
        self,
        by: str,
        *actions: str,
        role: str | None = None,
        extra_roles: Iterable[str] = (),
    ) -> None:
        """Check that ``by`` may perform the administrative ``actions`` (and grant ``role``).

        ``extra_roles`` are the roles ``by``'s verified identity carries.

        Raises:
            PermissionDenied: naming the missing action.
        """
        holder = self.holder(by, extra_roles)
        if holder is None:
            msg = f"unknown subject {by!r} may not administer access (default deny)"
            raise PermissionDenied(msg)
        granted = holder.actions()
        for action in actions:
            if action not in granted:
                roles = ", ".join(sorted(holder.roles)) or "none"
                msg = f"{by!r} lacks {action!r} (roles: {roles})"
                raise PermissionDenied(msg)
        if role == SUPERUSER and SUPERUSER not in holder.roles:
            msg = f"only a superuser grants or revokes {SUPERUSER!r}; {by!r} is not one"
            raise PermissionDenied(msg)

    def resolve_pattern(self, pattern: str) -> str:
        """Validate ``pattern`` and resolve its literal leading directories (at grant time).

        Raises:
            InvalidPattern: naming what is wrong with ``pattern``.
        """
        return parse_path_pattern(pattern).resolved(self._resolve)

    def _mutable(self, subject: str) -> str:
        check_subject(subject)
        if subject == SYSTEM_SUBJECT:
            msg = f"the {SYSTEM_SUBJECT!r} subject is built in and cannot be changed"
            raise PermissionDenied(msg)
        return subject

    def grant_role(self, subject: str, role: str) -> bool:
        """Give ``subject`` the role (creating the subject); return True if that changed it."""
        self._mutable(subject)
        check_role(role)
        holder = self.subjects.setdefault(subject, Subject())
        changed = role not in holder.roles
        holder.roles.add(role)
        return changed

    def revoke_role(self, subject: str, role: str) -> bool:
        """Take the role from ``subject``; return True if it held it."""
        self._mutable(subject)
        check_role(role)
        holder = self.get(subject)
        changed = role in holder.roles
        holder.roles.discard(role)
        return changed

    def set_permissions(
        self,
        subject: str,
        *,
        tools: list[str] | None = None,
        paths: list[str] | None = None,
        network: bool | None = None,
        programs: list[str] | None = None,
    ) -> bool:
        """Replace the given parts of the subject's scope; return True if that changed it.

        Path patterns are stored as given (normalised); resolve them first with
        ``resolve_pattern`` where a grant should follow symlinks as they are now.
        """
        self._mutable(subject)
        new_tools = [check_tool_pattern(t) for t in tools] if tools is not None else None
        new_paths = [parse_path_pattern(p).text for p in paths] if paths is not None else None
        new_programs = [check_tool_pattern(p) for p in programs] if programs is not None else None
        holder = self.subjects.setdefault(subject, Subject())
        before = (list(holder.tools), list(holder.paths), holder.network, list(holder.programs))
        if new_tools is not None:
            holder.tools = list(dict.fromkeys(new_tools))
        if new_paths is not None:
            holder.paths = list(dict.fromkeys(new_paths))
        if network is not None:
            holder.network = network
        if new_programs is not None:
            holder.programs = list(dict.fromkeys(new_programs))
        return before != (holder.tools, holder.paths, holder.network, holder.programs)

    def revoke_permissions(self, subject: str) -> bool:
        """Take every grant from ``subject``; return True if it held any."""
        self._mutable(subject)
        holder = self.subjects.pop(subject, None)
        return holder is not None and holder != Subject()

    def ensure_permissions(
        self,
        agent: str,
        *,
        tools: list[str],
        workspace: str,
        network: bool,
        role: str,
        programs: Iterable[str] = (),
        tmp: str | None = None,
    ) -> bool:
        """Add tools, programs, the workspace, network (if True) and the role (and ``tmp``, a
        second path pattern that audit logs written before private temp directories carry).

        Returns True if that changed the agent's grants (False: it already had them all).
        """
        self._mutable(agent)
        checked_tools = [check_tool_pattern(t) for t in tools]
        checked_programs = [check_tool_pattern(p) for p in programs]
        paths = [parse_path_pattern(workspace).text]
        if tmp is not None:
            paths.append(parse_path_pattern(tmp).text)
        check_role(role)
        holder = self.subjects.setdefault(agent, Subject())
        changed = _add(holder.tools, checked_tools)
        changed = _add(holder.programs, checked_programs) or changed
        changed = _add(holder.paths, paths) or changed
        if network and not holder.network:
            holder.network = changed = True
        if role not in holder.roles:
            holder.roles.add(role)
            changed = True
        return changed

    def check(
        self,
        subject: str,
        action: str,
        resource: str,
        *,
        tool: str | None = None,
        extra_roles: Iterable[str] = (),
    ) -> Decision:
        """Decide whether ``subject`` may do ``action`` on ``resource`` (see the module doc).

        ``tool`` is the tool being called (its glob must match too); ``extra_roles`` are the
        roles ``subject``'s verified identity carries.

        Raises:
            UnknownAction: ``action`` is not one of ACTIONS.
            InvalidResource: a path action without an absolute path, or execute without a tool.
        """
        if action not in ACTIONS:
            msg = f"no action {action!r}; actions are {', '.join(ACTIONS)}"
            raise UnknownAction(msg)
        resolved = resource
        if action in PATH_ACTIONS:
            resolved = normalise_path(resource, self._resolve)
        elif action == "execute" and not resource:
            msg = "execute needs a tool name (or, for run_command, a program) as its resource"
            raise InvalidResource(msg)
        elif action == "execute" and tool == "run_command" and not resource.startswith("/"):
            msg = f"run_command's program must be an absolute path, got {resource!r}"
            raise InvalidResource(msg)
        holder = self.holder(subject, extra_roles)
        if holder is None:
            reason = f"unknown subject {subject!r} (default deny)"
            return Decision(allowed=False, reason=reason, resolved=resolved)
        if action not in holder.actions():
            roles = ", ".join(sorted(holder.roles)) or "none"
            reason = f"no role of {subject!r} grants {action!r} (roles: {roles})"
            return Decision(allowed=False, reason=reason, resolved=resolved)
        if SUPERUSER in holder.roles:
            return Decision(allowed=True, reason=f"{subject!r} is a superuser", resolved=resolved)
        if tool is not None and not any(fnmatch.fnmatchcase(tool, g) for g in holder.tools):
            reason = f"tool {tool!r} matches no allowed tool of {subject!r}"
            return Decision(allowed=False, reason=reason, resolved=resolved)
        if action == "execute" and tool == "run_command":
            return _program_scope(subject, holder, resource)
        return self._scope(subject, holder, action, resource, resolved)

    def _scope(
        self, subject: str, holder: Subject, action: str, resource: str, resolved: str
    ) -> Decision:
        """Apply the subject's scope for ``action`` (its role already grants the action)."""
        if action in PATH_ACTIONS:
            via = f" (resolved to {resolved!r})" if resolved != resource else ""
            found = next(
                (text for text in holder.paths if parse_path_pattern(text).matches(resolved)), None
            )
            allowed = found is not None
            reason = (
                f"{resource!r}{via} matches {found!r}"
                if allowed
                else f"{resource!r}{via} matches no allowed path of {subject!r}"
            )
        elif action == "execute":
            found = next(
                (glob for glob in holder.tools if fnmatch.fnmatchcase(resource, glob)), None
            )
            allowed = found is not None
            reason = (
                f"tool {resource!r} matches {found!r}"
                if allowed
                else f"tool {resource!r} matches no allowed tool of {subject!r}"
            )
        elif action == "network":
            allowed = holder.network
            reason = f"network access is {'on' if allowed else 'off'} for {subject!r}"
        else:
            allowed = True
            role = next(r for r in ROLES if r in holder.roles and action in ROLES[r])  # lowest
            reason = f"role {role!r} grants {action!r}"
        return Decision(allowed=allowed, reason=reason, resolved=resolved)


def program_matches(program: str, glob: str) -> bool:
    """Does the absolute ``program`` match a program ``glob``?

    A glob with a ``/`` matches the whole path; one without matches the program's name, and
    only for a program in one of ``COMMAND_PATH``'s directories (so ``ls`` never allows a
    ``ls`` the agent wrote into its workspace).
    """
    if "/" in glob:
        return fnmatch.fnmatchcase(program, glob)
    directory, name = os.path.split(program)
    return directory in COMMAND_PATH.split(":") and fnmatch.fnmatchcase(name, glob)


def _program_scope(subject: str, holder: Subject, program: str) -> Decision:
    found = next((g for g in holder.programs if program_matches(program, g)), None)
    if found is None:
        granted = ", ".join(holder.programs) or "none"
        reason = f"program {program!r} matches no allowed program of {subject!r} ({granted})"
        return Decision(allowed=False, reason=reason, resolved=program)
    return Decision(allowed=True, reason=f"program {program!r} matches {found!r}", resolved=program)


__all__ = [
    "ACTIONS",
    "ROLES",
    "AccessPolicy",
    "Decision",
    "InvalidPattern",
    "InvalidResource",
    "InvalidSubject",
    "PathPattern",
    "PermissionDenied",
    "PolicyError",
    "Subject",
    "UnknownAction",
    "UnknownRole",
    "UnknownSubject",
    "check_tool_pattern",
    "normalise_path",
    "parse_path_pattern",
    "program_matches",
]
