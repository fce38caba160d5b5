"""The embedded model's writers: the text of each kind of artefact, and its deliberate misses.

:func:`render_artefact` returns what a write holds for a
:class:`protocols.artefacts.Artefact`: a poem of its form (a haiku of 5-7-5 syllables, a
limerick of five lines, ...), prose about its topic, a JSON or YAML object with the fields
asked for, a CSV table with the columns and rows asked for, a catalogue program
(``actors.model.programs``), a literal, a summary or a copy. Every text is
a pure function of its inputs.

``missed`` names acceptance criteria (``protocols.artefacts.criteria_for``) the text must fail:
the ``quality`` setting of the model server picks them. Each kind of criterion has its miss:
valid -> a syntax error; fields / columns -> the last one left out; rows / lines -> one fewer;
mentions -> the topic never named; contains -> the text cut short; copy -> the last line
dropped; prints -> the program's arguments off by one (it runs, and prints a wrong answer).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection
from typing import Any, Final

import yaml

from actors.model.programs import program_source
from protocols.artefacts import POEM_LINES, Artefact, criteria_for, parse_criterion

__all__ = [
    "criteria_missed",
    "haiku",
    "paragraph",
    "poem",
    "render_artefact",
    "summarise",
    "syllables",
]


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


def _key_words(text: str) -> list[str]:
    """Return the content words of ``text``, most frequent first (ties alphabetical)."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS]
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], w))


_LIMERICK: Final = (
    "There once was a tale about {t},",
    "whose troubles were easy to spot;",
    "a fault came along,",
    "it sang a short song,",
    "and {t} restarted the lot.",
)
_VERSES: Final = (
    "the quiet hours keep their watch",
    "a small light waits beside the door",
    "each fall is followed by a rise",
    "the patient hand puts things in place",
    "what breaks is mended before dawn",
    "the morning finds it whole again",
    "nothing is lost that can be found",
    "the rhythm holds through every storm",
    "a steady voice counts out the time",
    "and all the threads come back to one",
    "slow rivers carry the old news",
    "the lamps are lit along the road",
    "so every ending starts anew",
    "and calm returns to close the day",
)


def poem(topic: str, lines: int, form: str = "poem") -> str:
    """Return a poem of ``lines`` lines about ``topic`` (a haiku or limerick in its own form)."""
    if form == "haiku" and lines == POEM_LINES["haiku"]:
        return haiku(topic)
    if form == "limerick" and lines == POEM_LINES["limerick"]:
        return "\n".join(line.format(t=topic) for line in _LIMERICK)
    seed = _seed("poem", topic.lower(), form)
    first = f"Of {topic} I sing tonight"
    rest = [_VERSES[(seed + 3 * i) % len(_VERSES)] for i in range(max(0, lines - 1))]
    return "\n".join([first, *rest][:lines])


_VALUES: Final[dict[str, tuple[Any, ...]]] = {
    "name": ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"),
    "email": ("ada@example.com", "alan@example.com", "grace@example.com", "edsger@example.com"),
    "city": ("London", "Manchester", "Arlington", "Rotterdam", "Boston"),
    "country": ("United Kingdom", "United States", "Netherlands"),
    "host": ("localhost", "127.0.0.1"),
    "url": ("https://example.com", "https://example.org"),
    "date": ("2024-01-01", "2024-02-02", "2024-03-03"),
}
_NUMERIC: Final = {
    "age": 36,
    "id": 1,
    "count": 3,
    "number": 7,
    "quantity": 2,
    "year": 2024,
    "port": 8080,
    "price": 9.5,
    "cost": 12.25,
    "amount": 100,
    "score": 0.9,
    "version": 1,
    "size": 42,
}


def _value(field: str, row: int, topic: str) -> Any:
    key = field.lower()
    for word, choices in _VALUES.items():
        if word in key:
            return choices[row % len(choices)]
    for word, number in _NUMERIC.items():
        if word in key:
            return number + row if isinstance(number, int) else round(number * (row + 1), 2)
    if key.startswith(("is_", "has_")) or key in {"active", "enabled", "done", "valid"}:
        return row % 2 == 0
    if key in {"tags", "items", "list", "values"}:
        return ["alpha", "beta"]
    if key in {"title", "topic", "subject"}:
        return topic
    if key in {"description", "summary", "text", "notes"}:
        return paragraph(topic)
    return f"{field} {row + 1}"


def _missing(missed: Collection[str], kind: str) -> bool:
    return any((c := parse_criterion(m)) is not None and c.kind == kind for m in missed)


def _object(artefact: Artefact, missed: Collection[str]) -> dict[str, Any]:
    fields = list(artefact.fields) or ["topic", "description"]
    if _missing(missed, "fields") and len(fields) > 0:
        fields = fields[:-1]
    return {f: _value(f, 0, artefact.topic) for f in fields}


def _json(artefact: Artefact, missed: Collection[str]) -> str:
    text = json.dumps(_object(artefact, missed), indent=2, ensure_ascii=False) + "\n"
    return text.rstrip().removesuffix("}") + ",\n" if _missing(missed, "valid") else text


def _yaml(artefact: Artefact, missed: Collection[str]) -> str:
    text = yaml.safe_dump(_object(artefact, missed), sort_keys=False, allow_unicode=True)
    return text + "broken: [unclosed\n" if _missing(missed, "valid") else text


def _csv(artefact: Artefact, missed: Collection[str]) -> str:
    columns = list(artefact.fields) or ["name", "value"]
    if _missing(missed, "columns"):
        columns = columns[:-1] or ["unnamed"]
    rows = artefact.rows if artefact.rows is not None else 3
    if _missing(missed, "rows"):
        rows = max(0, rows - 1)
    table = [columns] + [[str(_value(c, r, artefact.topic)) for c in columns] for r in range(rows)]
    if _missing(missed, "valid"):
        table.append(table[-1][:-1] if len(table[-1]) > 1 else [*table[-1], "extra"])
    return "".join(",".join(_cell(v) for v in row) + "\n" for row in table)


def _cell(value: str) -> str:
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if re.search(r'[,"\n]', value) else value


def render_artefact(
    artefact: Artefact, path: str, source: tuple[str, str] | None, missed: Collection[str] = ()
) -> str:
    """Return the text a write of ``artefact`` to ``path`` holds.

    Args:
        artefact: what the goal asks for.
        path: the target (its extension picks a Markdown heading), or "" for an answer.
        source: (path, text) of the file read just before, for summaries and copies.
        missed: criteria (of ``criteria_for(artefact, path)``) the text must fail.

    Raises:
        ValueError: the artefact is unsupported (the model refuses those before writing).
    """
    kind = artefact.kind
    topic = "something left unnamed" if _missing(missed, "mentions") else artefact.topic
    if kind == "unsupported":
        raise ValueError(artefact.reason)
    if kind == "literal":
        text = artefact.literal[:-1] if _missing(missed, "contains") else artefact.literal
        return text if text.endswith("\n") else text + "\n"
    if kind in {"summary", "copy"}:
        if source is None:
            return f"(nothing was read to {'summarise' if kind == 'summary' else 'copy'})\n"
        if kind == "summary":
            return summarise(source[1], source[0]) + "\n"
        lines = source[1].splitlines(keepends=True)
        return "".join(lines[:-1]) if _missing(missed, "copy") else source[1]
    if kind == "program" and artefact.task is not None:
        return program_source(
            artefact.task,
            wrong_output=_missing(missed, "prints"),
            syntax_error=_missing(missed, "valid"),
        )
    if kind == "json":
        return _json(artefact, missed)
    if kind == "yaml":
        return _yaml(artefact, missed)
    if kind == "csv":
        return _csv(artefact, missed)
    if kind == "poem":
        count = artefact.lines or 4
        if _missing(missed, "lines"):
            count -= 1
        return poem(topic, count, artefact.form) + "\n"
    body = paragraph(topic)
    if path.endswith(".md"):
        return f"# {topic[:1].upper()}{topic[1:]}\n\n{body}\n"
    return body + "\n"


def criteria_missed(
    artefact: Artefact,
    path: str,
    *,
    quality: float,
    seed: int,
    goal: str,
    constraints: Collection[str],
) -> set[str]:
    """Return the criteria of ``artefact`` at ``path`` that this attempt misses.

    A criterion named in a constraint (``This criterion was not met: ...``) is never missed:
    the model follows the constraints it is given. Each other criterion but ``exists`` is
    missed when a seeded draw in [0, 1) is at least ``quality``; the draw is keyed by the
    seed, the goal, the path, the criterion and the criteria the constraints name, so each
    round of feedback draws anew (a later attempt can miss what an earlier one met).
    """
    if quality >= 1.0 or artefact.kind == "unsupported":
        return set()
    criteria = criteria_for(artefact, path)
    named = sorted(c for c in criteria if any(c in constraint for constraint in constraints))
    missed = set()
    for criterion in criteria:
        check = parse_criterion(criterion)
        if check is None or check.kind == "exists" or criterion in named:
            continue
        draw = _seed(str(seed), goal, path, criterion, *named) / 2**64
        if draw >= quality:
            missed.add(criterion)
    return missed
