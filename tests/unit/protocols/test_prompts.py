"""The prompt formats shared by agents and the model server: round trips and tolerant parsing."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import UnderstudyError
from protocols.prompts import (
    EVALUATE_MARKER,
    SPECIFY_MARKER,
    TOOL_NAMES,
    Evaluation,
    EvaluationRequest,
    ParsedGoal,
    PromptFormatError,
    Specification,
    agent_system_prompt,
    estimate_tokens,
    evaluation_prompt,
    format_tool_error,
    parse_evaluation,
    parse_evaluation_request,
    parse_goal,
    parse_specification,
    parse_specification_request,
    parse_tool_result,
    prompt_kind,
    specification_prompt,
    tool_definitions,
)

texts = st.text(max_size=60)
items = st.lists(texts, max_size=4)
scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
no_braces = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40)

evaluations = st.builds(
    Evaluation, score=scores, met=items.map(tuple), unmet=items.map(tuple), feedback=texts
)
specifications = st.builds(
    Specification,
    goal=st.text(min_size=1, max_size=60),
    constraints=items.map(tuple),
    acceptance_criteria=items.map(tuple),
    workspace_files=items.map(tuple),
)


# --- agent system prompt --------------------------------------------------------------------


def test_agent_system_prompt_has_labelled_lines_and_bullets() -> None:
    prompt = agent_system_prompt(
        "write a haiku to haiku.txt",
        "a haiku please",
        ["stay in the workspace"],
        ["haiku.txt exists", "three lines"],
        "/ws",
    )

    lines = prompt.split("\n")
    assert "Goal: write a haiku to haiku.txt" in lines
    assert "Original request: a haiku please" in lines
    assert "Workspace: /ws" in lines
    assert lines[lines.index("Constraints:") + 1] == "- stay in the workspace"
    criteria = lines[lines.index("Acceptance criteria:") + 1 :]
    assert ["- haiku.txt exists", "- three lines"] == criteria


@given(goal=texts, request=texts, constraints=items, criteria=items, workspace=texts)
def test_parse_goal_reads_back_every_field_of_any_text(
    goal: str, request: str, constraints: list[str], criteria: list[str], workspace: str
) -> None:
    prompt = agent_system_prompt(goal, request, constraints, criteria, workspace)

    parsed = parse_goal(prompt)

    assert (
        ParsedGoal(
            goal=goal,
            original_request=request,
            workspace=workspace,
            constraints=tuple(constraints),
            acceptance_criteria=tuple(criteria),
        )
        == parsed
    )


def test_parse_goal_skips_appended_sections_and_keeps_the_first_goal() -> None:
    prompt = agent_system_prompt("first goal\nsecond line", "r", [], ["c"], "/ws")
    prompt += "\nPrevious attempt:\n- not a criterion\n  nor this\nGoal: a later goal"

    parsed = parse_goal(prompt)

    assert "first goal\nsecond line" == parsed.goal
    assert ("c",) == parsed.acceptance_criteria


def test_parse_goal_of_free_text_has_empty_fields() -> None:
    assert ParsedGoal() == parse_goal("Just do something useful.\n- a stray bullet")


def test_parse_goal_reads_labels_case_insensitively() -> None:
    parsed = parse_goal("goal: list src\nWORKSPACE: /w\nconstraints:\n- none of that")

    assert ("list src", "/w", ("none of that",)) == (
        parsed.goal,
        parsed.workspace,
        parsed.constraints,
    )


# --- evaluation -----------------------------------------------------------------------------


@given(
    goal=texts,
    criteria=items,
    output=texts,
    files=st.dictionaries(st.text(min_size=1, max_size=20), texts, max_size=3),
)
def test_evaluation_prompt_starts_with_its_marker_and_carries_its_input(
    goal: str, criteria: list[str], output: str, files: dict[str, str]
) -> None:
    prompt = evaluation_prompt(goal, criteria, output, files)

    assert EVALUATE_MARKER == prompt.split("\n", 1)[0]
    assert "evaluate" == prompt_kind(prompt)
    assert EvaluationRequest(
        goal=goal, criteria=tuple(criteria), output=output, files=files
    ) == parse_evaluation_request(prompt)


@given(evaluation=evaluations, before=no_braces, after=st.text(max_size=40))
def test_parse_evaluation_finds_the_object_among_other_text(
    evaluation: Evaluation, before: str, after: str
) -> None:
    text = before + evaluation.model_dump_json() + after

    assert evaluation == parse_evaluation(text)


def test_parse_evaluation_accepts_a_code_fence_and_extra_keys() -> None:
    text = (
        'Here you go:\n```json\n{"score": "0.5", "met": ["a"], "unmet": ["b"], '
        '"feedback": "do b", "reasoning": "..."}\n```'
    )

    expected = Evaluation(score=0.5, met=("a",), unmet=("b",), feedback="do b")
    assert expected == parse_evaluation(text)


def test_parse_evaluation_skips_objects_that_are_not_evaluations() -> None:
    text = 'Input was {"goal": "x"}; verdict: {"score": 1, "met": [], "unmet": []}'

    assert 1.0 == parse_evaluation(text).score


@pytest.mark.parametrize(
    "text",
    [
        "no json here",
        '{"score": 1.5, "met": [], "unmet": []}',
        '{"score": NaN}',
        '{"score": 0.5}',
        '{"score": 0.5',
    ],
)
def test_parse_evaluation_rejects_text_without_a_valid_evaluation(text: str) -> None:
    with pytest.raises(PromptFormatError, match="Evaluation"):
        parse_evaluation(text)


def test_prompt_format_error_is_an_understudy_error_and_a_value_error() -> None:
    assert issubclass(PromptFormatError, UnderstudyError)
    assert issubclass(PromptFormatError, ValueError)


def test_parse_evaluation_request_rejects_other_prompts() -> None:
    with pytest.raises(PromptFormatError, match=EVALUATE_MARKER):
        parse_evaluation_request(specification_prompt("x"))
    with pytest.raises(PromptFormatError, match="Input"):
        parse_evaluation_request(EVALUATE_MARKER + "\nno input")


# --- specification --------------------------------------------------------------------------


@given(message=st.text(max_size=80))
def test_specification_prompt_starts_with_its_marker_and_carries_the_message(message: str) -> None:
    prompt = specification_prompt(message)

    assert SPECIFY_MARKER == prompt.split("\n", 1)[0]
    assert "specify" == prompt_kind(prompt)
    assert message == parse_specification_request(prompt)


@given(spec=specifications, before=no_braces, after=st.text(max_size=40))
def test_parse_specification_finds_the_object_among_other_text(
    spec: Specification, before: str, after: str
) -> None:
    assert spec == parse_specification(before + spec.model_dump_json() + after)


@pytest.mark.parametrize("text", ['{"goal": ""}', '{"constraints": []}', "[]", ""])
def test_parse_specification_rejects_text_without_a_goal(text: str) -> None:
    with pytest.raises(PromptFormatError, match="Specification"):
        parse_specification(text)


def test_prompt_kind_is_none_for_an_ordinary_prompt() -> None:
    assert prompt_kind("write a haiku; " + EVALUATE_MARKER) is None


# --- tools and tokens -----------------------------------------------------------------------


def test_tool_definitions_declare_string_parameters_for_each_tool() -> None:
    tools = tool_definitions()

    assert list(TOOL_NAMES) == [t["function"]["name"] for t in tools]
    write = next(t for t in tools if t["function"]["name"] == "write_file")
    assert ["path", "content"] == write["function"]["parameters"]["required"]
    json.dumps(tools)  # they go over the wire as they are


def test_tool_definitions_reject_an_unknown_tool() -> None:
    with pytest.raises(ValueError, match="unknown tool 'rm_rf'"):
        tool_definitions(["read_file", "rm_rf"])


@given(error=st.from_regex(r"[A-Z][A-Za-z]{0,15}", fullmatch=True), message=texts)
def test_a_formatted_tool_error_reads_back_as_an_error(error: str, message: str) -> None:
    result = parse_tool_result(format_tool_error(error, message))

    assert not result.ok
    assert error in (result.error or "")


@pytest.mark.parametrize(
    ("text", "ok", "output"),
    [
        ("hello\nworld", True, "hello\nworld"),
        ("Error handling is a chapter title", True, "Error handling is a chapter title"),
        ('{"content": "abc"}', True, "abc"),
        ('{"entries": ["a", "b"]}', True, "a\nb"),
        ('{"error": {"message": "denied: /etc"}}', False, ""),
        ('{"ok": false, "message": "no such file"}', False, ""),
        ("Permission denied: /root", False, ""),
        ("{not json", True, "{not json"),
    ],
)
def test_parse_tool_result_tells_outputs_from_errors(text: str, ok: bool, output: str) -> None:
    result = parse_tool_result(text)

    assert ok == result.ok
    assert output == result.output
    assert ok == (result.error is None)


@given(text=st.text(max_size=200))
def test_estimate_tokens_is_a_quarter_of_the_characters_rounded_up(text: str) -> None:
    assert math.ceil(len(text) / 4) == estimate_tokens(text)


@given(a=st.text(max_size=50), b=st.text(max_size=50))
def test_estimate_tokens_grows_with_the_text(a: str, b: str) -> None:
    assert estimate_tokens(a) <= estimate_tokens(a + b) <= estimate_tokens(a) + estimate_tokens(b)
