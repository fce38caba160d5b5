"""The model server's pure logic: the agent turn, the judge and specify.

Everything here is I/O-free and deterministic: every answer is a pure function of the request
and the server's :class:`Quality`. The goal grammar is ``protocols.goals`` (shared with the
orchestrator and the agents); what each write holds is ``actors.model.writers``.

The agent turn carries a goal's steps out, one tool call per turn. A goal it does not
understand (no step it knows, or a write of something outside what it can make: a program
outside its catalogue, another language, a binary format) is refused at once: the answer has
``refusal`` set and says why. After a failed tool call it reads the error and tries the same
step again (at most :data:`STEP_RETRIES` times; an access denial or a missing tool ends the
run), then answers with what it did and what failed.

``UNDERSTUDY-INTERVIEW`` and ``UNDERSTUDY-COMPACT`` prompts are answered through
:mod:`actors.model.brain_dialogue`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from actors.model.brain_dialogue import rate_request, summarise_turns, summary_steps
from actors.model.wire import ChatCompletionRequest, ChatMessage, FunctionCall
from actors.model.writers import criteria_missed, render_artefact
from protocols import prompts
from protocols.artefacts import check_content, parse_criterion
from protocols.goals import Action, criteria_for_goal, plan_goal
from protocols.prompts import Evaluation, Specification, ToolResult

__all__ = [
    "STEP_RETRIES",
    "Quality",
    "Reply",
    "goal_of",
    "judge",
    "refusal_of",
    "respond",
    "specify",
]

#: How many times a failed step is tried again before the model gives up on it.
STEP_RETRIES: Final = 2
_I = re.IGNORECASE
_UNRECOVERABLE = re.compile(r"^ERROR (?:AccessDenied|ToolNotAvailable|NetworkIsolation)", _I)


@dataclass(frozen=True)
class Quality:
    """How well the model writes: each criterion of a write is met with probability
    ``quality`` (a seeded, deterministic draw; 1: always), except those named in the goal's
    constraints, which are always met."""

    quality: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the range."""
        if not 0.0 <= self.quality <= 1.0:
            msg = f"quality must be between 0 and 1, got {self.quality}"
            raise ValueError(msg)


# --- evaluation and specification -----------------------------------------------------------


def _file_for(path: str, files: dict[str, str]) -> str | None:
    want = path.strip("`'\"").removeprefix("./")
    return next(
        (
            key
            for key in files
            if key == want or key.endswith("/" + want) or posixpath.basename(key) == want
        ),
        None,
    )


def judge(criteria: Sequence[str], output: str, files: dict[str, str]) -> Evaluation:
    """Judge the files an agent wrote against ``criteria``, checking what the text shows.

    A criterion in one of the checkable forms of ``protocols.artefacts`` is met or unmet by
    its check on the file's text (exists, parses, fields, columns, rows, lines, mentions,
    contains, copy). What the text cannot show (``running P prints ...``: this model runs no
    program; any free-form criterion) is ``unverified``, never met.

    Returns:
        The evaluation; ``score`` is the share of all criteria met.
    """
    del output  # what an agent says it did is not evidence
    met: list[str] = []
    unmet: list[str] = []
    unverified: list[str] = []
    notes: list[str] = []
    for criterion in criteria:
        check = parse_criterion(criterion)
        if check is None:
            unverified.append(criterion)
            continue
        key = _file_for(check.path, files)
        if key is None:
            unmet.append(criterion)
            notes.append(f"{criterion}: no file {check.path}")
            continue
        if check.kind == "copy":
            source = _file_for(check.text, files)
            verdict: bool | None = None if source is None else files[source] == files[key]
            why = "differs from its source" if verdict is False else "the source was not given"
        else:
            verdict, why = check_content(check, files[key])
        if verdict is None:
            unverified.append(criterion)
        elif verdict:
            met.append(criterion)
        else:
            unmet.append(criterion)
            notes.append(f"{criterion}: {why}")
    score = len(met) / len(criteria) if criteria else 1.0
    feedback = "All criteria met." if not unmet else "Unmet: " + "; ".join(notes) + "."
    if unverified:
        feedback += f" Not checkable from the files' text: {'; '.join(unverified)}."
    return Evaluation(
        score=score,
        met=tuple(met),
        unmet=tuple(unmet),
        unverified=tuple(unverified),
        feedback=feedback,
    )


_CLAUSE_REST = r"(?:[^.;!?]|[.!?](?=\S))*"  # to the end of the clause; "a.txt" stays whole
_CONSTRAINT = re.compile(
    r"\b(?:without|do\s+not|don't|never|must\s+not|mustn't|should\s+not|shouldn't)\b"
    + _CLAUSE_REST,
    _I,
)
_SO_THAT = re.compile(r"\bso\s+that\s+(?P<rest>" + _CLAUSE_REST + ")", _I)
_MUST = re.compile(r"\b(?:must|should)\b", _I)


def specify(message: str) -> Specification:
    """Derive a specification from a request, deterministically.

    The goal is the message; constraints are its ``without``/``do not``/``never``/
    ``must not`` clauses; acceptance criteria are the checkable criteria of each file the
    goal writes (``protocols.goals.criteria_for_goal``), then its ``so that`` clauses and its
    ``must``/``should`` clauses (the goal itself when there are none); workspace files are the
    paths its actions read or write.
    """
    goal = message.strip() or "(empty request)"
    constraints: list[str] = []
    criteria = criteria_for_goal(goal)
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", goal):
        for found in _CONSTRAINT.finditer(sentence):
            constraints.append(found.group(0).strip(" ,;.!?"))
        positive = _CONSTRAINT.sub("", sentence)
        for found in _SO_THAT.finditer(positive):
            criteria.append(found.group("rest").strip(" ,;.!?"))
        positive = _SO_THAT.sub("", positive)
        for part in re.split(r",\s*|\s+and\s+(?=\w+\s+(?:must|should)\b)", positive):
            if _MUST.search(part):
                criteria.append(part.strip(" ,;.!?"))
    criteria = [c for c in dict.fromkeys(criteria) if c]
    if not criteria:
        criteria = [goal]
    plan = plan_goal(goal)
    files = [a.target for a in plan if a.tool in {"read_file", "write_file"} and a.target]
    return Specification(
        goal=goal,
        constraints=tuple(dict.fromkeys(c for c in constraints if c)),
        acceptance_criteria=tuple(criteria),
        workspace_files=tuple(dict.fromkeys(files)),
    )


# --- the agent turn -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The deterministic answer to one request, before it is wrapped as a chat.completion."""

    content: str | None
    tool_name: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""
    raw_arguments: str | None = None  # set by the malformed_tool_call fault
    refusal: str | None = None  # set when the model will not do the goal, and why


@dataclass(frozen=True)
class _Done:
    name: str
    arguments: str
    result: ToolResult

    def args(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments)
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


def _history(messages: Sequence[ChatMessage]) -> list[_Done]:
    calls: dict[str, FunctionCall] = {}
    done: list[_Done] = []
    for message in messages:
        if message.role == "assistant":
            for call in message.tool_calls or []:
                calls[call.id] = call.function
        elif message.role == "user" and message.text().startswith(prompts.SUMMARY_LABEL):
            done += [_Done(*step) for step in summary_steps(message.text())]  # compacted steps
        elif message.role in {"tool", "function"}:
            function = calls.get(message.tool_call_id or "")
            name = function.name if function else (message.name or "tool")
            done.append(
                _Done(
                    name,
                    function.arguments if function else "{}",
                    prompts.parse_tool_result(message.text()),
                )
            )
    return done


def _in_workspace(path: str, workspace: str) -> str:
    if not workspace:
        return path or "."
    if not path:
        return workspace
    if posixpath.isabs(path) or path.startswith("~"):
        return path
    return posixpath.join(workspace, path)


def goal_of(messages: Sequence[ChatMessage]) -> prompts.ParsedGoal:
    """Return the goal fields of a conversation: the system prompt's, else the first user text."""
    system = "\n".join(m.text() for m in messages if m.role in {"system", "developer"})
    parsed = prompts.parse_goal(system)
    if not parsed.goal.strip():
        first_user = next((m.text() for m in messages if m.role == "user"), "")
        parsed = parsed.model_copy(update={"goal": first_user})
    return parsed


def refusal_of(goal: str, plan: Sequence[Action]) -> str | None:
    """Return why the model cannot do ``goal`` (planned as ``plan``), or None when it can."""
    for action in plan:
        if action.content is not None and action.content.kind == "unsupported":
            return f"I cannot do this goal: {action.content.reason}."
    if not plan:
        return (
            f"I cannot do this goal: the embedded model is a deterministic simulator; it "
            f"reads, writes (text, poems, JSON, YAML, CSV, catalogue programs), lists and "
            f"runs, and understands nothing else in {goal.strip()[:200]!r}."
        )
    return None


def respond(request: ChatCompletionRequest, quality: Quality | None = None) -> Reply:
    """Return the deterministic answer to a chat request (no HTTP, no faults)."""
    for message in reversed(request.messages):
        if message.role in {"system", "developer", "user"}:
            kind = prompts.prompt_kind(message.text())
            if kind == "evaluate":
                asked = prompts.parse_evaluation_request(message.text())
                verdict = judge(asked.criteria, asked.output, asked.files)
                return Reply(verdict.model_dump_json())
            if kind == "specify":
                spec = specify(prompts.parse_specification_request(message.text()))
                return Reply(spec.model_dump_json())
            if kind == "interview":
                interview = prompts.parse_interview_request(message.text())
                return Reply(rate_request(interview, plan_goal).model_dump_json())
            if kind == "compact":
                return Reply(summarise_turns(prompts.parse_compaction_request(message.text())))
    return _agent_turn(request, quality or Quality())


def _available_tools(request: ChatCompletionRequest) -> set[str]:
    if request.tool_choice == "none":
        return set()
    return {tool.function.name for tool in request.tools or []}


@dataclass(frozen=True)
class _Progress:
    """Where the history leaves the plan: the next step, its tries, and a step given up."""

    step: int
    tries: int
    given_up: _Done | None


def _progress(history: Sequence[_Done]) -> _Progress:
    step = tries = 0
    for done in history:
        if done.result.ok:
            step, tries = step + 1, 0
            continue
        tries += 1
        if tries > STEP_RETRIES or _UNRECOVERABLE.match(done.result.error or ""):
            return _Progress(step, tries, done)
    return _Progress(step, tries, None)


def _agent_turn(request: ChatCompletionRequest, quality: Quality) -> Reply:
    parsed = goal_of(request.messages)
    goal, workspace = parsed.goal.strip(), parsed.workspace.strip()
    plan = plan_goal(goal)
    refusal = refusal_of(goal, plan)
    if refusal is not None:
        return Reply(refusal, refusal=refusal)
    steps = [a for a in plan if a.tool is not None]
    history = _history(request.messages)
    where = _progress(history)
    if where.given_up is None and where.step < len(steps):
        step = steps[where.step]
        assert step.tool is not None  # noqa: S101 - steps are the actions with a tool
        if step.tool not in _available_tools(request):
            missing = (
                f"I cannot {_verb(step.tool)} {step.target or 'the workspace'}: "
                f"the {step.tool} tool is not available to me."
            )
            return Reply(_final_text(plan, steps, history, quality, parsed, extra=missing))
        arguments = _arguments(step, workspace, history, quality, parsed)
        call_id = (
            "call_"
            + hashlib.sha256(f"{goal}\x1f{len(history)}\x1f{step.tool}".encode()).hexdigest()[:24]
        )
        return Reply(None, step.tool, arguments, call_id)
    return Reply(_final_text(plan, steps, history, quality, parsed))


def _verb(tool: str) -> str:
    return {
        "read_file": "read",
        "write_file": "write",
        "list_directory": "list",
        "run_command": "run",
    }.get(tool, f"call {tool} for")


def _last_read(history: Sequence[_Done]) -> tuple[str, str] | None:
    for done in reversed(history):
        if done.name == "read_file" and done.result.ok:
            return str(done.args().get("path", "the file")), done.result.output
    return None


def _write_text(
    action: Action,
    path: str,
    history: Sequence[_Done],
    quality: Quality,
    parsed: prompts.ParsedGoal,
) -> str:
    assert action.content is not None  # noqa: S101 - every write and answer has content
    missed = criteria_missed(
        action.content,
        action.target,
        quality=quality.quality,
        seed=quality.seed,
        goal=parsed.goal,
        constraints=parsed.constraints,
    )
    return render_artefact(action.content, path, _last_read(history), missed)


def _arguments(
    step: Action,
    workspace: str,
    history: Sequence[_Done],
    quality: Quality,
    parsed: prompts.ParsedGoal,
) -> dict[str, Any]:
    if step.tool == "run_command":
        return {"argv": shlex.split(step.target)}
    path = _in_workspace(step.target, workspace)
    if step.tool == "write_file":
        return {"path": path, "content": _write_text(step, path, history, quality, parsed)}
    return {"path": path}


def _final_text(
    plan: Sequence[Action],
    steps: Sequence[Action],
    history: Sequence[_Done],
    quality: Quality,
    parsed: prompts.ParsedGoal,
    extra: str = "",
) -> str:
    parts = []
    where = _progress(history)
    step = 0
    for i, done in enumerate(history):
        action = steps[step] if step < len(steps) else None
        if done.result.ok:
            parts.append(_describe(done, action, history[:i]))
            step += 1
        elif done is where.given_up:
            parts.append(_describe(done, action, history[:i]))
            parts.append(f"I gave up on that step after {where.tries} tries.")
            break
        else:
            parts.append(_describe(done, action, history[:i]) + " I tried again.")
    if where.given_up is None:
        for action in plan:
            if action.tool is None and action.content is not None:
                text = _write_text(action, "", history, quality, parsed)
                parts.append(text.rstrip("\n"))
    if extra:
        parts.append(extra)
    return "\n".join(parts) or "Nothing to do."


def _excerpt(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _describe(done: _Done, step: Action | None, before: Sequence[_Done]) -> str:
    args = done.args()
    argv = args.get("argv")
    command = shlex.join(str(a) for a in argv) if isinstance(argv, list) else ""
    target = str(args.get("path") or command or "")
    if not done.result.ok:
        what = f"`{target}`" if done.name == "run_command" else target or "(unparsable arguments)"
        return f"Could not {_verb(done.name)} {what}: {done.result.error}."
    output = done.result.output
    if done.name == "write_file":
        return f"Wrote {_written(str(args.get('content', '')), step, before)} to {target}."
    if done.name == "read_file":
        lines, words = len(output.splitlines()), len(output.split())
        first = next((ln for ln in output.splitlines() if ln.strip()), "")
        begins = f' It begins: "{_excerpt(first, 120).rstrip(".")}".' if first else ""
        return f"Read {target} ({lines} lines, {words} words).{begins}"
    if done.name == "list_directory":
        entries = _entries(output)
        shown = ", ".join(entries[:20]) + (
            f" and {len(entries) - 20} more" if len(entries) > 20 else ""
        )
        return f"{target} has {len(entries)} entries" + (f": {shown}." if entries else ".")
    if done.name == "run_command":
        return f"Ran `{target}`. Output: {_excerpt(output, 300) or '(no output)'}"
    return f"Called {done.name}: {_excerpt(output, 200)}"


def _entries(output: str) -> list[str]:
    """Directory entries from a listing: a JSON list, or one entry per line."""
    try:
        value = json.loads(output)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [e.strip() for e in output.splitlines() if e.strip()]


def _written(content: str, step: Action | None, before: Sequence[_Done]) -> str:
    size = f"{len(content)} characters"
    if step is None or step.content is None:
        return size
    c = step.content
    source = _last_read(before)
    src = source[0] if source else "the file read"
    described = {
        "poem": f"a {c.form} about {c.topic}",
        "prose": f"a text about {c.topic}",
        "json": "a JSON object" + (f" with the fields {', '.join(c.fields)}" if c.fields else ""),
        "yaml": "a YAML mapping" + (f" with the fields {', '.join(c.fields)}" if c.fields else ""),
        "csv": "a CSV table" + (f" with the columns {', '.join(c.fields)}" if c.fields else ""),
        "program": "a Python program",
        "summary": f"a summary of {src}",
        "copy": f"a copy of {src}",
    }.get(c.kind)
    return f"{described} ({size})" if described else size
