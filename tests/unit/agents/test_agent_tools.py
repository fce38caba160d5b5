"""The agent's tools: what they need checked, and what they do on a real filesystem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.agents.agent_tools import (
    OUTPUT_LIMIT,
    READ_LIMIT,
    ToolArgumentError,
    ToolPlan,
    execute_tool,
    in_workspace,
    plan_tool,
)


def run(name: str, target: Path | str, ws: Path, **arguments: Any) -> tuple[bool, str, str | None]:
    outcome = execute_tool(name, arguments, str(target), workspace=str(ws), timeout=10.0)
    return outcome.ok, outcome.output, outcome.written


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.txt", "/ws/a.txt"),
        ("sub/../a.txt", "/ws/sub/../a.txt"),
        ("/etc/passwd", "/etc/passwd"),
        ("", "/ws"),
    ],
)
def test_relative_paths_are_inside_the_workspace_and_left_for_the_access_manager_to_resolve(
    path: str, expected: str
) -> None:
    assert expected == in_workspace(path, "/ws")


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("read_file", {"path": "a.txt"}, ToolPlan("read", "/ws/a.txt")),
        ("write_file", {"path": "/tmp/x", "content": ""}, ToolPlan("write", "/tmp/x")),
        ("list_directory", {}, ToolPlan("list", "/ws")),
        ("list_directory", {"path": "src"}, ToolPlan("list", "/ws/src")),
        ("run_command", {"command": "ls -la"}, ToolPlan("execute", "ls -la")),
    ],
)
def test_each_tool_needs_its_action_on_its_resource(
    name: str, arguments: dict[str, Any], expected: ToolPlan
) -> None:
    assert expected == plan_tool(name, arguments, "/ws")


@pytest.mark.parametrize(
    ("name", "arguments", "match"),
    [
        ("read_file", {}, "needs a string argument 'path', got missing"),
        ("write_file", {"path": "a"}, "'content', got missing"),
        ("write_file", {"path": 3, "content": ""}, "'path', got int"),
        ("list_directory", {"path": ["a"]}, "'path', got list"),
        ("read_file", {"path": "a\x00"}, "NUL"),
        ("run_command", {"command": "  "}, "non-empty command"),
    ],
)
def test_bad_arguments_are_refused_before_any_check(
    name: str, arguments: dict[str, Any], match: str
) -> None:
    with pytest.raises(ToolArgumentError, match=match):
        plan_tool(name, arguments, "/ws")


def test_write_creates_parents_and_read_reads_it_back(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "a.txt"

    wrote = run("write_file", target, tmp_path, content="héllo\n")
    read = run("read_file", target, tmp_path)

    assert (True, f"wrote 6 characters to {target}", str(target)) == wrote
    assert (True, "héllo\n", None) == read


def test_list_marks_directories_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("")
    (tmp_path / "a").mkdir()

    assert (True, "a/\nb.txt", None) == run("list_directory", tmp_path, tmp_path)
    assert (True, "(empty directory)", None) == run("list_directory", tmp_path / "a", tmp_path)


def test_failures_are_error_results_not_exceptions(tmp_path: Path) -> None:
    ok, output, _ = run("read_file", tmp_path / "missing.txt", tmp_path)
    ok_dir, output_dir, _ = run("read_file", tmp_path, tmp_path)

    assert not ok
    assert output.startswith("ERROR FileNotFound: ")
    assert not ok_dir
    assert output_dir.startswith("ERROR IsADirectoryError: ")


def test_a_symlink_in_the_last_component_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    link = tmp_path / "ws" / "link.txt"
    link.parent.mkdir()
    link.symlink_to(secret)

    read = run("read_file", link, tmp_path)
    write = run("write_file", link, tmp_path, content="overwritten")

    assert not read[0]
    assert "secret" not in read[1]
    assert not write[0]
    assert "secret" == secret.read_text()


def test_a_long_file_is_cut_at_the_read_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x" * (READ_LIMIT + 10))

    ok, output, _ = run("read_file", big, tmp_path)

    assert ok
    assert output.startswith("x" * READ_LIMIT + "\n[... the file is longer")


def test_commands_run_in_the_workspace_and_report_failures(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("")

    listed = run("run_command", "ls", tmp_path)
    failed = run("run_command", "echo oops >&2; exit 3", tmp_path)
    nowhere = run("run_command", "ls", tmp_path / "missing")

    assert (True, "here.txt\n", None) == listed
    assert (False, "ERROR CommandFailed: exit status 3\noops", None) == failed
    assert not nowhere[0]
    assert nowhere[1].startswith("ERROR NoWorkspace: ")


def test_a_command_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    outcome = execute_tool("run_command", {}, "sleep 5", workspace=str(tmp_path), timeout=0.2)

    assert not outcome.ok
    assert "ERROR CommandTimeout: 'sleep 5' did not finish within 0.2s" == outcome.output


def test_long_command_output_is_clipped(tmp_path: Path) -> None:
    ok, output, _ = run(
        "run_command", f"head -c {OUTPUT_LIMIT + 5} /dev/zero | tr '\\0' y", tmp_path
    )

    assert ok
    assert output.endswith("[... 5 more characters not shown]")


def test_an_unknown_tool_is_an_error_result(tmp_path: Path) -> None:
    assert (False, "ERROR UnknownTool: no tool 'rm'", None) == run("rm", tmp_path, tmp_path)
