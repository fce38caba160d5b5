"""The judge on hand-made workspaces: what it checks, what it runs, what it cannot vouch for."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.agents.agent_tools import ToolOutcome
from actors.agents.judge import judge_workspace, sandbox_runner

PRIMES = """\
def first_primes(count):
    found, n = [], 2
    while len(found) < count:
        if all(n % p for p in found):
            found.append(n)
        n += 1
    return found


for p in first_primes(10):
    print(p)
"""
# Runs cleanly, prints ten numbers: the odd numbers from 3, not the primes.
WRONG_PRIMES = "for n in range(10):\n    print(2 * n + 3)\n"


def _workspace(tmp_path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def _quick(argv: list[str], workspace: str, timeout: float) -> ToolOutcome:
    del timeout
    return sandbox_runner(argv, workspace, 2.0)


def test_a_right_program_is_run_and_its_output_matches(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"primes.py": PRIMES})

    judged = judge_workspace(
        [
            "primes.py exists",
            "primes.py is valid Python",
            "running primes.py prints the first 10 primes",
        ],
        ws,
    )

    assert 1.0 == judged.score
    assert [] == judged.unmet


def test_a_wrong_program_that_runs_but_prints_the_wrong_numbers_is_unmet(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"primes.py": WRONG_PRIMES})
    criteria = ["primes.py is valid Python", "running primes.py prints the first 10 primes"]

    judged = judge_workspace(criteria, ws)

    assert ["primes.py is valid Python"] == judged.met
    assert ["running primes.py prints the first 10 primes"] == judged.unmet
    assert 0.5 == judged.score
    assert "2 3 5 7 11 13 17 19 23 29" in judged.feedback()


def test_a_program_that_does_not_compile_or_fails_or_hangs_is_unmet(tmp_path: Path) -> None:
    ws = _workspace(
        tmp_path,
        {
            "broken.py": "def f(:\n",
            "crash.py": "raise SystemExit(3)\n",
            "forever.py": "while True:\n    pass\n",
        },
    )

    judged = judge_workspace(
        [
            "broken.py is valid Python",
            "running crash.py prints the factorial of 5",
            "running forever.py prints the factorial of 5",
        ],
        ws,
        runner=_quick,
    )

    assert [] == judged.met
    assert 3 == len(judged.unmet)
    feedback = judged.feedback()
    assert "SyntaxError" in feedback
    assert "exit status 3" in feedback
    assert "CommandTimeout" in feedback


def test_a_program_cannot_reach_the_network_from_the_sandbox(tmp_path: Path) -> None:
    fetch = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
        "    print('online')\n"
        "except OSError:\n"
        "    print(120)\n"
    )
    ws = _workspace(tmp_path, {"f.py": fetch})

    judged = judge_workspace(["running f.py prints the factorial of 5"], ws, runner=_quick)

    assert ["running f.py prints the factorial of 5"] == judged.met


def test_without_a_runner_the_output_of_a_program_is_unverified(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"primes.py": PRIMES})

    judged = judge_workspace(["running primes.py prints the first 10 primes"], ws, runner=None)

    assert ["running primes.py prints the first 10 primes"] == judged.unverified
    assert 0.0 == judged.score


@pytest.mark.parametrize(
    ("files", "criterion", "verdict"),
    [
        ({"p.json": '{"name": "a", "age": 3}'}, "p.json has the fields name and age", "met"),
        ({"p.json": '{"name": "a"}'}, "p.json has the fields name and age", "unmet"),
        ({"p.json": "name: a"}, "p.json is valid JSON", "unmet"),
        ({"c.yaml": "host: h\nport: 1\n"}, "c.yaml has the fields host and port", "met"),
        ({"t.csv": "a,b\n1,2\n3,4\n"}, "t.csv has the columns a and b", "met"),
        ({"t.csv": "a,b\n1,2\n3,4\n"}, "t.csv has 3 rows", "unmet"),
        ({"h.txt": "one\ntwo\nthree\n"}, "h.txt has 3 lines", "met"),
        ({"h.txt": "one\ntwo\n"}, "h.txt has 3 lines", "unmet"),
        ({"a.txt": "x\n", "b.txt": "x\n"}, "b.txt is a copy of a.txt", "met"),
        ({"a.txt": "x\n", "b.txt": "y\n"}, "b.txt is a copy of a.txt", "unmet"),
        ({}, "h.txt exists", "unmet"),
        ({"h.txt": "text"}, "sub/h.txt exists", "unmet"),
        ({"h.txt": "a fine poem"}, "the poem is moving", "unverified"),
        ({"h.txt": "a fine poem"}, "the agent says it is done", "unverified"),
    ],
)
def test_checks_on_hand_made_workspaces(
    tmp_path: Path, files: dict[str, str], criterion: str, verdict: str
) -> None:
    ws = _workspace(tmp_path, files)

    judged = judge_workspace([criterion], ws)

    assert [verdict] == [v.verdict for v in judged.verdicts]


def test_a_goal_as_a_criterion_is_met_only_when_all_its_checks_are(tmp_path: Path) -> None:
    goal = "write a haiku about rain to h.txt"
    good = _workspace(tmp_path / "good", {"h.txt": "Soft rain on the roof\nline two\nline three\n"})
    short = _workspace(tmp_path / "short", {"h.txt": "Soft rain on the roof\nline two\n"})

    assert ["met"] == [v.verdict for v in judge_workspace([goal], good).verdicts]
    assert ["unmet"] == [v.verdict for v in judge_workspace([goal], short).verdicts]


def test_the_score_is_the_share_of_all_criteria_met(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"h.txt": "one\ntwo\nthree\n"})

    judged = judge_workspace(
        ["h.txt exists", "h.txt has 3 lines", "h.txt has 4 lines", "it is lovely"], ws
    )

    assert 0.5 == judged.score
    assert ["it is lovely"] == judged.unverified
    assert 1.0 == judge_workspace([], ws).score
