"""The model server's pure logic: the goal grammar, the agent turn, the judge and specify.

Everything here is I/O-free and deterministic: every answer is a pure function of the
request. :func:`plan_goal` turns a goal into tool calls, :func:`respond` answers a whole
chat request (agent turn, ``UNDERSTUDY-EVALUATE``, ``UNDERSTUDY-SPECIFY``, and through
:mod:`actors.model.brain_dialogue` ``UNDERSTUDY-INTERVIEW`` and ``UNDERSTUDY-COMPACT``), and
:func:`haiku`, :func:`paragraph` and :func:`summarise` generate the text that writes hold.
:mod:`actors.model.server` wraps it in HTTP and fault injection and re-exports every
public name here.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from actors.model.brain_dialogue import rate_request, summarise_turns, summary_steps
from actors.model.wire import ChatCompletionRequest, ChatMessage, FunctionCall
from protocols import prompts
from protocols.prompts import Evaluation, Specification, ToolResult

__all__ = [
    "Action",
    "Content",
    "ContentKind",
    "Reply",
    "goal_of",
    "haiku",
    "judge",
    "paragraph",
    "plan_goal",
    "respond",
    "specify",
    "summarise",
    "syllables",
]

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
    rest = clause[lead.end() :].strip()
    action: Action | None
    if verb in {"list", "ls", "enumerate"} or (
        verb in {"show", "display"}
        and re.match(
            r"(?:me\s+)?(?:all\s+)?(?:the\s+)?(?:files|entries|directory|folder)\b", rest, _I
        )
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
    return [read, _write_action("a copy " + rest[source.end("src") :], masked, [*earlier, read])]


def _list_action(rest: str, masked: _Masked) -> Action:
    rest = re.sub(
        r"^(?:me\s+)?(?:all\s+)?(?:the\s+)?(?:files|entries|contents|items)?\s*"
        r"(?:in|of|under|inside)?\s*(?:the\s+)?(?:directory|folder|dir)?\s*",
        "",
        rest,
        flags=_I,
    )
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
    rest = re.sub(
        r"^(?:me\s+)?(?:the\s+)?(?:contents?\s+of\s+)?(?:the\s+)?(?:file\s+)?", "", rest, flags=_I
    )
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
        if (
            _path_token(token.group(), masked) is not None
            and i > 0
            and tokens[i - 1].group().lower() in _TARGET_PREPS
        ):
            target_at = i
            break
    if target_at is None:
        target_at = next(
            (i for i, t in enumerate(tokens) if _path_token(t.group(), masked) is not None), None
        )
    if target_at is None:
        return Action(None, "", _content(rest, "", masked, earlier))
    target = _path_token(tokens[target_at].group(), masked) or ""
    before = rest[: tokens[target_at].start()]
    after = rest[tokens[target_at].end() :]
    with_what = re.match(
        r"\s*(?:with|containing|saying|that\s+says|that\s+contains)\b\s*(.*)$",
        after,
        _I | re.DOTALL,
    )
    if with_what:
        what = with_what.group(1)
    else:
        what = re.sub(
            r"\s+(?:to|into|in|as|at)\s+(?:a\s+|the\s+)?(?:new\s+)?(?:file\s+)?"
            r"(?:named\s+|called\s+)?$",
            "",
            " " + before,
            flags=_I,
        )
        what = re.sub(
            r"^\s*(?:a\s+|the\s+)?(?:new\s+)?(?:file\s*)?(?:named\s*|called\s*)?$",
            "",
            what,
            flags=_I,
        )
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
    match = re.search(
        r"\b(?:about|on|of|regarding|describing|explaining|covering|for)\s+(.+)$",
        what,
        _I | re.DOTALL,
    )
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

_STOP_WORDS: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "without",
        "from",
        "into",
        "onto",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "has",
        "have",
        "had",
        "having",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "mine",
        "not",
        "no",
        "yes",
        "all",
        "any",
        "each",
        "every",
        "some",
        "such",
        "so",
        "than",
        "too",
        "very",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "must",
        "may",
        "might",
        "need",
        "needs",
        "just",
        "also",
        "only",
        "own",
        "same",
        "other",
        "more",
        "most",
        "less",
        "least",
        "up",
        "down",
        "out",
        "over",
        "under",
        "again",
        "file",
        "files",
        "exist",
        "exists",
        "existing",
        "created",
        "create",
        "creates",
        "written",
        "write",
        "writes",
        "saved",
        "save",
        "contain",
        "contains",
        "containing",
        "include",
        "includes",
        "including",
        "mention",
        "mentions",
        "mentioning",
        "describe",
        "describes",
        "say",
        "says",
        "said",
        "output",
        "result",
        "answer",
        "response",
        "text",
        "content",
        "contents",
        "agent",
        "which",
        "what",
        "cover",
        "covers",
        "covering",
        "discuss",
        "discusses",
        "explain",
        "explains",
        "address",
        "addresses",
        "state",
        "states",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "one",
    ]
)
_NUMBERS: Final = dict(
    zip(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
        map(str, range(11)),
        strict=True,
    )
)
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
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", criterion.lower()) if w not in _STOP_WORDS}


def _file_present(path: str, files: dict[str, str]) -> bool:
    want = path.strip("`'\"").removeprefix("./")
    return any(
        key == want or key.endswith("/" + want) or posixpath.basename(key) == want for key in files
    )


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
    met: list[str] = []
    unmet: list[str] = []
    missing: list[str] = []
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
    + _CLAUSE_REST,
    _I,
)
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


def respond(request: ChatCompletionRequest) -> Reply:
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
            missing = (
                f"I cannot {_verb(step.tool)} {step.target or 'the workspace'}: "
                f"the {step.tool} tool is not available to me."
            )
            return Reply(_final_text(goal, plan, steps, history, extra=missing))
        arguments = _arguments(step, workspace, history)
        call_id = (
            "call_"
            + hashlib.sha256(f"{goal}\x1f{len(history)}\x1f{step.tool}".encode()).hexdigest()[:24]
        )
        return Reply(None, step.tool, arguments, call_id)
    return Reply(_final_text(goal, plan, steps, history))


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


def _arguments(step: Action, workspace: str, history: Sequence[_Done]) -> dict[str, Any]:
    if step.tool == "run_command":
        return {"argv": shlex.split(step.target)}
    path = _in_workspace(step.target, workspace)
    if step.tool == "write_file":
        assert step.content is not None  # noqa: S101 - every write has content
        return {"path": path, "content": _render(step.content, path, _last_read(history))}
    return {"path": path}


def _final_text(
    goal: str,
    plan: Sequence[Action],
    steps: Sequence[Action],
    history: Sequence[_Done],
    extra: str = "",
) -> str:
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
    return {
        "haiku": f"a haiku about {c.topic} (three lines, {size})",
        "text": f"{c.what or c.topic} ({size})",
        "literal": size,
        "summary": f"a summary of {src} ({size})",
        "copy": f"a copy of {src} ({size})",
    }[c.kind]
