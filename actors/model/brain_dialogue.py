"""The embedded model's answers to the interview and compaction prompts (pure, deterministic).

Interview (``UNDERSTUDY-INTERVIEW``): a greeting, a thank-you or small talk is not a task and
gets a direct reply. A request whose plan (``brain.plan_goal``) has no action, or only a write
whose subject is a placeholder ("something", "anything", "stuff"), is ambiguous (0.8, or 0.9
with no action at all) and gets clarifying questions; an answer that is itself a concrete
request ("write a haiku about the sea to sea.txt") becomes the goal, and answers to the
subject and file questions fill the vague write in. A concrete request is clear (0.0).
Complexity grows with the plan's steps: 0 for one step, 1 for five or more.

Compaction (``UNDERSTUDY-COMPACT``): the summary lists every tool call of the folded turns,
one ``- step <tool> ok|error {arguments} => <output excerpt>`` line each, oldest first,
carrying forward the steps of an earlier summary; :func:`summary_steps` reads them back, so
the embedded agent turn counts compacted steps as done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from protocols.prompts import (
    SUMMARY_LABEL,
    InterviewRating,
    InterviewRequest,
    ToolResult,
    parse_tool_result,
)

if TYPE_CHECKING:
    from protocols.goals import Action

__all__ = [
    "QUESTION_FILE",
    "QUESTION_SUBJECT",
    "QUESTION_TASK",
    "rate_request",
    "summarise_turns",
    "summary_steps",
]

QUESTION_TASK: Final = (
    "What should I do? For example: write a haiku about the sea to sea.txt, read notes.txt, "
    "list the workspace, or run a command."
)
QUESTION_SUBJECT: Final = (
    "What should I write, and about what? (for example: a haiku about the sea)"
)
QUESTION_FILE: Final = "Which file should I write it to? (answer 'none' to get it in my reply)"

_CHAT: Final = re.compile(
    r"^(?:hi|hello|hey|yo|hiya|greetings|good\s+(?:morning|afternoon|evening|day)|thanks|"
    r"thank\s+you|cheers|how\s+are\s+you|how\s+is\s+it\s+going|what'?s\s+up|who\s+are\s+you|"
    r"what\s+can\s+you\s+do|bye|goodbye)\b",
    re.IGNORECASE,
)
_CHAT_WORDS: Final = 8
_VAGUE: Final = frozenset(
    {"", "something", "anything", "stuff", "things", "it", "this", "that", "text", "some text"}
)
_NONE: Final = frozenset({"none", "no", "no file", "nowhere", "-", "just reply", "reply"})
_STEP_PREFIX: Final = "- step "
_EXCERPT: Final = 120
_ARGUMENTS: Final = 400

Planner = Callable[[str], Sequence["Action"]]


def _is_chat(text: str) -> bool:
    words = re.findall(r"[\w']+", text)
    return bool(_CHAT.match(text.strip())) and len(words) <= _CHAT_WORDS


def _vague(action: Action) -> bool:
    if action.tool not in (None, "write_file") or action.content is None:
        return False
    content = action.content
    if content.kind != "prose":
        return False
    what = content.what.strip().lower().strip(" .!?")
    return what in _VAGUE or content.topic.strip().lower() in _VAGUE


def _complexity(actions: Sequence[Action]) -> float:
    steps = max(1, sum(1 for a in actions if a.tool is not None))
    return min(1.0, (steps - 1) / 4)


def _answer(asked: InterviewRequest, question: str) -> str | None:
    for clarification in reversed(asked.clarifications):
        if clarification.question == question and clarification.answer.strip():
            return clarification.answer.strip()
    return None


def _concrete(actions: Sequence[Action]) -> bool:
    return bool(actions) and not any(_vague(a) for a in actions)


def rate_request(asked: InterviewRequest, plan: Planner) -> InterviewRating:
    """Rate a request (and the clarifications so far) the way the interview prompt asks.

    Args:
        asked: the request and the clarifications, as the prompt carries them.
        plan: the goal grammar (``brain.plan_goal``).

    Returns:
        The rating; ``goal`` restates the request once the answers made it concrete.
    """
    request = asked.request.strip()
    if not asked.clarifications and _is_chat(request):
        return InterviewRating(
            is_task=False,
            reply=(
                "Hello! I am Understudy's embedded model. Give me a task, for example: "
                "write a haiku about the sea to sea.txt."
            ),
        )
    for clarification in reversed(asked.clarifications):  # a whole new request answers all
        answer = clarification.answer.strip()
        answered = plan(answer)
        if _concrete(answered):
            return InterviewRating(goal=answer, complexity=_complexity(answered))
    actions = plan(request)
    if _concrete(actions):
        return InterviewRating(complexity=_complexity(actions))
    if not actions:
        return InterviewRating(ambiguity=0.9, questions=(QUESTION_TASK,))
    subject, target = _answer(asked, QUESTION_SUBJECT), _answer(asked, QUESTION_FILE)
    vague = next(a for a in actions if _vague(a))
    if subject is None or (target is None and not vague.target):
        missing = [QUESTION_SUBJECT] if subject is None else []
        if target is None and not vague.target:
            missing.append(QUESTION_FILE)
        return InterviewRating(ambiguity=0.8 if subject is None else 0.4, questions=tuple(missing))
    where = vague.target or ("" if target is None or target.lower() in _NONE else target)
    goal = f"write {subject}" + (f" to {where}" if where else "")
    return InterviewRating(goal=goal, complexity=_complexity(plan(goal)))


# --- compaction -------------------------------------------------------------------------------


def _step_line(name: str, arguments: str, result: ToolResult) -> str:
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError:
        args = {}
    compact = json.dumps(args if isinstance(args, dict) else {}, separators=(",", ":"))
    output = result.output if result.ok else (result.error or result.output)
    flat = " ".join(str(output).split())
    status = "ok" if result.ok else "error"
    return f"{_STEP_PREFIX}{name} {status} {compact[:_ARGUMENTS]} => {flat[:_EXCERPT]}"


def summarise_turns(turns: Sequence[dict[str, Any]]) -> str:
    """Summarise folded conversation turns: their tool calls, one ``- step`` line each."""
    calls: dict[str, tuple[str, str]] = {}
    lines: list[str] = []
    asked: list[str] = []
    for turn in turns:
        role, content = turn.get("role"), str(turn.get("content") or "")
        if role == "user" and content.startswith(SUMMARY_LABEL):
            lines += [line for line in content.splitlines() if line.startswith(_STEP_PREFIX)]
        elif role == "user" and content.strip():
            asked.append(" ".join(content.split())[:200])
        elif role == "assistant":
            for call in turn.get("tool_calls") or []:
                function = call.get("function") or {}
                calls[str(call.get("id"))] = (
                    str(function.get("name", "tool")),
                    str(function.get("arguments", "")),
                )
        elif role == "tool":
            name, arguments = calls.get(str(turn.get("tool_call_id")), ("tool", "{}"))
            lines.append(_step_line(name, arguments, parse_tool_result(content)))
    head = [f"Also asked: {text}" for text in asked]
    return "\n".join([*head, *lines] if lines else [*head, "No tool was called."])


_STEP = re.compile(r"^- step (?P<tool>\S+) (?P<status>ok|error) ")


def summary_steps(text: str) -> list[tuple[str, str, ToolResult]]:
    """Read back the steps of a summary message: (tool, arguments, result), oldest first."""
    steps = []
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        found = _STEP.match(line)
        if found is None:
            continue
        try:
            args, end = decoder.raw_decode(line, found.end())
        except json.JSONDecodeError:
            args, end = {}, line.find(" => ")
        output = line[end:].removeprefix(" => ") if end >= 0 else ""
        ok = found.group("status") == "ok"
        result = ToolResult(ok=ok, output=output if ok else "", error=None if ok else output)
        steps.append((found.group("tool"), json.dumps(args), result))
    return steps
