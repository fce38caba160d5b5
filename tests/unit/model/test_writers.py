"""The embedded model's writers: every catalogue program really runs and prints the right
answer, every artefact is valid for its kind, and quality's misses are deterministic and
follow the constraints."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from actors.model.programs import program_source
from actors.model.writers import criteria_missed, render_artefact
from protocols.artefacts import check_content, criteria_for, parse_criterion, recognise
from protocols.goals import criteria_for_goal, plan_goal
from protocols.tasks import TASK_NAMES, TaskCall, describe_task, output_matches, recognise_task


def _sample(name: str) -> TaskCall:
    """A call of each task, made from its own words with sample arguments."""
    call = recognise_task(describe_task(TaskCall(name, (12, 18, 7), "Step on no pets")))
    assert call is not None
    if name == "leap_years":
        return TaskCall(name, (1996, 2012))
    return call


def _run(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("name", TASK_NAMES)
def test_each_catalogue_program_runs_and_prints_the_right_answer(name: str) -> None:
    call = _sample(name)

    ran = _run(program_source(call))

    assert 0 == ran.returncode, ran.stderr
    assert output_matches(call, ran.stdout), ran.stdout


@pytest.mark.parametrize("name", TASK_NAMES)
def test_a_wrong_program_runs_but_prints_a_wrong_answer(name: str) -> None:
    call = _sample(name)

    ran = _run(program_source(call, wrong_output=True))

    assert 0 == ran.returncode, ran.stderr
    assert not output_matches(call, ran.stdout)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_a_program_with_a_syntax_error_does_not_compile(name: str) -> None:
    with pytest.raises(SyntaxError):
        compile(program_source(_sample(name), syntax_error=True), "p.py", "exec")


@pytest.mark.parametrize(
    ("what", "path"),
    [
        ("a haiku about supervision", "h.txt"),
        ("a limerick about cats", "l.txt"),
        ("a sonnet about the sea", "s.txt"),
        ("a 7-line poem about snow", "p.txt"),
        ("notes about restart intensity", "n.md"),
        ("a JSON file with the fields name, age, email and is_active", "p.json"),
        ("a YAML file with the keys host, port and tags", "c.yaml"),
        ("a CSV file with the columns name, email and city and 5 rows", "t.csv"),
        ("a script that prints the first 10 primes", "p.py"),
    ],
)
def test_each_artefact_meets_every_criterion_of_its_kind(what: str, path: str) -> None:
    artefact = recognise(what, path, what.rsplit("about ", 1)[-1])

    text = render_artefact(artefact, path, None)

    for criterion in criteria_for(artefact, path):
        check = parse_criterion(criterion)
        assert check is not None
        verdict, why = check_content(check, text)
        assert verdict is not False, f"{criterion}: {why}"


def test_json_yaml_and_csv_parse_with_the_asked_names() -> None:
    person = json.loads(
        render_artefact(recognise("with the fields a and b", "p.json", ""), "p.json", None)
    )
    config = yaml.safe_load(
        render_artefact(recognise("with the keys x and y", "c.yaml", ""), "c.yaml", None)
    )
    table = list(
        csv.reader(
            io.StringIO(
                render_artefact(
                    recognise("with the columns u and v and 4 rows", "t.csv", ""), "t.csv", None
                )
            )
        )
    )

    assert {"a", "b"} == set(person)
    assert {"x", "y"} == set(config)
    assert ["u", "v"] == table[0]
    assert 5 == len(table)


def test_an_unsupported_write_is_never_rendered() -> None:
    with pytest.raises(ValueError, match="cannot"):
        render_artefact(recognise("a web scraper", "s.py", ""), "s.py", None)


HAIKU = recognise("a haiku about rain", "h.txt", "rain")
CHECKS = [c for c in criteria_for(HAIKU, "h.txt") if not c.endswith("exists")]


def test_full_quality_misses_nothing_and_no_quality_misses_every_check_but_existence() -> None:
    assert set() == criteria_missed(HAIKU, "h.txt", quality=1.0, seed=1, goal="g", constraints=())
    assert set(CHECKS) == criteria_missed(
        HAIKU, "h.txt", quality=0.0, seed=1, goal="g", constraints=()
    )


@given(quality=st.floats(0, 1), seed=st.integers(0, 2**32), extra=st.lists(st.text(max_size=20)))
def test_misses_are_deterministic_and_a_constraint_naming_a_criterion_is_followed(
    quality: float, seed: int, extra: list[str]
) -> None:
    named = [f"This criterion was not met: {c}" for c in CHECKS[:1]]
    constraints = [*extra, *named]

    first = criteria_missed(
        HAIKU, "h.txt", quality=quality, seed=seed, goal="g", constraints=constraints
    )
    again = criteria_missed(
        HAIKU, "h.txt", quality=quality, seed=seed, goal="g", constraints=constraints
    )

    assert first == again
    assert CHECKS[0] not in first


@pytest.mark.parametrize("criterion", CHECKS)
def test_each_missed_criterion_is_really_unmet_by_the_text(criterion: str) -> None:
    check = parse_criterion(criterion)
    assert check is not None

    text = render_artefact(HAIKU, "h.txt", None, {criterion})

    assert check_content(check, text)[0] is False


def test_a_missed_program_criterion_makes_the_program_wrong_or_invalid() -> None:
    program = recognise("a script that prints the first 5 primes", "p.py", "")
    valid, prints = [c for c in criteria_for(program, "p.py") if not c.endswith("exists")]
    call = program.task
    assert call is not None

    wrong = _run(render_artefact(program, "p.py", None, {prints}))
    broken = render_artefact(program, "p.py", None, {valid})

    assert not output_matches(call, wrong.stdout)
    with pytest.raises(SyntaxError):
        compile(broken, "p.py", "exec")


_NOT_NAMES = {"and", "with", "to", "into", "then", "so", "that", "the", "a", "an", "rows"}
names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(lambda n: n not in _NOT_NAMES)


@given(
    fields=st.lists(names, min_size=1, max_size=5, unique=True),
    kind=st.sampled_from(
        [("JSON", "fields", "json"), ("YAML", "keys", "yaml"), ("CSV", "columns", "csv")]
    ),
)
@example(fields=["b", "cat"], kind=("JSON", "fields", "json"))  # a field named like a verb
@example(fields=["a", "list", "b"], kind=("CSV", "columns", "csv"))
def test_any_fields_asked_for_are_written_and_pass_their_checks(
    fields: list[str], kind: tuple[str, str, str]
) -> None:
    label, noun, ext = kind
    listed = fields[0] if len(fields) == 1 else ", ".join(fields[:-1]) + " and " + fields[-1]
    goal = f"write a {label} file with the {noun} {listed} to out.{ext}"
    [write] = [a for a in plan_goal(goal) if a.tool == "write_file"]
    assert write.content is not None

    text = render_artefact(write.content, write.target, None)

    assert tuple(fields) == write.content.fields
    for criterion in criteria_for_goal(goal):
        check = parse_criterion(criterion)
        assert check is not None
        assert check_content(check, text)[0] is True, (criterion, text)


@given(topic=st.lists(names, min_size=1, max_size=3).map(" ".join))
def test_any_poem_or_text_about_a_topic_passes_its_checks(topic: str) -> None:
    for what in ("a haiku", "a limerick", "a sonnet", "a 6-line poem", "notes"):
        goal = f"write {what} about {topic} to out.txt"
        [write] = [a for a in plan_goal(goal) if a.tool == "write_file"]
        assert write.content is not None

        text = render_artefact(write.content, write.target, None)

        for criterion in criteria_for_goal(goal):
            check = parse_criterion(criterion)
            assert check is not None
            assert check_content(check, text)[0] is True, (criterion, text)
