"""An embedded OpenAI-compatible model server: deterministic answers, real HTTP, faults on demand.

Agents talk to it through the real ``openai`` client, so they run with no key and no network,
and experiments can make the "model" fail exactly when they want.

Endpoints (on 127.0.0.1 by default; ``start()`` returns the ``base_url`` ending in ``/v1``)
    POST   /v1/chat/completions   OpenAI's chat.completion schema; unknown fields are ignored
    GET    /v1/models             one model, ``understudy-stub``
    POST   /_control/faults       ``{"faults": [FaultSpec, ...]}`` queues faults
    DELETE /_control/faults       clears the queue
    GET    /_control/stats        requests, faults fired, pending faults, a request log

How it answers (every answer is a pure function of the request; see :func:`plan_goal`)
    agent runs    the goal is read from the system prompt (``_prompts.agent_system_prompt``) or
                  the first user message; its clauses become tool calls (``write_file``,
                  ``read_file``, ``list_directory``, ``run_command``), one per turn, and the
                  number of ``tool`` messages so far says which step is next; after the last
                  step (or the first failed one) comes a final text summary
    evaluation    a message starting with ``UNDERSTUDY-EVALUATE``: JSON ``{score, met, unmet,
                  feedback}``; a criterion is met when its key words occur in the output or in
                  the files (``file X exists``: X is among the files)
    specification a message starting with ``UNDERSTUDY-SPECIFY``: JSON ``{goal, constraints,
                  acceptance_criteria, workspace_files}`` from the request's clauses

Faults (FaultSpec.kind)
    429 (Retry-After header), 500, 401, 400 (``context_length_exceeded`` by default), hang
    (sleeps ``seconds`` or until the client disconnects, then answers), malformed_tool_call
    (a tool call whose ``arguments`` is not JSON). Each spec fires on the next ``count``
    requests whose match text (system messages plus the first user message) contains
    ``match``; one fault per request, in queue order.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import posixpath
import re
import select
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actors import _prompts
from actors._prompts import Evaluation, Specification, ToolResult, estimate_tokens

log = structlog.get_logger("understudy.model_server")

DEFAULT_MODEL: Final = "understudy-stub"
MAX_BODY_BYTES: Final = 32 * 1024 * 1024

# --- OpenAI wire models ---------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Wire):
    """The function half of a tool call; ``arguments`` is a JSON string (or, faulted, not)."""

    name: str
    arguments: str


class ToolCall(_Wire):
    """One tool call of an assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    """One message of a chat-completions request."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """Return the content as text (the text parts of a multi-part content, joined)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class FunctionDefinition(_Wire):
    """A function tool as the request declares it."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Wire):
    """A tool the model may call."""

    type: str = "function"
    function: FunctionDefinition


class ChatCompletionRequest(_Wire):
    """The body of ``POST /v1/chat/completions`` (the fields this server uses)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None


class AssistantMessage(_Wire):
    """The message of a completion choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class Choice(_Wire):
    """One completion choice (this server always returns exactly one)."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "tool_calls", "length"]
    logprobs: None = None


class Usage(_Wire):
    """Token counts, estimated with ``_prompts.estimate_tokens``."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Wire):
    """A ``chat.completion`` object, as OpenAI returns it."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str = "understudy-stub"


# --- faults and statistics ------------------------------------------------------------------

FaultKind = Literal["429", "500", "401", "400", "hang", "malformed_tool_call"]


class FaultSpec(BaseModel):
    """A fault to inject into the next ``count`` matching chat requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1)
    retry_after: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    seconds: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    match: str | None = None
    message: str | None = None
    code: str | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _status_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class FaultsRequest(BaseModel):
    """The body of ``POST /_control/faults``."""

    model_config = ConfigDict(extra="forbid")

    faults: list[FaultSpec]


class RequestRecord(BaseModel):
    """One chat request as the server handled it; times come from the server's clock."""

    at: float
    finished_at: float
    status: int | None
    fault: FaultKind | None = None
    disconnected: bool = False
    finish_reason: str | None = None
    tool: str | None = None


class ServerStats(BaseModel):
    """What ``GET /_control/stats`` and :meth:`ModelServer.stats` return."""

    requests: int
    served: int
    faults_fired: dict[str, int]
    pending_faults: list[FaultSpec]
    request_log: list[RequestRecord]


class _FaultQueue:
    """Queued faults, consumed in order by matching requests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[list[Any]] = []  # [spec, remaining]

    def add(self, specs: Sequence[FaultSpec]) -> None:
        with self._lock:
            self._queue.extend([spec, spec.count] for spec in specs)

    def clear(self) -> int:
        with self._lock:
            cleared = sum(remaining for _, remaining in self._queue)
            self._queue.clear()
            return cleared

    def take(self, text: str) -> FaultSpec | None:
        with self._lock:
            for entry in self._queue:
                spec: FaultSpec = entry[0]
                if spec.match is None or spec.match in text:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._queue.remove(entry)
                    return spec
            return None

    def pending(self) -> list[FaultSpec]:
        with self._lock:
            return [spec.model_copy(update={"count": n}) for spec, n in self._queue]


# --- the goal grammar -----------------------------------------------------------------------

ContentKind = Literal["haiku", "text", "literal", "summary", "copy"]


@dataclass(frozen=True)
class Content:
    """What a write (or a composed answer) should contain."""

    kind: ContentKind
    what: str = ""
    topic: str = ""
    literal: str = ""


@dataclass(frozen=True)
class Action:
    """One step of a goal: a tool call, or text for the final answer (``tool`` None)."""

    tool: Literal["read_file", "write_file", "list_directory", "run_command"] | None
    target: str = ""
    content: Content | None = None


_WRITE = r"write|create|save|store|put|compose|generate|produce|draft|make|record|dump|copy"
_READ = r"read|open|cat|view|inspect|summari[sz]e|show|display"
_LIST = r"list|ls|enumerate"
_RUN = r"run|execute|exec"
_VERB = rf"(?:{_WRITE}|{_READ}|{_LIST}|{_RUN})"
_I = re.IGNORECASE

_QUOTED = re.compile(r"`[^`\n]*`|\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]+'(?!\w)")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_SPLIT = re.compile(
    rf"\s*[,;]?\s*\b(?:and\s+then|and|then|after\s+that|afterwards|finally)\b\s*(?={_VERB}\b)"
    rf"|\s*;\s*|,\s*(?={_VERB}\b)",
    _I,
)
_NEGATIVE = re.compile(
    r"\b(?:so\s+that|such\s+that|without|but\s+(?:do\s+not|don't|never)|do\s+not|don't|never"
    r"|must\s+not|mustn't|should\s+not|shouldn't|make\s+sure)\b.*$",
    _I | re.DOTALL,
)
_PREFIX = re.compile(
    r"^(?:(?:please|kindly|now|first|firstly|then|next|finally|also|and)\b[\s,]*"
    r"|(?:can|could|would|will)\s+you\s+(?:please\s+)?"
    r"|i\s+(?:want|need|would\s+like|'d\s+like)\s+you\s+to\s+"
    r"|your\s+(?:task|job|goal)\s+is\s+to\s+)+",
    _I,
)
_LEAD_VERB = re.compile(rf"^(?:(?:quickly|just|simply|carefully|also)\s+)*(?P<verb>{_VERB})\b", _I)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_EXTENSION = re.compile(r"[\w-]\.[A-Za-z][A-Za-z0-9]{0,9}$")
_NOT_PATHS = frozenset({"e.g", "i.e", "etc", "vs"})
_TARGET_PREPS = frozenset({"to", "into", "in", "as", "at", "named", "called", "file"})
_ARTICLES = re.compile(r"^(?:(?:a|an|the|some|new|short|brief)\s+)+", _I)


class _Masked:
    """A goal with its quoted spans replaced by placeholders, so splitting cannot cut them."""

    def __init__(self, text: str) -> None:
        self.spans: list[str] = []

        def save(match: re.Match[str]) -> str:
            self.spans.append(match.group(0))
            return f"\x00{len(self.spans) - 1}\x00"

        self.text = _QUOTED.sub(save, text.replace("\x00", ""))

    def unmask(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.spans[int(m.group(1))], text)

    def quoted(self, token: str) -> str | None:
        """Return the inside of a token that is one quoted span, else None."""
        match = _PLACEHOLDER.fullmatch(token.strip().rstrip(".,;:!?"))
        return self.spans[int(match.group(1))][1:-1] if match else None


def _path_token(token: str, masked: _Masked) -> str | None:
    quoted = masked.quoted(token)
    if quoted is not None:
        return quoted if quoted.strip() else None
    t = token.rstrip(".,;:!?)").lstrip("(")
    if t.lower() in _NOT_PATHS or not re.fullmatch(r"[\w~./-]+", t):
        return None
    return t if ("/" in t and t not in {"/", "./"}) or _EXTENSION.search(t) else None


def _clauses(goal: str) -> tuple[list[str], _Masked]:
    masked = _Masked(goal)
    clauses = []
    for sentence in _SENTENCE_SPLIT.split(masked.text):
        for part in _CLAUSE_SPLIT.split(sentence):
            clause = _NEGATIVE.sub("", part).strip().rstrip(".!?,;:").strip()
            if clause:
                clauses.append(clause)
    return clauses, masked


def plan_goal(goal: str) -> list[Action]:
    """Turn a goal into the steps the server will take, in order.

    Grammar (case-insensitive; ``and``/``then``/``,``/``;`` before a verb start a new
    clause; quoted spans are kept whole; ``so that``/``without``/``do not``... clauses are
    never actions):

    - ``write|create|save|... <what> to|into|in|as <path>`` or ``<verb> <path> with
      <what>``: ``write_file``; what is a haiku (``haiku`` in it), a quoted literal, a
      summary or copy of the file read just before (``its summary``, ``its contents``), or
      a short text about its topic (the words after ``about``/``of``/``on``...).
    - the same without a path: the text is composed into the final answer.
    - ``read|open|cat|summarize|show <path>``: ``read_file``.
    - ``list|ls [the files in] [<dir>]``: ``list_directory`` (the workspace by default).
    - ``run|execute [the command] <command>``: ``run_command`` (a quoted command is exact).

    Args:
        goal: the goal text.

    Returns:
        The actions; empty when nothing in the goal is recognised.
    """
    clauses, masked = _clauses(goal)
    actions: list[Action] = []
    for clause in clauses:
        actions.extend(_clause_actions(_PREFIX.sub("", clause), masked, actions))
    return actions


def _clause_actions(clause: str, masked: _Masked, earlier: list[Action]) -> list[Action]:
    lead = _LEAD_VERB.match(clause)
    if lead is None:
        return []
    verb = lead.group("verb").lower()
    rest = clause[lead.end():].strip()
    action: Action | None
    if verb in {"list", "ls", "enumerate"} or (
        verb in {"show", "display"}
        and re.match(r"(?:me\s+)?(?:all\s+)?(?:the\s+)?(?:files|entries|directory|folder)\b",
                     rest, _I)
    ):
        action = _list_action(rest, masked)
    elif verb in {"run", "execute", "exec"}:
        action = _run_action(rest, masked)
    elif re.fullmatch(_READ, verb, _I):
        action = _read_action(rest, masked)
    elif verb == "copy":
        return _copy_actions(rest, masked, earlier)
    else:
        action = _write_action(rest, masked, earlier)
    return [] if action is None else [action]


def _copy_actions(rest: str, masked: _Masked, earlier: list[Action]) -> list[Action]:
    """``copy <src> to <dst>``: read then write; ``copy its contents to <dst>``: write."""
    source = re.match(r"(?:the\s+)?(?:file\s+)?(?P<src>\S+)\s+(?:to|into|as)\s+", rest, _I)
    path = _path_token(source.group("src"), masked) if source else None
    if source is None or path is None:
        return [_write_action(rest, masked, earlier)]
    read = Action("read_file", path)
    return [read, _write_action("a copy " + rest[source.end("src"):], masked, [*earlier, read])]


def _list_action(rest: str, masked: _Masked) -> Action:
    rest = re.sub(
        r"^(?:me\s+)?(?:all\s+)?(?:the\s+)?(?:files|entries|contents|items)?\s*"
        r"(?:in|of|under|inside)?\s*(?:the\s+)?(?:directory|folder|dir)?\s*",
        "", rest, flags=_I)
    words = rest.split()
    target = ""
    if words:
        quoted = masked.quoted(words[0])
        target = quoted if quoted is not None else words[0].rstrip(",;:!?")
        if target.lower().rstrip(".") in {"workspace", "current", "here", ""} or target == ".":
            target = ""
    return Action("list_directory", target)


def _run_action(rest: str, masked: _Masked) -> Action | None:
    rest = re.sub(r"^(?:the\s+)?(?:shell\s+)?(?:command\s+)?", "", rest, flags=_I)
    quoted = masked.quoted(rest)
    command = quoted if quoted is not None else masked.unmask(rest).strip()
    return Action("run_command", command) if command else None


def _read_action(rest: str, masked: _Masked) -> Action | None:
    rest = re.sub(r"^(?:me\s+)?(?:the\s+)?(?:contents?\s+of\s+)?(?:the\s+)?(?:file\s+)?",
                  "", rest, flags=_I)
    words = rest.split()
    for word in words:
        path = _path_token(word, masked)
        if path is not None:
            return Action("read_file", path)
    if words and words[0].lower() not in {"it", "this", "that", "them"}:
        return Action("read_file", words[0].rstrip(",;:!?"))
    return None


def _write_action(rest: str, masked: _Masked, earlier: list[Action]) -> Action:
    tokens = list(re.finditer(r"\S+", rest))
    target_at: int | None = None
    for i, token in enumerate(tokens):
        if _path_token(token.group(), masked) is not None and i > 0 \
                and tokens[i - 1].group().lower() in _TARGET_PREPS:
            target_at = i
            break
    if target_at is None:
        target_at = next((i for i, t in enumerate(tokens)
                          if _path_token(t.group(), masked) is not None), None)
    if target_at is None:
        return Action(None, "", _content(rest, "", masked, earlier))
    target = _path_token(tokens[target_at].group(), masked) or ""
    before = rest[:tokens[target_at].start()]
    after = rest[tokens[target_at].end():]
    with_what = re.match(r"\s*(?:with|containing|saying|that\s+says|that\s+contains)\b\s*(.*)$",
                         after, _I | re.DOTALL)
    if with_what:
        what = with_what.group(1)
    else:
        what = re.sub(r"\s+(?:to|into|in|as|at)\s+(?:a\s+|the\s+)?(?:new\s+)?(?:file\s+)?"
                      r"(?:named\s+|called\s+)?$", "", " " + before, flags=_I)
        what = re.sub(r"^\s*(?:a\s+|the\s+)?(?:new\s+)?(?:file\s*)?(?:named\s*|called\s*)?$",
                      "", what, flags=_I)
    return Action("write_file", target, _content(what.strip(), target, masked, earlier))


def _content(what: str, target: str, masked: _Masked, earlier: list[Action]) -> Content:
    bare = re.sub(r"^(?:the\s+)?(?:text|words|line|string)\s*:?\s*", "", what, flags=_I)
    literal = masked.quoted(bare)
    if literal is not None:
        return Content("literal", what=masked.unmask(what), literal=literal)
    what = masked.unmask(what)
    read_before = any(a.tool == "read_file" for a in earlier)
    if read_before and re.search(r"summar", what, _I):
        return Content("summary", what=what)
    if read_before and re.search(r"\b(?:contents?|copy)\b", what, _I):
        return Content("copy", what=what)
    stem = posixpath.splitext(posixpath.basename(target))[0].replace("_", " ").replace("-", " ")
    topic = _topic(what) or stem or "this task"
    kind: ContentKind = "haiku" if re.search(r"haiku", f"{what} {stem}", _I) else "text"
    if kind == "haiku" and topic.lower() in {"haiku", "a haiku"}:
        topic = "quiet work"
    return Content(kind, what=what, topic=topic)


def _topic(what: str) -> str:
    match = re.search(r"\b(?:about|on|of|regarding|describing|explaining|covering|for)\s+(.+)$",
                      what, _I | re.DOTALL)
    topic = match.group(1) if match else what
    return _ARTICLES.sub("", topic.strip()).strip(" .,;:!?\"'`")


# --- deterministic text ---------------------------------------------------------------------


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def syllables(text: str) -> int:
    """Estimate the syllables of English ``text`` (vowel groups, minus a silent final e)."""
    total = 0
    for word in re.findall(r"[a-z]+", text.lower()):
        groups = len(re.findall(r"[aeiouy]+", word)) + word.count("uie")  # qui-et
        if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and groups > 1:
            groups -= 1
        total += max(1, groups)
    return total


_HAIKU_OPENERS: Final = {
    0: ("{T}",),
    1: ("Calm {t}", "Still {t}", "Soft {t}"),
    2: ("Quiet {t}", "Morning {t}", "Patient {t}"),
    3: ("Beneath the {t}", "Listen to {t}", "Slowly now, {t}"),
    4: ("Morning light on {t}", "Dawn breaks over {t}", "Slowly, slowly, {t}"),
}
_HAIKU_SEVENS: Final = (
    "one falls, another rises",
    "the watcher waits without sleep",
    "small faults bloom and fade away",
    "a quiet hand sets it right",
    "each restart a new sunrise",
    "patient as the morning tide",
)
_HAIKU_FIVES: Final = (
    "the tree stands again",
    "all is well once more",
    "calm returns at dusk",
    "nothing is lost here",
    "order holds the night",
)


def haiku(topic: str) -> str:
    """Return a three-line haiku about ``topic``, the same one every time for the same topic."""
    seed = _seed("haiku", topic.lower())
    need = max(0, min(4, 5 - syllables(topic)))
    openers = _HAIKU_OPENERS[need]
    first = openers[seed % len(openers)].format(t=topic, T=topic[:1].upper() + topic[1:])
    second = _HAIKU_SEVENS[(seed >> 8) % len(_HAIKU_SEVENS)]
    third = _HAIKU_FIVES[(seed >> 16) % len(_HAIKU_FIVES)]
    return f"{first}\n{second}\n{third}"


_SENTENCES: Final = (
    "{T} is easiest to reason about when each part has one job and something watches it.",
    "The short version of {t}: keep the state small, let failures surface, restart cleanly.",
    "{T} rewards patience: observe first, then change one thing at a time.",
    "What matters most about {t} is what happens when something goes wrong.",
    "These notes on {t} are brief on purpose, so that they stay true.",
)


def paragraph(topic: str) -> str:
    """Return two sentences about ``topic``, chosen by a hash of it."""
    seed = _seed("text", topic.lower())
    first = seed % len(_SENTENCES)
    second = (first + 1 + (seed >> 8) % (len(_SENTENCES) - 1)) % len(_SENTENCES)
    fill = {"t": topic, "T": topic[:1].upper() + topic[1:]}
    return f"{_SENTENCES[first].format(**fill)} {_SENTENCES[second].format(**fill)}"


def summarise(text: str, source: str) -> str:
    """Return a one-paragraph summary of ``text``: size, first line and key words."""
    lines = text.splitlines()
    words = re.findall(r"\w+", text)
    first = next((line.strip() for line in lines if line.strip()), "")
    keys = _key_words(text)[:5]
    summary = f"Summary of {source}: {len(lines)} lines, {len(words)} words."
    if first:
        summary += f' It begins: "{_excerpt(first, 120).rstrip(".")}".'
    if keys:
        summary += f" Key words: {', '.join(keys)}."
    return summary


def _excerpt(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _render(content: Content, target: str, source: tuple[str, str] | None) -> str:
    """Return the text a write (or composed answer) holds; ``source`` is (path, text) read."""
    if content.kind == "literal":
        return content.literal if content.literal.endswith("\n") else content.literal + "\n"
    if content.kind in {"summary", "copy"} and source is not None:
        return source[1] if content.kind == "copy" else summarise(source[1], source[0]) + "\n"
    if content.kind == "haiku":
        return haiku(content.topic) + "\n"
    what = content.what or content.topic
    body = f"{what[:1].upper()}{what[1:]}. {paragraph(content.topic)}"
    if target.endswith(".md"):
        return f"# {content.topic[:1].upper()}{content.topic[1:]}\n\n{body}\n"
    if target.endswith(".json"):
        return json.dumps({"topic": content.topic, "text": body}, indent=2) + "\n"
    return body + "\n"


# --- evaluation and specification -----------------------------------------------------------

_STOP_WORDS: Final = frozenset("""
a an the and or but if then else of to in on at by for with without from into onto about as
is are was were be been being am do does did done has have had having it its it's this that
these those there their they them he she his her we our you your i me my mine not no yes all
any each every some such so than too very can could will would shall should must may might
need needs just also only own same other more most less least up down out over under again
file files exist exists existing created create creates written write writes saved save
contain contains containing include includes including mention mentions mentioning describe
describes say says said output result answer response text content contents agent which what
cover covers covering discuss discusses explain explains address addresses state states
who whom whose when where why how one
""".split())
_NUMBERS: Final = dict(zip(
    "zero one two three four five six seven eight nine ten".split(), map(str, range(11)),
    strict=True))
_FILE_EXISTS = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:file\s+)?(?:named\s+|called\s+)?(?P<path>\S*[./]\S*?)\s+"
    r"(?:exists|is\s+(?:created|written|present|saved)|has\s+been\s+(?:created|written|saved))"
    r"\.?$"
    r"|^there\s+is\s+a\s+file\s+(?:named\s+|called\s+)?(?P<path2>\S*[./]\S*?)\.?$",
    _I,
)


def _stem(word: str) -> str:
    word = _NUMBERS.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _key_words(text: str) -> list[str]:
    """Return the content words of ``text``, most frequent first (ties alphabetical)."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS]
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], w))


def _criterion_words(criterion: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", criterion.lower())
            if w not in _STOP_WORDS}


def _file_present(path: str, files: dict[str, str]) -> bool:
    want = path.strip("`'\"").removeprefix("./")
    return any(key == want or key.endswith("/" + want) or posixpath.basename(key) == want
               for key in files)


def judge(criteria: Sequence[str], output: str, files: dict[str, str]) -> Evaluation:
    """Judge ``output`` and ``files`` against ``criteria``, deterministically.

    A criterion ``[the] [file] X exists`` (or ``is created``/``written``/``saved``) is met
    when X is one of the files (same path, path suffix, or base name); any other criterion
    is met when each of its key words (lower case, stop words removed, plurals folded,
    number words as digits) occurs in the output, the file paths or the file contents.

    Returns:
        The score (fraction of criteria met; 1.0 when there are none), met, unmet, feedback.
    """
    corpus = " ".join([output, *files, *files.values()]).lower()
    present = {_stem(w) for w in re.findall(r"[a-z0-9]+", corpus)}
    met, unmet, missing = [], [], []
    for criterion in criteria:
        exists = _FILE_EXISTS.match(criterion.strip())
        if exists:
            path = exists.group("path") or exists.group("path2")
            ok = _file_present(path, files)
            lacking = [] if ok else [f"no file {path}"]
        else:
            lacking = sorted(_criterion_words(criterion) - present)
            ok = not lacking
        (met if ok else unmet).append(criterion)
        if not ok:
            missing.append(f"{criterion} (missing: {', '.join(lacking)})")
    score = len(met) / len(criteria) if criteria else 1.0
    feedback = "All criteria met." if not unmet else "Unmet: " + "; ".join(missing) + "."
    return Evaluation(score=score, met=tuple(met), unmet=tuple(unmet), feedback=feedback)


_CLAUSE_REST = r"(?:[^.;!?]|[.!?](?=\S))*"  # to the end of the clause; "a.txt" stays whole
_CONSTRAINT = re.compile(
    r"\b(?:without|do\s+not|don't|never|must\s+not|mustn't|should\s+not|shouldn't)\b"
    + _CLAUSE_REST, _I)
_SO_THAT = re.compile(r"\bso\s+that\s+(?P<rest>" + _CLAUSE_REST + ")", _I)
_MUST = re.compile(r"\b(?:must|should)\b", _I)


def specify(message: str) -> Specification:
    """Derive a specification from a request, deterministically.

    The goal is the message; constraints are its ``without``/``do not``/``never``/
    ``must not`` clauses; acceptance criteria are ``<path> exists`` for each file the goal
    writes, then its ``so that`` clauses and its ``must``/``should`` clauses (the goal
    itself when there are none); workspace files are the paths its actions read or write.
    """
    goal = message.strip() or "(empty request)"
    constraints: list[str] = []
    criteria: list[str] = []
    plan = plan_goal(goal)
    criteria.extend(f"{a.target} exists" for a in plan if a.tool == "write_file")
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
    files = [a.target for a in plan if a.tool in {"read_file", "write_file"} and a.target]
    return Specification(goal=goal, constraints=tuple(dict.fromkeys(c for c in constraints if c)),
                         acceptance_criteria=tuple(criteria),
                         workspace_files=tuple(dict.fromkeys(files)))


# --- the agent turn -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The deterministic answer to one request, before it is wrapped as a chat.completion."""

    content: str | None
    tool_name: str | None = None
    arguments: dict[str, str] = field(default_factory=dict)
    call_id: str = ""
    raw_arguments: str | None = None  # set by the malformed_tool_call fault


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
        elif message.role in {"tool", "function"}:
            call = calls.get(message.tool_call_id or "")
            name = call.name if call else (message.name or "tool")
            done.append(_Done(name, call.arguments if call else "{}",
                              _prompts.parse_tool_result(message.text())))
    return done


def _in_workspace(path: str, workspace: str) -> str:
    if not workspace:
        return path or "."
    if not path:
        return workspace
    if posixpath.isabs(path) or path.startswith("~"):
        return path
    return posixpath.join(workspace, path)


def goal_of(messages: Sequence[ChatMessage]) -> _prompts.ParsedGoal:
    """Return the goal fields of a conversation: the system prompt's, else the first user text."""
    system = "\n".join(m.text() for m in messages if m.role in {"system", "developer"})
    parsed = _prompts.parse_goal(system)
    if not parsed.goal.strip():
        first_user = next((m.text() for m in messages if m.role == "user"), "")
        parsed = parsed.model_copy(update={"goal": first_user})
    return parsed


def respond(request: ChatCompletionRequest) -> Reply:
    """Return the deterministic answer to a chat request (no HTTP, no faults)."""
    for message in reversed(request.messages):
        if message.role in {"system", "developer", "user"}:
            kind = _prompts.prompt_kind(message.text())
            if kind == "evaluate":
                asked = _prompts.parse_evaluation_request(message.text())
                verdict = judge(asked.criteria, asked.output, asked.files)
                return Reply(verdict.model_dump_json())
            if kind == "specify":
                spec = specify(_prompts.parse_specification_request(message.text()))
                return Reply(spec.model_dump_json())
    return _agent_turn(request)


def _available_tools(request: ChatCompletionRequest) -> set[str]:
    if request.tool_choice == "none":
        return set()
    return {tool.function.name for tool in request.tools or []}


def _agent_turn(request: ChatCompletionRequest) -> Reply:
    parsed = goal_of(request.messages)
    goal, workspace = parsed.goal.strip(), parsed.workspace.strip()
    plan = plan_goal(goal)
    steps = [a for a in plan if a.tool is not None]
    history = _history(request.messages)
    failed = any(not h.result.ok for h in history)
    if not failed and len(history) < len(steps):
        step = steps[len(history)]
        assert step.tool is not None  # noqa: S101 - steps are the actions with a tool
        if step.tool not in _available_tools(request):
            missing = f"I cannot {_verb(step.tool)} {step.target or 'the workspace'}: " \
                      f"the {step.tool} tool is not available to me."
            return Reply(_final_text(goal, plan, steps, history, extra=missing))
        arguments = _arguments(step, workspace, history)
        call_id = "call_" + hashlib.sha256(
            f"{goal}\x1f{len(history)}\x1f{step.tool}".encode()).hexdigest()[:24]
        return Reply(None, step.tool, arguments, call_id)
    return Reply(_final_text(goal, plan, steps, history))


def _verb(tool: str) -> str:
    return {"read_file": "read", "write_file": "write", "list_directory": "list",
            "run_command": "run"}.get(tool, f"call {tool} for")


def _last_read(history: Sequence[_Done]) -> tuple[str, str] | None:
    for done in reversed(history):
        if done.name == "read_file" and done.result.ok:
            return str(done.args().get("path", "the file")), done.result.output
    return None


def _arguments(step: Action, workspace: str, history: Sequence[_Done]) -> dict[str, str]:
    if step.tool == "run_command":
        return {"command": step.target}
    path = _in_workspace(step.target, workspace)
    if step.tool == "write_file":
        assert step.content is not None  # noqa: S101 - every write has content
        return {"path": path, "content": _render(step.content, path, _last_read(history))}
    return {"path": path}


def _final_text(goal: str, plan: Sequence[Action], steps: Sequence[Action],
                history: Sequence[_Done], extra: str = "") -> str:
    parts = []
    for i, done in enumerate(history):
        step = steps[i] if i < len(steps) else None
        parts.append(_describe(done, step, history[:i]))
        if not done.result.ok:
            break
    if not any(not d.result.ok for d in history):
        for action in plan:
            if action.tool is None and action.content is not None:
                parts.append(_render(action.content, "", _last_read(history)).rstrip("\n"))
    if extra:
        parts.append(extra)
    if not parts:
        topic = _topic(goal) or "your request"
        parts.append(f"Here is my answer to: {goal}\n\n{paragraph(topic)}")
    return "\n".join(parts)


def _describe(done: _Done, step: Action | None, before: Sequence[_Done]) -> str:
    args = done.args()
    target = str(args.get("path") or args.get("command") or "")
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
        shown = ", ".join(entries[:20]) + (f" and {len(entries) - 20} more" if len(entries) > 20
                                           else "")
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
    return {
        "haiku": f"a haiku about {c.topic} (three lines, {size})",
        "text": f"{c.what or c.topic} ({size})",
        "literal": size,
        "summary": f"a summary of {src} ({size})",
        "copy": f"a copy of {src} ({size})",
    }[c.kind]


# --- HTTP -----------------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type_, code, param)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _fault_error(spec: FaultSpec, model: str, prompt_tokens: int) -> _HttpError:
    if spec.kind == "429":
        seconds = format(spec.retry_after, "g")
        return _HttpError(429, spec.message or f"Rate limit reached for {model}: "
                          f"please try again in {seconds}s.", type_="requests",
                          code=spec.code or "rate_limit_exceeded",
                          headers={"Retry-After": seconds})
    if spec.kind == "401":
        return _HttpError(401, spec.message or "Incorrect API key provided.",
                          code=spec.code or "invalid_api_key")
    if spec.kind == "400":
        return _HttpError(400, spec.message or "This model's maximum context length is "
                          f"{max(1, prompt_tokens - 1)} tokens, however you requested "
                          f"{prompt_tokens} tokens.", code=spec.code or "context_length_exceeded",
                          param="messages")
    return _HttpError(500, spec.message or "The server had an error while processing your "
                      "request.", type_="server_error", code=spec.code or "server_error")


def _match_text(request: ChatCompletionRequest) -> str:
    texts = [m.text() for m in request.messages if m.role in {"system", "developer"}]
    texts.append(next((m.text() for m in request.messages if m.role == "user"), ""))
    return "\n".join(texts)


def _prompt_tokens(request: ChatCompletionRequest) -> int:
    total = 0
    for message in request.messages:
        total += estimate_tokens(message.text()) + 1
        for call in message.tool_calls or []:
            total += estimate_tokens(call.function.name + call.function.arguments)
    for tool in request.tools or []:
        total += estimate_tokens(tool.function.model_dump_json())
    return total


class _State:
    """What the HTTP threads share: options, the fault queue, the statistics."""

    def __init__(self, *, model: str, api_key: str | None, context_window: int | None,
                 clock: Callable[[], float], log_limit: int) -> None:
        self.model, self.api_key, self.context_window, self.clock = (
            model, api_key, context_window, clock)
        self.faults = _FaultQueue()
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._requests = 0
        self._served = 0
        self._in_flight = 0
        self._fired: Counter[str] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)

    def begin(self) -> float:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._lock.notify_all()
        return self.clock()

    def end(self, record: RequestRecord) -> None:
        with self._lock:
            self._in_flight -= 1
            self._served += record.status == 200  # noqa: PLR2004 - HTTP OK
            self._log.append(record)
            self._lock.notify_all()

    def fired(self, kind: str) -> None:
        with self._lock:
            self._fired[kind] += 1

    def next_id(self) -> int:
        return next(self._ids)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._requests >= count, timeout)

    def stats(self) -> ServerStats:
        with self._lock:
            return ServerStats(requests=self._requests, served=self._served,
                               faults_fired=dict(self._fired),
                               pending_faults=self.faults.pending(),
                               request_log=list(self._log))

    def complete(self, request: ChatCompletionRequest, *, malformed: bool) -> ChatCompletion:
        prompt_tokens = _prompt_tokens(request)
        if self.context_window is not None and prompt_tokens > self.context_window:
            raise _HttpError(400, f"This model's maximum context length is "
                             f"{self.context_window} tokens, however you requested "
                             f"{prompt_tokens} tokens.", code="context_length_exceeded",
                             param="messages")
        reply = respond(request)
        if malformed:
            reply = _malformed(reply, request)
        finish: Literal["stop", "tool_calls", "length"] = "stop"
        calls = None
        content = reply.content
        if reply.tool_name is not None:
            arguments = reply.raw_arguments
            if arguments is None:
                arguments = json.dumps(reply.arguments, ensure_ascii=False)
            calls = [ToolCall(id=reply.call_id, function=FunctionCall(name=reply.tool_name,
                                                                      arguments=arguments))]
            finish = "tool_calls"
            completion_tokens = estimate_tokens(reply.tool_name + arguments)
        else:
            completion_tokens = estimate_tokens(content or "")
            limit = request.max_completion_tokens or request.max_tokens
            if limit is not None and completion_tokens > limit:
                content, completion_tokens, finish = (content or "")[: limit * 4], limit, "length"
        return ChatCompletion(
            id=f"chatcmpl-understudy-{self.next_id()}", created=int(self.clock()),
            model=request.model or self.model,
            choices=[Choice(message=AssistantMessage(content=content, tool_calls=calls),
                            finish_reason=finish)],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens),
        )


def _malformed(reply: Reply, request: ChatCompletionRequest) -> Reply:
    """Turn a reply into a tool call whose arguments are cut off mid-JSON."""
    name = reply.tool_name or next((t.function.name for t in request.tools or []), "write_file")
    whole = json.dumps(reply.arguments or {"path": "", "content": reply.content or ""})
    return Reply(None, name, reply.arguments, reply.call_id or "call_malformed",
                 raw_arguments=whole[: max(1, len(whole) // 2)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        log.warning("model_request_failed", client=str(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "UnderstudyModelServer/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
        log.debug("http_request_logged", line=format % args)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:  # noqa: ANN401
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("model_client_disconnected", path=self._path())

    def _body(self) -> Any:  # noqa: ANN401
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else -1
        if length < 0:
            raise _HttpError(400, f"Content-Length must be a byte count, got {declared!r}")
        if length > MAX_BODY_BYTES:
            raise _HttpError(413, f"request body must be at most {MAX_BODY_BYTES} bytes, "
                             f"got {length}")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def do_GET(self) -> None:
        path = self._path()
        state = self.server.state
        if path in {"/v1/models", "/models"}:
            self._send(200, {"object": "list", "data": [
                {"id": state.model, "object": "model", "created": 0, "owned_by": "understudy"}]})
        elif path == "/_control/stats":
            self._send(200, state.stats().model_dump(mode="json"))
        else:
            self._send(404, _HttpError(404, f"no route GET {path}").body())

    def do_DELETE(self) -> None:
        if self._path() == "/_control/faults":
            cleared = self.server.state.faults.clear()
            log.info("faults_cleared", cleared=cleared)
            self._send(200, {"cleared": cleared})
        else:
            self._send(404, _HttpError(404, f"no route DELETE {self._path()}").body())

    def do_POST(self) -> None:
        path = self._path()
        if path in {"/v1/chat/completions", "/chat/completions"}:
            self._chat()
        elif path == "/_control/faults":
            try:
                faults = FaultsRequest.model_validate(self._body()).faults
            except _HttpError as exc:
                self._send(exc.status, exc.body())
                return
            except ValidationError as exc:
                self._send(400, _HttpError(400, f"invalid faults: {exc}").body())
                return
            self.server.state.faults.add(faults)
            log.info("faults_queued", kinds=[f.kind for f in faults])
            self._send(200, {"queued": len(faults)})
        else:
            self._send(404, _HttpError(404, f"no route POST {path}").body())

    def _chat(self) -> None:
        state = self.server.state
        at = state.begin()
        record: dict[str, Any] = {"at": at, "status": None}
        try:
            self._chat_with(state, record)
        finally:
            state.end(RequestRecord(finished_at=state.clock(), **record))

    def _chat_with(self, state: _State, record: dict[str, Any]) -> None:
        try:
            request = self._authorised_request(state)
            spec = state.faults.take(_match_text(request))
            if spec is not None:
                record["fault"] = spec.kind
                state.fired(spec.kind)
                log.info("fault_injected", kind=spec.kind, match=spec.match)
                if spec.kind == "hang" and not self._hang(spec.seconds):
                    record["disconnected"] = True
                    return
                if spec.kind not in {"hang", "malformed_tool_call"}:
                    raise _fault_error(spec, request.model, _prompt_tokens(request))
            completion = self._complete(state, request, spec)
        except _HttpError as exc:
            record["status"] = exc.status
            log.info("model_request_rejected", status=exc.status, code=exc.code,
                     error=exc.message)
            self._send(exc.status, exc.body(), exc.headers)
            return
        choice = completion.choices[0]
        calls = choice.message.tool_calls or []
        record.update(status=200, finish_reason=choice.finish_reason,
                      tool=calls[0].function.name if calls else None)
        log.info("model_request_served", model=completion.model,
                 finish_reason=choice.finish_reason, tool=record["tool"],
                 prompt_tokens=completion.usage.prompt_tokens,
                 completion_tokens=completion.usage.completion_tokens)
        self._send(200, completion.model_dump(mode="json"))

    @staticmethod
    def _complete(state: _State, request: ChatCompletionRequest,
                  spec: FaultSpec | None) -> ChatCompletion:
        try:
            return state.complete(request, malformed=spec is not None
                                  and spec.kind == "malformed_tool_call")
        except _prompts.PromptFormatError as exc:
            raise _HttpError(400, str(exc), code="invalid_prompt", param="messages") from exc
        except _HttpError:
            raise
        except Exception as exc:  # a bug here must still answer, as a real server would
            log.exception("model_request_crashed")
            raise _HttpError(500, f"the model server failed: {exc!r}", type_="server_error",
                             code="server_error") from exc

    def _authorised_request(self, state: _State) -> ChatCompletionRequest:
        if state.api_key is not None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if given != state.api_key:
                raise _HttpError(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            request = ChatCompletionRequest.model_validate(self._body())
        except ValidationError as exc:
            raise _HttpError(400, f"invalid chat completion request: {exc}") from exc
        if request.stream:
            raise _HttpError(400, "stream=true is not supported by the Understudy model server",
                             code="unsupported_parameter", param="stream")
        return request

    def _hang(self, seconds: float) -> bool:
        """Wait ``seconds``; return False early if the client hangs up or the server stops."""
        deadline = time.monotonic() + seconds
        conn: socket.socket = self.connection
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server.state.stopping.is_set():
                return False
            readable, _, _ = select.select([conn], [], [], min(remaining, 0.05))
            if readable:
                try:
                    if not conn.recv(1, socket.MSG_PEEK):
                        return False
                except OSError:
                    return False
                self.server.state.stopping.wait(min(remaining, 0.05))  # data, not EOF
        return True


# --- the embeddable server ------------------------------------------------------------------


class ModelServer:
    """An OpenAI-compatible model server running in a daemon thread.

    Example::

        with ModelServer() as server:
            client = openai.OpenAI(base_url=server.url, api_key="unused")
            server.inject("429", retry_after=0.5)
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, api_key: str | None = None,
                 context_window: int | None = None, clock: Callable[[], float] = time.time,
                 log_limit: int = 10_000) -> None:
        """Configure a server (not started yet).

        Args:
            model: the model id ``/v1/models`` lists.
            api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
            context_window: when set, requests whose estimated prompt tokens exceed it get
                400 ``context_length_exceeded``.
            clock: wall-clock seconds for timestamps in the stats.
            log_limit: how many request records the stats keep.
        """
        self._state = _State(model=model, api_key=api_key, context_window=context_window,
                             clock=clock, log_limit=log_limit)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving on ``host:port`` (0: a free port) and return the base URL (``.../v1``).

        Raises:
            RuntimeError: the server was already started.
            OSError: the address cannot be bound.
        """
        if self._httpd is not None:
            msg = f"the model server is already running at {self._url}"
            raise RuntimeError(msg)
        self._state.stopping.clear()
        httpd = _Server((host, port), self._state)
        bound_host, bound_port = httpd.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self._httpd, self._url = httpd, f"http://{shown}:{bound_port}/v1"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"model-server-{bound_port}", daemon=True)
        self._thread.start()
        log.info("model_server_started", url=self._url)
        return self._url

    @property
    def url(self) -> str:
        """The base URL for ``openai.OpenAI(base_url=...)``.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._url is None:
            msg = "the model server is not running; call start() first"
            raise RuntimeError(msg)
        return self._url

    def stop(self) -> None:
        """Stop serving, end hanging requests, and wait for the threads (idempotent)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        self._state.wait_idle(5.0)
        log.info("model_server_stopped", url=self._url)
        self._httpd, self._thread, self._url = None, None, None

    def __enter__(self) -> ModelServer:
        """Start on a free port of 127.0.0.1 unless already started."""
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the server."""
        self.stop()

    def inject(self, kind: FaultKind | int, count: int = 1, **options: Any) -> FaultSpec:  # noqa: ANN401
        """Queue a fault for the next ``count`` matching requests.

        Args:
            kind: ``"429"``, ``"500"``, ``"401"``, ``"400"``, ``"hang"`` or
                ``"malformed_tool_call"`` (status codes may be ints).
            count: how many requests it hits.
            **options: ``retry_after`` (429), ``seconds`` (hang), ``match`` (a substring of
                the system messages or first user message), ``message``, ``code``.

        Returns:
            The queued spec.

        Raises:
            pydantic.ValidationError: an unknown kind or option, or an out-of-range value.
        """
        spec = FaultSpec.model_validate({"kind": kind, "count": count, **options})
        self._state.faults.add([spec])
        log.info("faults_queued", kinds=[spec.kind])
        return spec

    def clear_faults(self) -> int:
        """Drop every queued fault; return how many pending firings were dropped."""
        return self._state.faults.clear()

    def stats(self) -> ServerStats:
        """Return the request and fault counts and the request log."""
        return self._state.stats()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no chat request is in progress; return False on timeout."""
        return self._state.wait_idle(timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` chat requests have arrived in all; return False on timeout."""
        return self._state.wait_requests(count, timeout)


def serve_forever(host: str = "127.0.0.1", port: int = 0, *,
                  ready: Callable[[str], None] | None = None, api_key: str | None = None,
                  context_window: int | None = None) -> None:
    """Run a model server until SIGINT or SIGTERM (the ``understudy model-server`` command).

    Args:
        host: the address to bind.
        port: the port (0: a free one).
        ready: called with the base URL once the server accepts requests.
        api_key: require this bearer token.
        context_window: reject prompts estimated above this many tokens.
    """
    done = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            done.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    server = ModelServer(api_key=api_key, context_window=context_window)
    try:
        url = server.start(host, port)
        if ready is not None:
            ready(url)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m actors.model_server [--host H] [--port N]``; print the base URL."""
    from actors.logs import configure_logging  # noqa: PLC0415 - only the command configures logs

    parser = argparse.ArgumentParser(prog="python -m actors.model_server",
                                     description="Serve the deterministic Understudy model.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--context-window", type=int, default=None)
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    serve_forever(args.host, args.port, ready=lambda url: print(url, flush=True),  # noqa: T201
                  api_key=args.api_key, context_window=args.context_window)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
