"""What a goal asks to be written, the acceptance criteria that check it, and the checks.

Shared by the embedded model (which writes the artefact), the orchestrator (which makes the
criteria of a simple goal) and the judge (which checks them against the workspace). Pure
functions, no I/O.

Kinds (:func:`recognise`, from the words of a write and its target path)
    prose     text about a topic (``.txt``, ``.md`` or no extension)
    poem      a poem; its form fixes its lines: haiku 3, limerick 5, sonnet 14, couplet 2,
              tercet 3, quatrain 4, cinquain 5, or ``an N-line poem``
    json      a JSON object with the fields asked for (``with the fields a, b and c``)
    yaml      the same in YAML
    csv       a header with the columns asked for, then rows (``with N rows``; 3 by default)
    program   a Python program of the catalogue (``protocols.tasks``)
    literal   quoted text, written as given
    summary   a summary of the file read just before; copy: its contents
    unsupported  anything else: a program outside the catalogue, another language, a binary
              format; ``reason`` says why

Acceptance criteria (:func:`criteria_for` writes them, :func:`parse_criterion` reads them)
    ``P exists``                     ``P is valid JSON|YAML|CSV|Python``
    ``P has the fields a, b and c``  ``P has the columns a and b``   ``P has N rows``
    ``P has N lines``                ``P mentions <topic>``          ``P contains "<text>"``
    ``P is a copy of Q``             ``running P prints <task>``  (``protocols.tasks`` words)
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Final, Literal

import yaml

from protocols.tasks import TaskCall, describe_task, recognise_task

__all__ = [
    "POEM_LINES",
    "Artefact",
    "ArtefactKind",
    "Check",
    "CheckKind",
    "check_content",
    "criteria_for",
    "parse_criterion",
    "recognise",
    "topic_words",
]

ArtefactKind = Literal[
    "prose", "poem", "json", "yaml", "csv", "program", "literal", "summary", "copy", "unsupported"
]
CheckKind = Literal[
    "exists",
    "valid",
    "fields",
    "columns",
    "rows",
    "lines",
    "mentions",
    "contains",
    "copy",
    "prints",
]

#: The number of lines of each poem form.
POEM_LINES: Final = {
    "haiku": 3,
    "limerick": 5,
    "sonnet": 14,
    "couplet": 2,
    "tercet": 3,
    "quatrain": 4,
    "cinquain": 5,
}
DEFAULT_ROWS: Final = 3
_I = re.IGNORECASE
_TEXT_EXTENSIONS: Final = frozenset({"", ".txt", ".md", ".markdown", ".rst", ".text"})
_OTHER_LANGUAGES: Final = {
    ".js": "JavaScript",
    ".ts": "TypeScript",
    ".c": "C",
    ".h": "C",
    ".cpp": "C++",
    ".cc": "C++",
    ".rs": "Rust",
    ".go": "Go",
    ".java": "Java",
    ".rb": "Ruby",
    ".sh": "shell",
    ".php": "PHP",
    ".kt": "Kotlin",
    ".swift": "Swift",
    ".cs": "C#",
    ".html": "HTML",
    ".css": "CSS",
    ".sql": "SQL",
}
_LANGUAGE_WORDS = re.compile(
    r"\b(javascript|typescript|rust|golang|java|ruby|bash|shell\s+script|php|kotlin|swift|"
    r"c\+\+|html|sql)\b",
    _I,
)
_HUMAN_LANGUAGES = re.compile(
    r"\b(?:in|into)\s+(french|german|spanish|italian|portuguese|dutch|russian|chinese|"
    r"mandarin|cantonese|japanese|korean|arabic|hindi|bengali|urdu|latin|ancient\s+greek|"
    r"greek|hebrew|turkish|polish|swedish|norwegian|danish|finnish|czech|ukrainian|"
    r"vietnamese|thai|indonesian|swahili|esperanto|klingon|elvish|sindarin|quenya)\b",
    _I,
)
_PROGRAM_WORDS = re.compile(r"\b(?:python|script|program|code|function)\b", _I)
_STOP: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "about",
        "and",
        "or",
        "to",
        "in",
        "for",
        "with",
        "its",
        "it",
        "this",
        "that",
        "some",
        "short",
        "brief",
        "new",
        "poem",
        "haiku",
        "limerick",
        "sonnet",
        "couplet",
        "tercet",
        "quatrain",
        "cinquain",
        "text",
        "notes",
        "note",
        "paragraph",
        "story",
        "essay",
        "file",
        "line",
        "lines",
    ]
)


@dataclass(frozen=True)
class Artefact:
    """What one write should hold."""

    kind: ArtefactKind
    what: str = ""
    topic: str = ""
    form: str = ""
    lines: int | None = None
    fields: tuple[str, ...] = ()
    rows: int | None = None
    task: TaskCall | None = None
    literal: str = ""
    source: str = ""
    reason: str = ""


def _extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _name_list(text: str) -> tuple[str, ...]:
    text = re.split(
        r"\s+(?:with|and\s+then|then|so\s+that|to|into)\s+(?!\w+\s*[,]|\w+\s+and\b)", text
    )[0]
    names = re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", text.strip(" .;:"))
    cleaned = []
    for raw in names:
        name = re.sub(r"^(?:a|an|the)\s+", "", raw.strip(" .;:'\"`"), flags=_I)
        if re.fullmatch(r"[A-Za-z_][\w-]*", name):
            cleaned.append(name)
        elif cleaned:
            break
    return tuple(dict.fromkeys(cleaned))


def _listed(what: str, nouns: str) -> tuple[str, ...]:
    match = re.search(rf"\b(?:{nouns})\s*(?:named|called|:)?\s+(.+)$", what, _I)
    return _name_list(match.group(1)) if match else ()


def _count(what: str, noun: str) -> int | None:
    match = re.search(rf"\b(\d+)(?:\s+|-){noun}", what, _I)
    return int(match.group(1)) if match else None


def recognise(what: str, path: str, topic: str) -> Artefact:
    """Return what a write of ``what`` to ``path`` (``""``: the answer) should hold.

    Args:
        what: the goal's words for the content (``a JSON file with the fields a and b``).
        path: the target path, or ``""`` for the final answer.
        topic: the words the content is about (the caller's reading of ``about ...``).
    """
    extension = _extension(path)
    language = _OTHER_LANGUAGES.get(extension) or (
        m.group(1) if (m := _LANGUAGE_WORDS.search(what)) else None
    )
    if extension == ".py" or (language is None and _PROGRAM_WORDS.search(what)):
        task = recognise_task(what)
        if task is None:
            return Artefact(
                "unsupported",
                what,
                reason=f"the embedded model writes only the small Python programs of its "
                f"catalogue (primes, Fibonacci, FizzBuzz, factorial, sorting, word counts, ...); "
                f"it cannot write {what or path!r}",
            )
        return Artefact("program", what, task=task)
    if language is not None:
        return Artefact(
            "unsupported", what, reason=f"the embedded model cannot write {language} ({what!r})"
        )
    if human := _HUMAN_LANGUAGES.search(what):
        return Artefact(
            "unsupported",
            what,
            reason=f"the embedded model writes English only; it cannot write in "
            f"{human.group(1).capitalize()} ({what!r})",
        )
    if extension == ".json" or (not extension and re.search(r"\bjson\b", what, _I)):
        return Artefact("json", what, topic, fields=_listed(what, "fields|keys|properties"))
    if extension in {".yaml", ".yml"} or (not extension and re.search(r"\byaml\b", what, _I)):
        return Artefact("yaml", what, topic, fields=_listed(what, "fields|keys|properties"))
    if extension == ".csv" or (not extension and re.search(r"\bcsv\b", what, _I)):
        columns = _listed(what, "columns|headers|fields")
        return Artefact("csv", what, topic, fields=columns, rows=_count(what, "rows"))
    if extension not in _TEXT_EXTENSIONS:
        return Artefact(
            "unsupported",
            what,
            reason=f"the embedded model writes text, poems, JSON, YAML, CSV and catalogue "
            f"programs; it cannot write a {extension} file",
        )
    form = next((f for f in POEM_LINES if re.search(rf"\b{f}s?\b", what, _I)), "")
    lines = _count(what, r"lines?\b") if re.search(r"\b(?:poem|verse)", what, _I) else None
    if form or re.search(r"\b(?:poem|verse|rhyme)s?\b", what, _I):
        return Artefact("poem", what, topic, form=form or "poem", lines=POEM_LINES.get(form, lines))
    return Artefact("prose", what, topic)


def topic_words(topic: str) -> list[str]:
    """The words of a topic that a text about it must mention (lower case, no stop words)."""
    words = re.findall(r"[a-z0-9]+", topic.lower())
    return [w for w in words if w not in _STOP and len(w) > 1]


def _and_list(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def criteria_for(artefact: Artefact, path: str) -> list[str]:
    """Return the acceptance criteria that check ``artefact`` written to ``path``."""
    found = [f"{path} exists"]
    kind = artefact.kind
    if kind in {"json", "yaml", "csv"}:
        found.append(f"{path} is valid {kind.upper()}")
        if artefact.fields:
            noun = "columns" if kind == "csv" else "fields"
            found.append(f"{path} has the {noun} {_and_list(artefact.fields)}")
        if kind == "csv" and artefact.rows is not None:
            found.append(f"{path} has {artefact.rows} rows")
    elif kind == "program" and artefact.task is not None:
        found += [
            f"{path} is valid Python",
            f"running {path} prints {describe_task(artefact.task)}",
        ]
    elif kind == "poem" and artefact.lines is not None:
        found.append(f"{path} has {artefact.lines} lines")
    elif kind == "literal":
        quote = '"' if '"' not in artefact.literal else "`"
        found.append(f"{path} contains {quote}{artefact.literal.strip()}{quote}")
    elif kind == "copy" and artefact.source:
        found.append(f"{path} is a copy of {artefact.source}")
    if kind in {"prose", "poem"} and topic_words(artefact.topic):
        found.append(f"{path} mentions {artefact.topic}")
    return found


@dataclass(frozen=True)
class Check:
    """One checkable criterion: ``kind`` on ``path`` with its argument."""

    kind: CheckKind
    path: str
    names: tuple[str, ...] = ()
    count: int | None = None
    text: str = ""
    task: TaskCall | None = None


_PATH = r"[`'\"]?(?P<path>[\w~./-]*[\w/][\w~./-]*?)[`'\"]?"
_PREFIX = r"^(?:(?:the|a|an)\s+)?(?:file\s+)?(?:named\s+|called\s+)?"
_CRITERIA: Final[list[tuple[CheckKind, re.Pattern[str]]]] = [
    (
        "prints",
        re.compile(rf"^(?:running|executing|when\s+run,?)\s+{_PATH}\s+prints?\s+(?P<arg>.+)$", _I),
    ),
    (
        "exists",
        re.compile(
            rf"{_PREFIX}{_PATH}\s+(?:exists|is\s+(?:created|written|present|saved)"
            r"|has\s+been\s+(?:created|written|saved))$",
            _I,
        ),
    ),
    (
        "valid",
        re.compile(
            rf"{_PREFIX}{_PATH}\s+(?:is|contains)\s+valid\s+(?P<arg>json|yaml|csv|python)$", _I
        ),
    ),
    ("fields", re.compile(rf"{_PREFIX}{_PATH}\s+has\s+the\s+(?:fields|keys)\s+(?P<arg>.+)$", _I)),
    ("columns", re.compile(rf"{_PREFIX}{_PATH}\s+has\s+the\s+columns\s+(?P<arg>.+)$", _I)),
    ("rows", re.compile(rf"{_PREFIX}{_PATH}\s+has\s+(?P<arg>\d+)\s+(?:data\s+)?rows$", _I)),
    ("lines", re.compile(rf"{_PREFIX}{_PATH}\s+has\s+(?P<arg>\d+)\s+lines$", _I)),
    ("mentions", re.compile(rf"{_PREFIX}{_PATH}\s+mentions\s+(?P<arg>.+)$", _I)),
    ("contains", re.compile(rf"{_PREFIX}{_PATH}\s+contains\s+(?P<arg>\".*\"|`.*`)$", _I)),
    (
        "copy",
        re.compile(
            rf"{_PREFIX}{_PATH}\s+is\s+a\s+copy\s+of\s+[`'\"]?(?P<arg>[\w~./-]+?)[`'\"]?$", _I
        ),
    ),
]


def parse_criterion(criterion: str) -> Check | None:
    """Read a criterion written in one of the checkable forms (module doc); None otherwise."""
    text = criterion.strip().rstrip(".")
    for kind, pattern in _CRITERIA:
        match = pattern.match(text)
        if match is None:
            continue
        path = match.group("path")
        arg = match.groupdict().get("arg") or ""
        if kind == "prints":
            task = recognise_task(arg)
            return Check(kind, path, task=task) if task is not None else None
        if kind in {"fields", "columns"}:
            return Check(kind, path, names=_name_list(arg))
        if kind in {"rows", "lines"}:
            return Check(kind, path, count=int(arg))
        if kind == "contains":
            return Check(kind, path, text=arg[1:-1])
        return Check(kind, path, text=arg)
    return None


def _parse(fmt: str, content: str) -> tuple[object, str]:
    """Parse ``content`` as ``fmt``; return (value, "") or (None, the problem)."""
    try:
        if fmt == "json":
            return json.loads(content), ""
        if fmt == "yaml":
            return yaml.safe_load(content), ""
        if fmt == "csv":
            rows = [r for r in csv.reader(io.StringIO(content)) if r]
            if not rows:
                return None, "no rows"
            ragged = [i + 1 for i, r in enumerate(rows) if len(r) != len(rows[0])]
            if ragged:
                return None, f"rows {ragged[:5]} do not have {len(rows[0])} columns"
            return rows, ""
        compile(content, "<artefact>", "exec")
        return content, ""
    except (ValueError, yaml.YAMLError, csv.Error, SyntaxError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _mapping(fmt: str, content: str) -> tuple[dict[str, object] | None, str]:
    value, problem = _parse(fmt, content)
    if problem:
        return None, f"not valid {fmt.upper()} ({problem})"
    if not isinstance(value, dict):
        return None, f"a {type(value).__name__}, not an object with fields"
    return value, ""


def check_content(check: Check, content: str) -> tuple[bool | None, str]:
    """Check ``content`` (the file's text) against ``check``.

    Returns:
        (True, "") when met, (False, why) when not, (None, why) when the content alone cannot
        decide (``prints`` needs the program run, ``copy`` the other file).
    """
    kind = check.kind
    if kind == "exists":
        return True, ""
    if kind == "valid":
        fmt = check.text.lower()
        _, problem = _parse(fmt, content)
        return (True, "") if not problem else (False, f"not valid {check.text} ({problem})")
    if kind == "fields":
        fmt = "yaml" if _extension(check.path) in {".yaml", ".yml"} else "json"
        value, problem = _mapping(fmt, content)
        if value is None:
            return False, problem
        missing = [n for n in check.names if n not in value]
        return (True, "") if not missing else (False, f"missing the fields {', '.join(missing)}")
    if kind in {"columns", "rows"}:
        rows, problem = _parse("csv", content)
        if not isinstance(rows, list):
            return False, f"not valid CSV ({problem})"
        if kind == "rows":
            data = len(rows) - 1
            return (True, "") if data == check.count else (False, f"{data} rows, not {check.count}")
        missing = [n for n in check.names if n not in rows[0]]
        return (True, "") if not missing else (False, f"missing the columns {', '.join(missing)}")
    if kind == "lines":
        lines = [ln for ln in content.splitlines() if ln.strip()]
        ok = len(lines) == check.count
        return (True, "") if ok else (False, f"{len(lines)} lines, not {check.count}")
    if kind == "mentions":
        words = topic_words(check.text)
        lowered = content.lower()
        missing = [w for w in words if w not in lowered]
        return (True, "") if not missing else (False, f"does not mention {', '.join(missing)}")
    if kind == "contains":
        ok = check.text in content
        return (True, "") if ok else (False, f"does not contain {check.text!r}")
    return None, f"{kind} cannot be decided from the file's text alone"
