"""`understudy run` interviews the goal: a direct reply to a greeting, questions that need a
terminal or --answer, and the answers sent in the same session (the default topology)."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli import _default_tree, _DefaultTree

pytestmark = pytest.mark.integration


def _run_on_a_terminal(
    tree: _DefaultTree, goal: str, typed: str
) -> subprocess.CompletedProcess[str]:
    """Run with a pseudo-terminal as stdin, the answers already typed into it."""
    main, terminal = pty.openpty()
    try:
        os.write(main, typed.encode())
        return tree.run(goal, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(main)


def test_run_replies_to_chat_asks_for_answers_and_runs_the_clarified_goal(tmp_path: Path) -> None:
    with _default_tree(tmp_path) as tree:
        chat = tree.run("hello there")  # stdin is not a terminal
        refused = tree.run("write something")
        answered = tree.run(
            "write something", "--answer", "a haiku about rain", "--answer", "rain.txt"
        )
        skipped = tree.run("write a haiku about snow to snow.txt", "--no-interview")
        typed = _run_on_a_terminal(tree, "write something", "a haiku about hail\nhail.txt\n")

    assert 0 == chat.returncode, chat.stdout + chat.stderr
    assert "Give me a task" in chat.stdout
    assert "run " not in chat.stdout
    assert 0 != refused.returncode
    assert "stdin is not a terminal" in refused.stderr
    assert "--no-interview" in refused.stderr
    assert 0 == answered.returncode, answered.stdout + answered.stderr
    assert "goal: write a haiku about rain to rain.txt" in answered.stdout
    assert "interview finished" in answered.stdout
    assert "succeeded" in answered.stdout
    assert 0 == skipped.returncode, skipped.stdout + skipped.stderr
    assert "interview" not in skipped.stdout
    assert 0 == typed.returncode, typed.stdout + typed.stderr
    assert "What should I write" in typed.stdout  # the questions, asked on the terminal
    assert "Which file" in typed.stdout
    assert "goal: write a haiku about hail to hail.txt" in typed.stdout
    workspaces = tmp_path / ".understudy" / "workspaces"
    assert 1 == len(list(workspaces.glob("*/rain.txt")))
    assert 1 == len(list(workspaces.glob("*/snow.txt")))
    assert 1 == len(list(workspaces.glob("*/hail.txt")))
    assert 0 == tree.proc.returncode
