"""The agent's tools: what each one needs from the access manager, and running it.

Tools (the names and JSON schemas the model sees come from ``protocols.prompts``)
    read_file(path)            action ``read`` on the path; the file's text (at most 64 KiB)
    write_file(path, content)  action ``write`` on the path; creates missing parent directories
    list_directory(path)       action ``list`` on the path; one entry per line, ``/`` after dirs
    run_command(command)       action ``execute`` on the command line; ``/bin/sh -c`` in the
                               workspace, output and exit status (only with allow_commands)

Relative paths are taken inside the run's workspace; an empty ``list_directory`` path is the
workspace itself. The access manager resolves the path (``..``, symlinks) when it decides, and
the tool then works on that resolved path, opened with ``O_NOFOLLOW``: a symlink planted in the
last component after the check makes the call fail instead of leading elsewhere.

``plan_tool`` is pure (what to check); ``execute_tool`` does the I/O. Neither raises for bad
input or failing I/O: each failure is a ``ToolOutcome`` with ``ok`` False and an
``ERROR <Name>: <message>`` text, which is what the model reads.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Final

from protocols.prompts import format_tool_error

__all__ = [
    "COMMAND_TIMEOUT",
    "OUTPUT_LIMIT",
    "READ_LIMIT",
    "TOOLS",
    "ToolArgumentError",
    "ToolOutcome",
    "ToolPlan",
    "execute_tool",
    "in_workspace",
    "plan_tool",
]

READ_LIMIT: Final = 64 * 1024
OUTPUT_LIMIT: Final = 16 * 1024
COMMAND_TIMEOUT: Final = 30.0

#: Each tool's required string arguments and the access action it needs.
TOOLS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "read_file": (("path",), "read"),
    "write_file": (("path", "content"), "write"),
    "list_directory": ((), "list"),
    "run_command": (("command",), "execute"),
}


@dataclass(frozen=True)
class ToolPlan:
    """What a tool call needs checked: ``action`` on ``resource`` (an absolute path or a
    command)."""

    action: str
    resource: str


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call: the text the model reads, and a file it wrote, if any."""

    ok: bool
    output: str
    written: str | None = None


class ToolArgumentError(ValueError):
    """A tool call's arguments do not fit the tool (missing, not text, NUL characters)."""


def in_workspace(path: str, workspace: str) -> str:
    """Return ``path`` as an absolute path: relative paths (and ``""``) are inside ``workspace``."""
    if not path:
        return workspace
    if posixpath.isabs(path):
        return path
    return posixpath.join(workspace, path)


def plan_tool(name: str, arguments: dict[str, Any], workspace: str) -> ToolPlan:
    """Return what must be checked before ``name`` runs with ``arguments``.

    Raises:
        ToolArgumentError: a required argument is missing or not a string, a path or command
            contains a NUL character, or a command is empty.
        KeyError: ``name`` is not a tool.
    """
    required, action = TOOLS[name]
    for key in required:
        value = arguments.get(key)
        if not isinstance(value, str):
            got = "missing" if value is None else type(value).__name__
            msg = f"{name} needs a string argument {key!r}, got {got}"
            raise ToolArgumentError(msg)
    if name == "run_command":
        command = str(arguments["command"])
        if not command.strip() or "\x00" in command:
            msg = "run_command needs a non-empty command without NUL characters"
            raise ToolArgumentError(msg)
        return ToolPlan(action, command)
    path = arguments.get("path", "")
    if not isinstance(path, str):
        msg = f"{name} needs a string argument 'path', got {type(path).__name__}"
        raise ToolArgumentError(msg)
    if "\x00" in path:
        msg = f"{name}: the path contains a NUL character"
        raise ToolArgumentError(msg)
    return ToolPlan(action, in_workspace(path, workspace))


def _error(name: str, message: str) -> ToolOutcome:
    return ToolOutcome(ok=False, output=format_tool_error(name, message))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def execute_tool(
    name: str, arguments: dict[str, Any], target: str, *, workspace: str, timeout: float
) -> ToolOutcome:
    """Run tool ``name`` on ``target`` (the resolved path, or the command line).

    Args:
        name: the tool.
        arguments: the call's arguments (``content`` for write_file).
        target: what the access manager allowed: the resolved absolute path, or the command.
        workspace: the run's workspace (the working directory of commands).
        timeout: seconds a command may run.

    Returns:
        The outcome; failures are outcomes too, never exceptions.
    """
    try:
        if name == "read_file":
            return _read(target)
        if name == "write_file":
            return _write(target, str(arguments["content"]))
        if name == "list_directory":
            return _list(target)
        if name == "run_command":
            return _run(target, workspace, timeout)
    except OSError as exc:
        error = "FileNotFound" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        return _error(error, f"{target}: {exc.strerror or exc}")
    return _error("UnknownTool", f"no tool {name!r}")


def _read(path: str) -> ToolOutcome:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(READ_LIMIT + 1)
    text = data[:READ_LIMIT].decode("utf-8", errors="replace")
    if len(data) > READ_LIMIT:
        text += f"\n[... the file is longer than {READ_LIMIT} bytes; the rest is not shown]"
    return ToolOutcome(ok=True, output=text)


def _write(path: str, content: str) -> ToolOutcome:
    parent = posixpath.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return ToolOutcome(ok=True, output=f"wrote {len(content)} characters to {path}", written=path)


def _list(path: str) -> ToolOutcome:
    with os.scandir(path) as entries:
        names = sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries)
    return ToolOutcome(ok=True, output="\n".join(names) if names else "(empty directory)")


def _run(command: str, workspace: str, timeout: float) -> ToolOutcome:
    if not os.path.isdir(workspace):
        return _error("NoWorkspace", f"the workspace {workspace} is not a directory")
    # A session of its own, so that a timeout kills the command's children too.
    proc = subprocess.Popen(  # noqa: S603 - gated by allow_commands and the access manager
        ["/bin/sh", "-c", command],
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _error("CommandTimeout", f"{command!r} did not finish within {timeout:g}s")
    out = stdout.decode("utf-8", errors="replace")
    text = _clip(out, OUTPUT_LIMIT)
    if proc.returncode != 0:
        return ToolOutcome(
            ok=False,
            output=format_tool_error(
                "CommandFailed", f"exit status {proc.returncode}\n{text}".rstrip()
            ),
        )
    return ToolOutcome(ok=True, output=text or "(no output)")
