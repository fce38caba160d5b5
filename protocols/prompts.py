"""Prompt formats shared by the agents and the embedded model server.

Every text that crosses the model boundary is built and read here, so that an agent that
writes a prompt and the server that reads it cannot drift apart. Pure functions, no I/O.

Formats
    agent system prompt   labelled lines (``Goal: ...``, ``Workspace: ...``) and bullet lists
                          (``Constraints:``, ``Acceptance criteria:``); a value's extra lines
                          are indented by two spaces, so any text round-trips through
                          :func:`parse_goal`
    evaluation prompt     first line ``UNDERSTUDY-EVALUATE``, instructions, then the task as
                          one JSON object after ``Input (JSON):``; the model answers
                          ``{"score", "met", "unmet", "feedback"}`` (:func:`parse_evaluation`)
    specification prompt  first line ``UNDERSTUDY-SPECIFY``, same layout; the model answers
                          ``{"goal", "constraints", "acceptance_criteria", "workspace_files"}``
                          (:func:`parse_specification`)
    interview prompt      first line ``UNDERSTUDY-INTERVIEW``, same layout (the request and the
                          clarifications so far); the model answers ``{"is_task",
                          "ambiguity", "complexity", "questions", "reply", "goal"}``
                          (:func:`parse_interview`)
    compaction prompt     first line ``UNDERSTUDY-COMPACT``, same layout (the turns to fold);
                          the model answers a plain-text summary, which replaces those turns
                          as one user message starting with ``SUMMARY_LABEL``
    tool results          a tool's output as plain text, or ``ERROR <Name>: <message>``
                          (:func:`format_tool_error`, read back by :func:`parse_tool_result`)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.errors import UnderstudyError

__all__ = [
    "AGENT_PREAMBLE",
    "COMPACT_MARKER",
    "EVALUATE_MARKER",
    "INPUT_LABEL",
    "INTERVIEW_MARKER",
    "SPECIFY_MARKER",
    "SUMMARY_LABEL",
    "TOOL_ERROR_PREFIX",
    "TOOL_NAMES",
    "Clarification",
    "Evaluation",
    "EvaluationRequest",
    "InterviewRating",
    "InterviewRequest",
    "ParsedGoal",
    "PromptFormatError",
    "Specification",
    "ToolResult",
    "agent_system_prompt",
    "compaction_prompt",
    "estimate_tokens",
    "evaluation_prompt",
    "format_tool_error",
    "interview_prompt",
    "parse_compaction_request",
    "parse_evaluation",
    "parse_evaluation_request",
    "parse_goal",
    "parse_interview",
    "parse_interview_request",
    "parse_specification",
    "parse_specification_request",
    "parse_tool_result",
    "prompt_kind",
    "score_of",
    "specification_prompt",
    "summary_message",
    "tool_definitions",
]

EVALUATE_MARKER: Final = "UNDERSTUDY-EVALUATE"
SPECIFY_MARKER: Final = "UNDERSTUDY-SPECIFY"
INTERVIEW_MARKER: Final = "UNDERSTUDY-INTERVIEW"
COMPACT_MARKER: Final = "UNDERSTUDY-COMPACT"
SUMMARY_LABEL: Final = "Summary of the earlier conversation (compacted):"
_KINDS: Final = {
    EVALUATE_MARKER: "evaluate",
    SPECIFY_MARKER: "specify",
    INTERVIEW_MARKER: "interview",
    COMPACT_MARKER: "compact",
}
AGENT_PREAMBLE: Final = (
    "You are an Understudy agent. Reach the goal with the tools you are given, "
    "then reply with a short summary of what you did."
)
INPUT_LABEL: Final = "Input (JSON):"
TOOL_ERROR_PREFIX: Final = "ERROR"
TOOL_NAMES: Final = ("read_file", "write_file", "list_directory", "run_command")

_INDENT = "  "
_VALUE_FIELDS: Final = {
    "goal": "Goal",
    "original_request": "Original request",
    "workspace": "Workspace",
}
_LIST_FIELDS: Final = {"constraints": "Constraints", "acceptance_criteria": "Acceptance criteria"}


class PromptFormatError(UnderstudyError, ValueError):
    """A model's answer (or a prompt) does not contain the expected structure."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ParsedGoal(_Frozen):
    """The fields of an agent system prompt, as :func:`parse_goal` reads them back."""

    goal: str = ""
    original_request: str = ""
    workspace: str = ""
    constraints: tuple[str, ...] = ()
    acceptance_criteria: tuple[str, ...] = ()


class Evaluation(_Frozen):
    """A judgement of an output against acceptance criteria.

    ``unverified`` are the criteria the judge could not check (never counted as met).
    ``score`` is what the judge says; the orchestrator does not take it on trust: it counts
    ``met`` against all the criteria (:func:`score_of`).
    """

    score: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    met: tuple[str, ...] = ()
    unmet: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    feedback: str = ""

    @model_validator(mode="before")
    @classmethod
    def _has_verdicts(cls, value: Any) -> Any:
        """An object without ``met`` or ``unmet`` is not an evaluation (some other JSON)."""
        if isinstance(value, dict) and "met" not in value and "unmet" not in value:
            msg = "an evaluation needs a 'met' or an 'unmet' list"
            raise ValueError(msg)
        return value


class Specification(_Frozen):
    """A goal made precise: what to do, what not to do, and how success is judged."""

    goal: str = Field(min_length=1)
    constraints: tuple[str, ...] = ()
    acceptance_criteria: tuple[str, ...] = ()
    workspace_files: tuple[str, ...] = ()


class EvaluationRequest(_Frozen):
    """What an evaluation prompt asks about (read back by the model server)."""

    goal: str
    criteria: tuple[str, ...]
    output: str
    files: dict[str, str]


class ToolResult(_Frozen):
    """A tool result as the model sees it: its output, or the error that replaced it."""

    ok: bool
    output: str = ""
    error: str | None = None


# --- agent system prompt --------------------------------------------------------------------


def _indent(value: str) -> str:
    return value.replace("\n", "\n" + _INDENT)


def agent_system_prompt(
    goal: str,
    original_request: str,
    constraints: Sequence[str],
    acceptance_criteria: Sequence[str],
    workspace: str,
) -> str:
    """Build the system prompt of one agent run.

    Args:
        goal: what the agent must achieve.
        original_request: the user's words the goal came from.
        constraints: rules the agent must keep (one bullet each).
        acceptance_criteria: how the result will be judged (one bullet each).
        workspace: the directory the agent works in; relative paths are inside it.

    Returns:
        The prompt; :func:`parse_goal` reads every field back unchanged.
    """
    lines = [
        AGENT_PREAMBLE,
        f"Goal: {_indent(goal)}",
        f"Original request: {_indent(original_request)}",
        f"Workspace: {_indent(workspace)}",
        "Constraints:",
        *(f"- {_indent(item)}" for item in constraints),
        "Acceptance criteria:",
        *(f"- {_indent(item)}" for item in acceptance_criteria),
    ]
    return "\n".join(lines)


def parse_goal(system_prompt: str) -> ParsedGoal:
    """Read the fields of an agent system prompt; missing fields are empty.

    Lines the format does not know (an appended section, free text) are skipped, and the
    first occurrence of a field wins.

    Args:
        system_prompt: a prompt built by :func:`agent_system_prompt`, possibly extended.

    Returns:
        The fields found.
    """
    values: dict[str, list[str]] = {}
    lists: dict[str, list[list[str]]] = {}
    current: list[str] | None = None  # the lines of the value or item being read
    open_list: list[list[str]] | None = None
    headers = {label.lower(): name for name, label in _VALUE_FIELDS.items()}
    list_headers = {label.lower(): name for name, label in _LIST_FIELDS.items()}
    for line in system_prompt.split("\n"):
        if line.startswith(_INDENT):
            if current is not None:
                current.append(line[len(_INDENT) :])
            continue
        if open_list is not None and (line.startswith("- ") or line == "-"):
            current = [line[2:]]
            open_list.append(current)
            continue
        current, open_list = None, None
        label, colon, rest = line.partition(":")
        if not colon:
            continue
        key = label.strip().lower()
        if key in headers and headers[key] not in values:
            current = [rest[1:] if rest.startswith(" ") else rest]
            values[headers[key]] = current
        elif key in list_headers and list_headers[key] not in lists:
            open_list = lists[list_headers[key]] = []
    return ParsedGoal(
        **{name: "\n".join(parts) for name, parts in values.items()},
        **{name: tuple("\n".join(parts) for parts in items) for name, items in lists.items()},
    )


# --- evaluation and specification -----------------------------------------------------------

_EVALUATE_INSTRUCTIONS = (
    "You are the evaluator of an agent's work. Judge the output, and the files it wrote, "
    "against each acceptance criterion.\n"
    "Reply with one JSON object and nothing else:\n"
    '{"score": <number from 0 to 1: the fraction of criteria met>, '
    '"met": [<the criteria met, verbatim>], "unmet": [<the criteria not met, verbatim>], '
    '"unverified": [<the criteria you cannot check from what is given, verbatim>], '
    '"feedback": "<what to change so that the unmet criteria are met>"}'
)

_SPECIFY_INSTRUCTIONS = (
    "Turn the request below into a specification for an agent.\n"
    "Reply with one JSON object and nothing else:\n"
    '{"goal": "<the goal, one sentence>", "constraints": [<rules the agent must keep>], '
    '"acceptance_criteria": [<checkable statements about the result>], '
    '"workspace_files": [<the files the task reads or writes>]}'
)


def _with_input(marker: str, instructions: str, payload: Mapping[str, Any]) -> str:
    body = json.dumps(payload, ensure_ascii=False, indent=2)
    return f"{marker}\n{instructions}\n{INPUT_LABEL}\n{body}"


def evaluation_prompt(
    goal: str, criteria: Sequence[str], output: str, files: Mapping[str, str]
) -> str:
    """Build the prompt that asks the model to evaluate an output.

    Args:
        goal: the goal the output answers.
        criteria: the acceptance criteria to judge.
        output: the agent's final answer.
        files: the files the agent wrote, path -> content.

    Returns:
        A prompt whose first line is ``UNDERSTUDY-EVALUATE``.
    """
    payload = {"goal": goal, "criteria": list(criteria), "output": output, "files": dict(files)}
    return _with_input(EVALUATE_MARKER, _EVALUATE_INSTRUCTIONS, payload)


def specification_prompt(message: str) -> str:
    """Build the prompt that asks the model for a specification of a request.

    Args:
        message: the user's request.

    Returns:
        A prompt whose first line is ``UNDERSTUDY-SPECIFY``.
    """
    return _with_input(SPECIFY_MARKER, _SPECIFY_INSTRUCTIONS, {"message": message})


def prompt_kind(text: str) -> str | None:
    """Return ``"evaluate"``, ``"specify"``, ``"interview"`` or ``"compact"`` when ``text``
    starts with that marker line."""
    first = text.lstrip().split("\n", 1)[0].strip()
    return _KINDS.get(first)


def _input_payload(prompt: str, marker: str) -> dict[str, Any]:
    if prompt_kind(prompt) != _KINDS[marker]:
        msg = f"a prompt must start with the line {marker!r}, got {prompt[:60]!r}"
        raise PromptFormatError(msg)
    at = prompt.find("\n" + INPUT_LABEL)
    if at < 0:
        msg = f"the prompt has no {INPUT_LABEL!r} line"
        raise PromptFormatError(msg)
    rest = prompt[at + len(INPUT_LABEL) + 1 :]
    try:
        payload, _ = json.JSONDecoder().raw_decode(rest.lstrip())
    except json.JSONDecodeError as exc:
        msg = f"the prompt's input is not JSON: {exc}"
        raise PromptFormatError(msg) from exc
    if not isinstance(payload, dict):
        msg = f"the prompt's input must be a JSON object, got {type(payload).__name__}"
        raise PromptFormatError(msg)
    return payload


def parse_evaluation_request(prompt: str) -> EvaluationRequest:
    """Read back what an :func:`evaluation_prompt` asks about.

    Raises:
        PromptFormatError: the text is not an evaluation prompt.
    """
    try:
        return EvaluationRequest.model_validate(_input_payload(prompt, EVALUATE_MARKER))
    except ValidationError as exc:
        msg = f"the evaluation prompt's input is invalid: {exc}"
        raise PromptFormatError(msg) from exc


def parse_specification_request(prompt: str) -> str:
    """Read back the message a :func:`specification_prompt` asks about.

    Raises:
        PromptFormatError: the text is not a specification prompt.
    """
    message = _input_payload(prompt, SPECIFY_MARKER).get("message")
    if not isinstance(message, str):
        msg = "the specification prompt's input has no string 'message'"
        raise PromptFormatError(msg)
    return message


_M = TypeVar("_M", bound=BaseModel)


def _find_object(text: str, model: type[_M]) -> _M:
    """Return the first JSON object in ``text`` that validates as ``model``."""
    decoder = json.JSONDecoder()
    problem = "no JSON object"
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                try:
                    return model.model_validate(value)
                except ValidationError as exc:
                    problem = f"a JSON object that is not a valid {model.__name__}: {exc}"
        start = text.find("{", start + 1)
    excerpt = text if len(text) <= 80 else text[:77] + "..."
    msg = (
        f"expected a {model.__name__} JSON object in the model's answer, "
        f"found {problem} in {excerpt!r}"
    )
    raise PromptFormatError(msg)


def parse_evaluation(text: str) -> Evaluation:
    """Read an evaluation from a model's answer, ignoring text and code fences around it.

    Raises:
        PromptFormatError: no JSON object in the text is a valid evaluation.
    """
    return _find_object(text, Evaluation)


def score_of(criteria: Sequence[str], met: Iterable[str]) -> float:
    """Return the share of ``criteria`` that are in ``met`` (1.0 when there are none)."""
    if not criteria:
        return 1.0
    passed = set(met)
    return sum(1 for c in criteria if c in passed) / len(criteria)


def parse_specification(text: str) -> Specification:
    """Read a specification from a model's answer, ignoring text and code fences around it.

    Raises:
        PromptFormatError: no JSON object in the text is a valid specification.
    """
    return _find_object(text, Specification)


# --- interview and compaction ---------------------------------------------------------------


class Clarification(_Frozen):
    """One clarifying question of an interview and the caller's answer."""

    question: str
    answer: str


class InterviewRequest(_Frozen):
    """What an interview prompt asks about (read back by the model server)."""

    request: str
    clarifications: tuple[Clarification, ...] = ()


class InterviewRating(_Frozen):
    """The model's rating of a request: is it a task, how ambiguous and how complex it is
    (0 clear / simple .. 1), the questions that would make it clear, or a direct reply to a
    message that is not a task."""

    is_task: bool = True
    ambiguity: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    complexity: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    questions: tuple[str, ...] = ()
    reply: str = ""
    goal: str = ""
    """The request restated as one clear goal, when the clarifications changed it."""


_INTERVIEW_INSTRUCTIONS = (
    "You interview the user before an agent works on their request. Decide whether the "
    "request (with the clarifications so far) is a task for an agent or just conversation, "
    "and how ambiguous and how complex it is.\n"
    "Reply with one JSON object and nothing else:\n"
    '{"is_task": <true | false>, "ambiguity": <0 (perfectly clear) to 1 (cannot tell what is '
    'wanted)>, "complexity": <0 (one simple step) to 1 (many steps)>, '
    '"questions": [<clarifying questions whose answers would remove the ambiguity>], '
    '"reply": "<when is_task is false: your direct answer to the message>", '
    '"goal": "<when clarifications were given and the request is now clear: the request '
    'restated as one goal>"}'
)

_COMPACT_INSTRUCTIONS = (
    "The conversation of an agent has grown too long. Summarise the turns below: what was "
    "asked, every tool call with its arguments and whether it succeeded, what was learnt "
    "(file contents, command output) as far as later steps need it, and what is left to do.\n"
    "Reply with the summary only, as plain text."
)


def interview_prompt(request: str, clarifications: Sequence[tuple[str, str]] = ()) -> str:
    """Build the prompt that asks the model to rate a request (the interview).

    Args:
        request: the caller's request.
        clarifications: the (question, answer) pairs of the interview so far.

    Returns:
        A prompt whose first line is ``UNDERSTUDY-INTERVIEW``.
    """
    payload = {
        "request": request,
        "clarifications": [{"question": q, "answer": a} for q, a in clarifications],
    }
    return _with_input(INTERVIEW_MARKER, _INTERVIEW_INSTRUCTIONS, payload)


def parse_interview_request(prompt: str) -> InterviewRequest:
    """Read back what an :func:`interview_prompt` asks about.

    Raises:
        PromptFormatError: the text is not an interview prompt.
    """
    try:
        return InterviewRequest.model_validate(_input_payload(prompt, INTERVIEW_MARKER))
    except ValidationError as exc:
        msg = f"the interview prompt's input is invalid: {exc}"
        raise PromptFormatError(msg) from exc


def parse_interview(text: str) -> InterviewRating:
    """Read an interview rating from a model's answer, ignoring text around it.

    Raises:
        PromptFormatError: no JSON object in the text is a valid rating.
    """
    return _find_object(text, InterviewRating)


def compaction_prompt(turns: Sequence[Mapping[str, Any]]) -> str:
    """Build the prompt that asks the model to summarise conversation turns.

    Args:
        turns: chat messages (``role``, ``content``, ``tool_calls``, ``tool_call_id``).

    Returns:
        A prompt whose first line is ``UNDERSTUDY-COMPACT``.
    """
    plain = json.loads(json.dumps(list(turns), default=str))
    return _with_input(COMPACT_MARKER, _COMPACT_INSTRUCTIONS, {"turns": plain})


def parse_compaction_request(prompt: str) -> list[dict[str, Any]]:
    """Read back the turns a :func:`compaction_prompt` asks to summarise.

    Raises:
        PromptFormatError: the text is not a compaction prompt.
    """
    turns = _input_payload(prompt, COMPACT_MARKER).get("turns")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        msg = "the compaction prompt's input has no list of 'turns'"
        raise PromptFormatError(msg)
    return turns


def summary_message(summary: str) -> dict[str, Any]:
    """The user message that stands for compacted turns: ``SUMMARY_LABEL``, then the summary."""
    return {"role": "user", "content": f"{SUMMARY_LABEL}\n{summary.strip()}"}


# --- tools ----------------------------------------------------------------------------------

_TOOL_SPECS: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "read_file": (
        "Read a text file and return its content.",
        {"path": "the file to read; relative paths are inside the workspace"},
    ),
    "write_file": (
        "Write text to a file, creating or replacing it.",
        {
            "path": "the file to write; relative paths are inside the workspace",
            "content": "the complete new content of the file",
        },
    ),
    "list_directory": (
        "List the entries of a directory, one per line.",
        {"path": "the directory to list; relative paths are inside the workspace"},
    ),
    "run_command": (
        "Run a program (no shell) in the workspace and return its output.",
        {"argv": 'the program and its arguments, e.g. ["python3", "primes.py"]'},
    ),
}


def tool_definitions(names: Iterable[str] = TOOL_NAMES) -> list[dict[str, Any]]:
    """Return OpenAI function-tool definitions for the named tools.

    Raises:
        ValueError: a name is not one of :data:`TOOL_NAMES`.
    """
    tools = []
    for name in names:
        if name not in _TOOL_SPECS:
            msg = f"unknown tool {name!r}, expected one of {', '.join(TOOL_NAMES)}"
            raise ValueError(msg)
        description, params = _TOOL_SPECS[name]
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": description,
                    "parameters": {
                        "type": "object",
                        "properties": {p: _param_schema(p, d) for p, d in params.items()},
                        "required": list(params),
                        "additionalProperties": False,
                    },
                },
            }
        )
    return tools


def _param_schema(name: str, description: str) -> dict[str, Any]:
    if name == "argv":
        return {"type": "array", "items": {"type": "string"}, "description": description}
    return {"type": "string", "description": description}


def format_tool_error(error: str, message: str) -> str:
    """Format a failed tool call's result, e.g. ``ERROR AccessDenied: /etc is outside ...``."""
    return f"{TOOL_ERROR_PREFIX} {error}: {message}"


_ERROR_LINE = re.compile(r"(?:ERROR\b|(?i:error:|access denied|permission denied))")


def parse_tool_result(text: str) -> ToolResult:
    """Read a tool result back: plain output, an ``ERROR`` line, or a JSON object.

    JSON objects with an ``error`` key (or ``"ok": false``) are errors; one with a
    ``content``, ``output``, ``result`` or ``entries`` key is that output (lists joined by
    newlines). Anything else is plain output.
    """
    stripped = text.strip()
    if _ERROR_LINE.match(stripped):
        return ToolResult(ok=False, error=stripped)
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return ToolResult(ok=True, output=text)
        if isinstance(value, dict):
            return _json_tool_result(value, text)
    return ToolResult(ok=True, output=text)


def _json_tool_result(value: dict[str, Any], text: str) -> ToolResult:
    error = value.get("error")
    if error or value.get("ok") is False:
        if isinstance(error, dict):
            error = error.get("message") or json.dumps(error)
        return ToolResult(ok=False, error=str(error or value.get("message") or text))
    for key in ("content", "output", "result", "entries"):
        found = value.get(key)
        if isinstance(found, list):
            return ToolResult(ok=True, output="\n".join(str(item) for item in found))
        if isinstance(found, str):
            return ToolResult(ok=True, output=found)
    return ToolResult(ok=True, output=text)


def estimate_tokens(text: str) -> int:
    """Estimate the tokens of ``text`` as OpenAI's rule of thumb does: one per 4 characters."""
    return (len(text) + 3) // 4
