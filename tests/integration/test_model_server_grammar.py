"""The model server's pure logic: the goal grammar, the generated text, the judge, specify.

No HTTP and no ActorSystem: plain functions, examples and Hypothesis properties.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.model.brain import (
    Action,
    haiku,
    judge,
    paragraph,
    plan_goal,
    respond,
    specify,
    syllables,
)
from actors.model.wire import ChatCompletionRequest
from protocols.prompts import agent_system_prompt

words = st.from_regex(r"[a-z]{3,9}", fullmatch=True)


def steps(goal: str) -> list[tuple[str | None, str, str | None]]:
    """(tool, target, content kind) of each planned action."""
    return [(a.tool, a.target, a.content.kind if a.content else None) for a in plan_goal(goal)]


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        ("write a haiku about supervision to haiku.txt", [("write_file", "haiku.txt", "haiku")]),
        (
            "Please create notes.md with a list of the restart strategies",
            [("write_file", "notes.md", "text")],
        ),
        (
            "save a summary of the logs into out/report.txt",
            [("write_file", "out/report.txt", "text")],
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
        ("write a haiku about cats and dogs", [(None, "", "haiku")]),
        ("What is a supervisor?", []),
        ("Do not read secrets.txt. Never run rm -rf /.", []),
        (
            (
                "Make sure nothing breaks; write a poem about tides to poem.md "
                "so that it can be read later"
            ),
            [("write_file", "poem.md", "text")],
        ),
        (
            "write the report to /tmp/../etc/report.txt without asking",
            [("write_file", "/tmp/../etc/report.txt", "text")],
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


@given(
    criteria=st.lists(st.lists(words, min_size=1, max_size=3).map(" ".join), max_size=5),
    present=st.sets(words, max_size=8),
)
def test_judge_scores_the_fraction_of_criteria_whose_words_all_appear(
    criteria: list[str], present: set[str]
) -> None:
    output = " ".join(sorted(present))

    evaluation = judge(criteria, output, {})

    assert list(evaluation.met) + list(evaluation.unmet) == [
        c for c in criteria if c in evaluation.met
    ] + [c for c in criteria if c in evaluation.unmet]
    assert len(criteria) == len(evaluation.met) + len(evaluation.unmet)
    expected = len(evaluation.met) / len(criteria) if criteria else 1.0
    assert expected == evaluation.score
    for criterion in criteria:
        if set(criterion.split()) <= present:
            assert criterion in evaluation.met


def test_judge_reads_files_and_file_existence() -> None:
    files = {"/ws/out/report.txt": "Restart strategies: one_for_one, one_for_all."}
    criteria = [
        "out/report.txt exists",
        "The file report.txt is created",
        "missing.txt exists",
        "the report covers restart strategies",
        "it has 3 sections",
        "three sections",
    ]

    evaluation = judge(criteria, "Done: three sections written.", files)

    assert (
        "out/report.txt exists",
        "The file report.txt is created",
        "the report covers restart strategies",
        "it has 3 sections",
        "three sections",
    ) == evaluation.met
    assert ("missing.txt exists",) == evaluation.unmet
    assert "no file missing.txt" in evaluation.feedback


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


def test_a_run_written_to_its_spec_meets_its_own_criteria() -> None:
    """specify -> agent turns -> judge, all deterministic: the stub model passes its own spec."""
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

    assert 1.0 == evaluation.score
