"""What a write should hold, the criteria that check it, and the checks on a file's text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.artefacts import check_content, criteria_for, parse_criterion, recognise
from protocols.goals import criteria_for_goal, files_asked, plan_goal


@pytest.mark.parametrize(
    ("what", "path", "kind", "detail"),
    [
        ("a haiku about rain", "h.txt", "poem", 3),
        ("a limerick about cats", "l.txt", "poem", 5),
        ("a sonnet about tides", "s.md", "poem", 14),
        ("a 6-line poem about snow", "p.txt", "poem", 6),
        ("notes about restarts", "n.md", "prose", None),
        ("a JSON file with the fields a, b and c", "x.json", "json", ("a", "b", "c")),
        ("a config with the keys host and port", "c.yaml", "yaml", ("host", "port")),
        ("a table with the columns x and y", "t.csv", "csv", ("x", "y")),
        ("a script that prints the first 3 primes", "p.py", "program", None),
        ("a script that scrapes a website", "s.py", "unsupported", None),
        ("a program that prints the first 3 primes", "p.rs", "unsupported", None),
        ("a picture of a cat", "cat.png", "unsupported", None),
        ("a sonnet in Klingon about quantum chromodynamics", "q.txt", "unsupported", None),
        ("a haiku about the sea in French", "sea.txt", "unsupported", None),
    ],
)
def test_a_write_is_recognised_by_its_words_and_its_extension(
    what: str, path: str, kind: str, detail: object
) -> None:
    artefact = recognise(what, path, "topic")

    assert kind == artefact.kind
    if kind == "poem":
        assert detail == artefact.lines
    if kind in {"json", "yaml", "csv"}:
        assert detail == artefact.fields
    if kind == "unsupported":
        assert "cannot" in artefact.reason


def test_a_goals_criteria_are_checks_on_the_files_it_writes() -> None:
    goal = (
        "write a python script that prints the first 10 primes to primes.py and then "
        "write a CSV file with the columns a and b and 2 rows to t.csv"
    )

    assert [
        "primes.py exists",
        "primes.py is valid Python",
        "running primes.py prints the first 10 primes",
        "t.csv exists",
        "t.csv is valid CSV",
        "t.csv has the columns a and b",
        "t.csv has 2 rows",
    ] == criteria_for_goal(goal)
    assert ["primes.py", "t.csv"] == files_asked(goal)


def test_a_goal_that_writes_nothing_has_no_derived_criteria() -> None:
    assert [] == criteria_for_goal("list the files in src")
    assert [] == files_asked("What is a supervisor?")


@pytest.mark.parametrize(
    "goal",
    [
        "write a haiku about supervision to haiku.txt",
        "write a JSON file with the fields name and age to p.json",
        "write a YAML file with the keys a and b to c.yml",
        "write a CSV file with the columns a, b and c and 4 rows to t.csv",
        "write a python script that prints the gcd of 12 and 18 to g.py",
        'write "hello there" to hello.txt',
        "read a.txt and copy its contents to b.txt",
        "write notes about restart intensity to notes.md",
    ],
)
def test_every_derived_criterion_reads_back_as_a_check_on_its_file(goal: str) -> None:
    [write] = [a for a in plan_goal(goal) if a.tool == "write_file"]

    for criterion in criteria_for_goal(goal):
        check = parse_criterion(criterion)
        assert check is not None, criterion
        assert write.target == check.path


@pytest.mark.parametrize(
    ("criterion", "content", "verdict"),
    [
        ("p.json is valid JSON", '{"a": 1}', True),
        ("p.json is valid JSON", '{"a": 1,', False),
        ("p.json has the fields a and b", '{"a": 1, "b": 2}', True),
        ("p.json has the fields a and b", '{"a": 1}', False),
        ("p.json has the fields a and b", "[1, 2]", False),
        ("c.yaml has the fields a", "a: 1\n", True),
        ("c.yaml is valid YAML", "a: [1\n", False),
        ("t.csv has the columns a and b", "a,b\n1,2\n", True),
        ("t.csv has the columns a and b", "a,c\n1,2\n", False),
        ("t.csv is valid CSV", "a,b\n1\n", False),
        ("t.csv has 2 rows", "a\n1\n2\n", True),
        ("t.csv has 2 rows", "a\n1\n", False),
        ("h.txt has 3 lines", "one\n\ntwo\nthree\n", True),
        ("h.txt has 3 lines", "one\ntwo\n", False),
        ("h.txt mentions restart intensity", "On Restart Intensity.", True),
        ("h.txt mentions restart intensity", "On restarts.", False),
        ('h.txt contains "hi there"', "say hi there\n", True),
        ("p.py is valid Python", "print(1)\n", True),
        ("p.py is valid Python", "def f(:\n", False),
        ("running p.py prints the first 3 primes", "print(2, 3, 5)\n", None),
    ],
)
def test_checks_on_a_files_text(criterion: str, content: str, verdict: bool | None) -> None:
    check = parse_criterion(criterion)
    assert check is not None

    assert verdict == check_content(check, content)[0]


@given(criterion=st.text(max_size=80))
def test_any_text_parses_to_a_check_or_none_without_failing(criterion: str) -> None:
    check = parse_criterion(criterion)

    assert check is None or check.path


def test_criteria_for_an_unsupported_write_ask_only_for_the_file() -> None:
    artefact = recognise("a web scraper in python", "s.py", "")

    assert ["s.py exists"] == criteria_for(artefact, "s.py")


@pytest.mark.parametrize(
    ("goal", "prints"),
    [
        (
            "create primes.py, a program that prints the first 10 prime numbers",
            "running primes.py prints the first 10 primes",
        ),
        (
            "write primes.py that prints the first twenty primes",
            "running primes.py prints the first 20 primes",
        ),
        (
            "Write a Python program fizzbuzz.py that prints FizzBuzz from 1 to 30",
            "running fizzbuzz.py prints FizzBuzz from 1 to 30",
        ),
        ("write a script hello.py printing hello world", "running hello.py prints Hello, world!"),
    ],
)
def test_the_words_after_the_path_say_what_to_write_too(goal: str, prints: str) -> None:
    assert prints in criteria_for_goal(goal)


def test_a_write_in_a_human_language_other_than_english_is_refused_by_name() -> None:
    artefact = recognise("a sonnet in Klingon about quantum chromodynamics", "q.txt", "")

    assert "unsupported" == artefact.kind
    assert "Klingon" in artefact.reason and "English only" in artefact.reason
