"""The model server's pure logic: the goal grammar, the generated text, its judge, specify.

No HTTP and no ActorSystem: plain functions, examples and Hypothesis properties.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.model.brain import judge, respond, specify
from actors.model.wire import ChatCompletionRequest
from actors.model.writers import haiku, paragraph, syllables
from protocols.goals import Action, plan_goal
from protocols.prompts import agent_system_prompt

words = st.from_regex(r"[a-z]{3,9}", fullmatch=True)


def steps(goal: str) -> list[tuple[str | None, str, str | None]]:
    """(tool, target, content kind) of each planned action."""
    return [(a.tool, a.target, a.content.kind if a.content else None) for a in plan_goal(goal)]


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        ("write a haiku about supervision to haiku.txt", [("write_file", "haiku.txt", "poem")]),
        (
            "Please create notes.md with a list of the restart strategies",
            [("write_file", "notes.md", "prose")],
        ),
        (
            "save a summary of the logs into out/report.txt",
            [("write_file", "out/report.txt", "prose")],
        ),
        ('write "hello world" to hello.txt', [("write_file", "hello.txt", "literal")]),
        (
            "create the file named `my notes.txt` containing 'a b c'",
            [("write_file", "my notes.txt", "literal")],
        ),
        (
            "read a.txt and write its summary to b.txt",
            [("read_file", "a.txt", None), ("write_file", "b.txt", "summary")],
        ),
        (
            "copy a.txt to backup/a.txt",
            [("read_file", "a.txt", None), ("write_file", "backup/a.txt", "copy")],
        ),
        (
            "Read the file README, then copy its contents into c.txt",
            [("read_file", "README", None), ("write_file", "c.txt", "copy")],
        ),
        ("summarize docs/guide.md", [("read_file", "docs/guide.md", None)]),
        ("list the files in the workspace", [("list_directory", "", None)]),
        ("show me the files in src", [("list_directory", "src", None)]),
        ("ls build/", [("list_directory", "build/", None)]),
        (
            "run `ls -la && echo done` and then list docs",
            [("run_command", "ls -la && echo done", None), ("list_directory", "docs", None)],
        ),
        ("execute the command pytest -q", [("run_command", "pytest -q", None)]),
        ("write a haiku about cats and dogs", [(None, "", "poem")]),
        ("What is a supervisor?", []),
        ("Do not read secrets.txt. Never run rm -rf /.", []),
        (
            (
                "Make sure nothing breaks; write a poem about tides to poem.md "
                "so that it can be read later"
            ),
            [("write_file", "poem.md", "poem")],
        ),
        (
            "write the report to /tmp/../etc/report.txt without asking",
            [("write_file", "/tmp/../etc/report.txt", "prose")],
        ),
    ],
)
def test_goal_grammar_examples(
    goal: str, expected: list[tuple[str | None, str, str | None]]
) -> None:
    assert expected == steps(goal)


def test_a_write_takes_its_topic_from_the_words_after_about() -> None:
    [action] = plan_goal("compose a short poem about restart intensity into poem.txt")

    assert action.content is not None
    assert "restart intensity" == action.content.topic


def test_a_quoted_literal_is_kept_whole_even_with_verbs_inside() -> None:
    [action] = plan_goal('write "read this and run that" to todo.txt')

    assert action.content is not None
    assert Action("write_file", "todo.txt", action.content) == action
    assert "read this and run that" == action.content.literal


@given(goal=st.text(max_size=120))
def test_planning_any_text_never_fails_and_names_known_tools(goal: str) -> None:
    for action in plan_goal(goal):
        assert action.tool in {None, "read_file", "write_file", "list_directory", "run_command"}
        assert action.tool is None or action.target or action.tool == "list_directory"


# --- generated text -------------------------------------------------------------------------


@given(topic=st.lists(words, min_size=1, max_size=3).map(" ".join))
def test_a_haiku_has_three_lines_of_five_seven_five_and_names_its_topic(topic: str) -> None:
    poem = haiku(topic)

    first, second, third = poem.split("\n")
    assert topic in first.lower()
    assert max(5, syllables(topic)) == syllables(first)
    assert (7, 5) == (syllables(second), syllables(third))
    assert poem == haiku(topic)


def test_different_topics_get_different_haikus() -> None:
    topics = ["supervision", "restarts", "actors", "mailboxes", "timeouts", "backoff"]

    assert len(topics) == len({haiku(t) for t in topics})


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("supervision", 4),
        ("cats", 1),
        ("restart", 2),
        ("the quiet hand", 4),
        ("", 0),
    ],
)
def test_syllables_estimates_english_words(text: str, count: int) -> None:
    assert count == syllables(text)


@given(topic=words)
def test_a_paragraph_mentions_its_topic_twice(topic: str) -> None:
    assert 2 <= paragraph(topic).lower().count(topic)


# --- judging --------------------------------------------------------------------------------


def test_judge_checks_each_criterion_on_the_files_text() -> None:
    files = {
        "/ws/out/person.json": '{"name": "Ada", "age": 36}',
        "/ws/haiku.txt": "one\ntwo\nthree about supervision\n",
        "/ws/bad.json": '{"name": ',
    }
    criteria = [
        "out/person.json exists",
        "person.json is valid JSON",
        "person.json has the fields name and age",
        "person.json has the fields name and email",
        "bad.json is valid JSON",
        "haiku.txt has 3 lines",
        "haiku.txt mentions supervision",
        "missing.txt exists",
        "the report covers restart strategies",
        "running prog.py prints the first 10 primes",
    ]

    evaluation = judge(criteria, "Done: everything is perfect.", files)

    assert (
        "out/person.json exists",
        "person.json is valid JSON",
        "person.json has the fields name and age",
        "haiku.txt has 3 lines",
        "haiku.txt mentions supervision",
    ) == evaluation.met
    assert (
        "person.json has the fields name and email",
        "bad.json is valid JSON",
        "missing.txt exists",
        "running prog.py prints the first 10 primes",
    ) == evaluation.unmet
    assert ("the report covers restart strategies",) == evaluation.unverified
    assert 5 / 10 == evaluation.score
    assert "missing the fields email" in evaluation.feedback


def test_the_models_judge_cannot_run_programs_so_their_output_is_unverified() -> None:
    files = {"/ws/p.py": "print(2)\n"}

    criteria = ["p.py is valid Python", "running p.py prints the first 1 primes"]

    evaluation = judge(criteria, "", files)

    assert ("p.py is valid Python",) == evaluation.met
    assert ("running p.py prints the first 1 primes",) == evaluation.unverified


@given(output=st.text(max_size=200))
def test_what_the_agent_says_never_meets_a_criterion(output: str) -> None:
    evaluation = judge(["haiku.txt exists", "the output says it is done"], output, {})

    assert () == evaluation.met
    assert 0.0 == evaluation.score


def test_judge_without_criteria_scores_one() -> None:
    assert 1.0 == judge([], "", {}).score


# --- specification --------------------------------------------------------------------------


def test_specify_collects_files_criteria_and_constraints() -> None:
    spec = specify(
        "Read a.txt and write its summary to b.txt so that it lists the key words. "
        "The summary should be short; do not modify a.txt."
    )

    assert (
        "b.txt exists",
        "it lists the key words",
        "The summary should be short",
    ) == spec.acceptance_criteria
    assert ("do not modify a.txt",) == spec.constraints
    assert ("a.txt", "b.txt") == spec.workspace_files


def test_specify_falls_back_to_the_goal_as_the_criterion() -> None:
    spec = specify("  Explain supervision trees  ")

    assert ("Explain supervision trees", ("Explain supervision trees",), ()) == (
        spec.goal,
        spec.acceptance_criteria,
        spec.constraints,
    )


def test_a_run_written_to_its_spec_meets_its_checkable_criteria_and_no_more() -> None:
    """specify -> agent turns -> judge: the checks pass; the free-form clause is unverified."""
    spec = specify("write a haiku about supervision to haiku.txt. It must have three lines.")
    system = agent_system_prompt(
        spec.goal, spec.goal, spec.constraints, spec.acceptance_criteria, "/ws"
    )
    messages: list[dict[str, object]] = [{"role": "system", "content": system}]

    first = respond(
        ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": messages,
                "tools": [{"type": "function", "function": {"name": "write_file"}}],
            }
        )
    )
    assert first.tool_name == "write_file"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": first.call_id,
                    "type": "function",
                    "function": {"name": "write_file", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": first.call_id, "content": "ok"},
    ]
    final = respond(ChatCompletionRequest.model_validate({"model": "m", "messages": messages}))
    evaluation = judge(
        spec.acceptance_criteria,
        final.content or "",
        {first.arguments["path"]: first.arguments["content"]},
    )

    assert (
        "haiku.txt exists",
        "haiku.txt has 3 lines",
        "haiku.txt mentions supervision",
    ) == evaluation.met
    assert ("It must have three lines",) == evaluation.unverified
    assert 3 / 4 == evaluation.score
