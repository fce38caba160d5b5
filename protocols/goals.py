"""The goal grammar: a goal's clauses as steps (read, write, list, run, or an answer).

Shared by the embedded model (which carries the steps out), the orchestrator (which derives a
simple goal's acceptance criteria from its writes, :func:`criteria_for_goal`) and the agent
(which knows which files a goal asks for, :func:`files_asked`). Pure functions, no I/O.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from protocols.artefacts import Artefact, criteria_for, recognise

__all__ = [
    "Action",
    "criteria_for_goal",
    "files_asked",
    "plan_goal",
    "topic_of",
]

# --- the goal grammar -----------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One step of a goal: a tool call, or text for the final answer (``tool`` None)."""

    tool: Literal["read_file", "write_file", "list_directory", "run_command"] | None
    target: str = ""
    content: Artefact | None = None


_WRITE = r"write|create|save|store|put|compose|generate|produce|draft|make|record|dump|copy"
_READ = r"read|open|cat|view|inspect|summari[sz]e|show|display"
_LIST = r"list|ls|enumerate"
_RUN = r"run|execute|exec"
_VERB = rf"(?:{_WRITE}|{_READ}|{_LIST}|{_RUN})"
_I = re.IGNORECASE

_QUOTED = re.compile(r"`[^`\n]*`|\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]+'(?!\w)")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
# A verb starts a clause only when something follows it that could be its object: "... the
# fields b and cat to out.json" or "the columns a, list and b" list a word, they ask nothing.
_NEXT_VERB = rf"(?={_VERB}\b(?!\s*(?:,|;|(?:and|or|to|into|as)\b)))"
_CLAUSE_SPLIT = re.compile(
    rf"\s*[,;]?\s*\b(?:and\s+then|and|then|after\s+that|afterwards|finally)\b\s*{_NEXT_VERB}"
    rf"|\s*;\s*|,\s*{_NEXT_VERB}",
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
        # "create primes.py, a program that prints ...": the words after the path say it too.
        tail = after.strip().lstrip(",;:-").strip()
        if tail:
            what = f"{what.strip()} {tail}"
    return Action("write_file", target, _content(what.strip(), target, masked, earlier))


def _content(what: str, target: str, masked: _Masked, earlier: list[Action]) -> Artefact:
    bare = re.sub(r"^(?:the\s+)?(?:text|words|line|string)\s*:?\s*", "", what, flags=_I)
    literal = masked.quoted(bare)
    if literal is not None:
        return Artefact("literal", what=masked.unmask(what), literal=literal)
    what = masked.unmask(what)
    read = [a.target for a in earlier if a.tool == "read_file"]
    if read and re.search(r"summar", what, _I):
        return Artefact("summary", what=what, source=read[-1])
    if read and re.search(r"\b(?:contents?|copy)\b", what, _I):
        return Artefact("copy", what=what, source=read[-1])
    stem = posixpath.splitext(posixpath.basename(target))[0].replace("_", " ").replace("-", " ")
    topic = topic_of(what) or stem or "this task"
    if topic.lower() in {"haiku", "a haiku", "poem", "a poem", "limerick", "a limerick"}:
        topic = "quiet work"
    found = recognise(what, target, topic)
    if not found.form and re.search(r"haiku", stem, _I) and found.kind == "prose":
        return recognise(f"a haiku about {topic}", target, topic)
    return found


def files_asked(goal: str) -> list[str]:
    """Return the paths a goal asks to be written, in order (each once)."""
    return list(dict.fromkeys(a.target for a in plan_goal(goal) if a.tool == "write_file"))


def criteria_for_goal(goal: str) -> list[str]:
    """Return the checkable acceptance criteria of a goal's writes (``protocols.artefacts``);
    empty when the goal writes no file."""
    found: list[str] = []
    for action in plan_goal(goal):
        if action.tool == "write_file" and action.content is not None:
            found += criteria_for(action.content, action.target)
    return list(dict.fromkeys(found))


def topic_of(what: str) -> str:
    """Return what ``what`` is about: the words after ``about``/``on``/``of``..., else all."""
    match = re.search(
        r"\b(?:about|on|of|regarding|describing|explaining|covering|for)\s+(.+)$",
        what,
        _I | re.DOTALL,
    )
    topic = match.group(1) if match else what
    return _ARTICLES.sub("", topic.strip()).strip(" .,;:!?\"'`")
