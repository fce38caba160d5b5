"""The catalogue of small programs: what a goal asks a program to print, and the right answer.

Shared by the embedded model (which writes the program) and the judge (which runs it and
compares its output with the answer computed here, independently of the program's source).
Pure functions, no I/O.

A task is recognised in text (``"a python script that prints the first 10 primes"``) by
:func:`recognise_task`, which reads its numbers (digits or the words one to twenty) and, for
text tasks, its first quoted span; :func:`describe_task` writes a task back as words that
:func:`recognise_task` reads back unchanged (acceptance criteria use them); :func:`expected_output`
is the right output, one item per line; :func:`output_matches` compares a program's output with
it token by token (numbers compared by value, words case-insensitively, punctuation ignored).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "TASK_NAMES",
    "TaskCall",
    "describe_task",
    "expected_output",
    "output_matches",
    "output_tokens",
    "recognise_task",
]

_NUMBER_WORDS: Final = {
    word: n
    for n, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_QUOTED = re.compile(r"\"([^\"\n]*)\"|“([^”\n]*)”|`([^`\n]*)`|(?<!\w)'([^'\n]*)'(?!\w)")
_MAX_NUMBER: Final = 10_000
_MAX_ITEMS: Final = 1_000


@dataclass(frozen=True)
class TaskCall:
    """One catalogue task with its arguments: ``numbers`` in the order the goal gives them,
    ``text`` the quoted text it works on (text tasks only)."""

    name: str
    numbers: tuple[int, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class _Task:
    pattern: re.Pattern[str]
    arity: int  # numbers taken from the pattern's groups; -1: every number in the text
    text: bool  # needs a quoted text
    describe: Callable[[TaskCall], str]
    answer: Callable[[TaskCall], list[str]]
    default: tuple[int, ...] = ()


def _n(call: TaskCall, i: int = 0) -> int:
    return call.numbers[i]


def _primes(count: int) -> list[int]:
    found: list[int] = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return found


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _fibonacci(count: int) -> list[int]:
    out, a, b = [], 0, 1
    for _ in range(count):
        out.append(a)
        a, b = b, a + b
    return out


def _fizzbuzz(i: int) -> str:
    return "FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i)


def _collatz(n: int) -> list[int]:
    out = [n]
    while n > 1 and len(out) < _MAX_ITEMS:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        out.append(n)
    return out


def _listed(call: TaskCall) -> str:
    return ", ".join(str(n) for n in call.numbers)


def _g(value: float) -> str:
    return f"{value:g}"


def _quoted(text: str) -> str:
    return f'"{text}"' if '"' not in text else f"`{text}`"


def _strs(values: list[int]) -> list[str]:
    return [str(v) for v in values]


_I = re.IGNORECASE
_TASKS: Final[dict[str, _Task]] = {
    "hello_world": _Task(
        re.compile(r"\bhello,?\s+world\b", _I),
        0,
        False,
        lambda c: "Hello, world!",
        lambda c: ["Hello, world!"],
    ),
    "nth_fibonacci": _Task(
        re.compile(r"\b(\d+)(?:st|nd|rd|th)\s+fibonacci\s+number", _I),
        1,
        False,
        lambda c: f"the {_n(c)}th Fibonacci number",
        lambda c: [str(_fibonacci(_n(c) + 1)[-1])],
    ),
    "fibonacci": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+(?:terms\s+of\s+the\s+)?fibonacci", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} Fibonacci numbers",
        lambda c: _strs(_fibonacci(_n(c))),
    ),
    "is_prime": _Task(
        re.compile(r"\b(?:whether|if)\s+(\d+)\s+is\s+(?:a\s+)?prime", _I),
        1,
        False,
        lambda c: f"whether {_n(c)} is prime",
        lambda c: [str(_is_prime(_n(c)))],
    ),
    "primes": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+primes?\b|\bfirst\s+(\d+)\s+prime\s+numbers", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} primes",
        lambda c: _strs(_primes(_n(c))),
    ),
    "primes_below": _Task(
        re.compile(
            r"\bprimes?\s+(?:numbers\s+)?(?:below|under|less\s+than|smaller\s+than)\s+(\d+)", _I
        ),
        1,
        False,
        lambda c: f"the primes below {_n(c)}",
        lambda c: _strs([p for p in range(2, _n(c)) if _is_prime(p)]),
    ),
    "primes_up_to": _Task(
        re.compile(r"\bprimes?\s+(?:numbers\s+)?(?:up\s+to|to|through|until)\s+(\d+)", _I),
        1,
        False,
        lambda c: f"the primes up to {_n(c)}",
        lambda c: _strs([p for p in range(2, _n(c) + 1) if _is_prime(p)]),
    ),
    "perfect_numbers": _Task(
        re.compile(r"\bperfect\s+numbers\s+(?:below|under|less\s+than)\s+(\d+)", _I),
        1,
        False,
        lambda c: f"the perfect numbers below {_n(c)}",
        lambda c: _strs(
            [n for n in range(2, _n(c)) if sum(d for d in range(1, n) if n % d == 0) == n]
        ),
    ),
    "fizzbuzz": _Task(
        re.compile(
            r"\bfizz\s?buzz(?:\s+(?:game\s+)?(?:from\s+1\s+)?(?:to|up\s+to|for|until|through)"
            r"\s+(\d+))?",
            _I,
        ),
        1,
        False,
        lambda c: f"FizzBuzz from 1 to {_n(c)}",
        lambda c: [_fizzbuzz(i) for i in range(1, _n(c) + 1)],
        default=(100,),
    ),
    "factorial": _Task(
        re.compile(r"\bfactorial\s+of\s+(\d+)|\b(\d+)\s+factorial\b", _I),
        1,
        False,
        lambda c: f"the factorial of {_n(c)}",
        lambda c: [str(math.factorial(_n(c)))],
    ),
    "digit_sum": _Task(
        re.compile(r"\bsum\s+of\s+(?:the\s+)?digits\s+(?:of|in)\s+(\d+)", _I),
        1,
        False,
        lambda c: f"the sum of the digits of {_n(c)}",
        lambda c: [str(sum(int(d) for d in str(_n(c))))],
    ),
    "sum_to": _Task(
        re.compile(
            r"\bsum\s+of\s+(?:all\s+)?(?:the\s+)?(?:numbers|integers)\s+(?:from\s+1\s+)?"
            r"(?:to|up\s+to|through)\s+(\d+)",
            _I,
        ),
        1,
        False,
        lambda c: f"the sum of the numbers from 1 to {_n(c)}",
        lambda c: [str(_n(c) * (_n(c) + 1) // 2)],
    ),
    "sum_list": _Task(
        re.compile(r"\b(?:sum|total)\s+of\s+(?:the\s+)?(?:numbers|values|list)\b", _I),
        -1,
        False,
        lambda c: f"the sum of the numbers {_listed(c)}",
        lambda c: [str(sum(c.numbers))],
    ),
    "mean": _Task(
        re.compile(r"\b(?:average|mean)\s+of\s+(?:the\s+)?(?:numbers|values|list)\b", _I),
        -1,
        False,
        lambda c: f"the average of the numbers {_listed(c)}",
        lambda c: [_g(sum(c.numbers) / len(c.numbers))],
    ),
    "maximum": _Task(
        re.compile(r"\b(?:largest|maximum|biggest|greatest)\s+of\s+the\s+numbers\b", _I),
        -1,
        False,
        lambda c: f"the largest of the numbers {_listed(c)}",
        lambda c: [str(max(c.numbers))],
    ),
    "minimum": _Task(
        re.compile(r"\b(?:smallest|minimum|least)\s+of\s+the\s+numbers\b", _I),
        -1,
        False,
        lambda c: f"the smallest of the numbers {_listed(c)}",
        lambda c: [str(min(c.numbers))],
    ),
    "sort": _Task(
        re.compile(r"\bsort(?:s|ed|ing)?\b", _I),
        -1,
        False,
        lambda c: f"the numbers {_listed(c)} sorted",
        lambda c: _strs(sorted(c.numbers)),
    ),
    "squares": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+(?:perfect\s+)?square(?:s|\s+numbers)\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} square numbers",
        lambda c: _strs([i * i for i in range(1, _n(c) + 1)]),
    ),
    "cubes": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+cube(?:s|\s+numbers)\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} cube numbers",
        lambda c: _strs([i**3 for i in range(1, _n(c) + 1)]),
    ),
    "triangular": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+triangular\s+numbers\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} triangular numbers",
        lambda c: _strs([i * (i + 1) // 2 for i in range(1, _n(c) + 1)]),
    ),
    "powers_of_two": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+powers\s+of\s+(?:two|2)\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} powers of two",
        lambda c: _strs([2**i for i in range(_n(c))]),
    ),
    "evens": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+even\s+numbers\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} even numbers",
        lambda c: _strs([2 * i for i in range(1, _n(c) + 1)]),
    ),
    "odds": _Task(
        re.compile(r"\bfirst\s+(\d+)\s+odd\s+numbers\b", _I),
        1,
        False,
        lambda c: f"the first {_n(c)} odd numbers",
        lambda c: _strs([2 * i - 1 for i in range(1, _n(c) + 1)]),
    ),
    "multiplication_table": _Task(
        re.compile(r"\b(?:multiplication|times)\s+table\s+(?:of|for)\s+(\d+)", _I),
        1,
        False,
        lambda c: f"the multiplication table of {_n(c)}",
        lambda c: [f"{_n(c)} x {i} = {_n(c) * i}" for i in range(1, 11)],
    ),
    "gcd": _Task(
        re.compile(
            r"\b(?:gcd|greatest\s+common\s+divisor|highest\s+common\s+factor)\s+of\s+(\d+)"
            r"\s+and\s+(\d+)",
            _I,
        ),
        2,
        False,
        lambda c: f"the greatest common divisor of {_n(c)} and {_n(c, 1)}",
        lambda c: [str(math.gcd(_n(c), _n(c, 1)))],
    ),
    "lcm": _Task(
        re.compile(r"\b(?:lcm|least\s+common\s+multiple)\s+of\s+(\d+)\s+and\s+(\d+)", _I),
        2,
        False,
        lambda c: f"the least common multiple of {_n(c)} and {_n(c, 1)}",
        lambda c: [str(math.lcm(_n(c), _n(c, 1)))],
    ),
    "binary": _Task(
        re.compile(r"\b(\d+)\s+(?:in|to|as)\s+binary\b|\bbinary\s+(?:form\s+)?of\s+(\d+)", _I),
        1,
        False,
        lambda c: f"{_n(c)} in binary",
        lambda c: [format(_n(c), "b")],
    ),
    "collatz": _Task(
        re.compile(r"\bcollatz\s+(?:sequence\s+)?(?:starting\s+)?(?:at|from|of|for)\s+(\d+)", _I),
        1,
        False,
        lambda c: f"the Collatz sequence starting at {_n(c)}",
        lambda c: _strs(_collatz(_n(c))),
    ),
    "leap_years": _Task(
        re.compile(r"\bleap\s+years\s+(?:from|between)\s+(\d+)\s+(?:to|and)\s+(\d+)", _I),
        2,
        False,
        lambda c: f"the leap years from {_n(c)} to {_n(c, 1)}",
        lambda c: _strs(
            [y for y in range(_n(c), _n(c, 1) + 1) if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)]
        ),
    ),
    "celsius_to_fahrenheit": _Task(
        re.compile(r"\b(\d+)\s+(?:degrees\s+)?celsius\s+(?:in|to|as)\s+fahrenheit\b", _I),
        1,
        False,
        lambda c: f"{_n(c)} degrees Celsius in Fahrenheit",
        lambda c: [_g(_n(c) * 9 / 5 + 32)],
    ),
    "countdown": _Task(
        re.compile(r"\bcount\s?down\s+from\s+(\d+)", _I),
        1,
        False,
        lambda c: f"a countdown from {_n(c)} to 1",
        lambda c: _strs(list(range(_n(c), 0, -1))),
    ),
    "count_to": _Task(
        re.compile(
            r"\b(?:count|numbers?|integers?)\s+from\s+1\s+(?:to|up\s+to|through)\s+(\d+)", _I
        ),
        1,
        False,
        lambda c: f"the numbers from 1 to {_n(c)}",
        lambda c: _strs(list(range(1, _n(c) + 1))),
    ),
    "word_frequencies": _Task(
        re.compile(r"\b(?:frequenc\w*|how\s+often|occurrences)\s+of\s+(?:each\s+)?words?\b", _I),
        0,
        True,
        lambda c: f"the frequency of each word in {_quoted(c.text)}",
        lambda c: [
            f"{w} {n}" for w, n in sorted(Counter(re.findall(r"\w+", c.text.lower())).items())
        ],
    ),
    "word_count": _Task(
        re.compile(r"\b(?:count(?:s|ing)?|number\s+of)\s+(?:the\s+)?words\b", _I),
        0,
        True,
        lambda c: f"the number of words in {_quoted(c.text)}",
        lambda c: [str(len(c.text.split()))],
    ),
    "vowel_count": _Task(
        re.compile(r"\b(?:count(?:s|ing)?|number\s+of)\s+(?:the\s+)?vowels\b", _I),
        0,
        True,
        lambda c: f"the number of vowels in {_quoted(c.text)}",
        lambda c: [str(sum(ch in "aeiou" for ch in c.text.lower()))],
    ),
    "char_count": _Task(
        re.compile(r"\b(?:count(?:s|ing)?|number\s+of)\s+(?:the\s+)?characters\b", _I),
        0,
        True,
        lambda c: f"the number of characters in {_quoted(c.text)}",
        lambda c: [str(len(c.text))],
    ),
    "palindrome": _Task(
        re.compile(r"\bpalindrome\b", _I),
        0,
        True,
        lambda c: f"whether {_quoted(c.text)} is a palindrome",
        lambda c: [str(_clean(c.text) == _clean(c.text)[::-1])],
    ),
    "reverse_string": _Task(
        re.compile(r"\brevers(?:e|es|ed|ing)\b", _I),
        0,
        True,
        lambda c: f"the text {_quoted(c.text)} reversed",
        lambda c: [c.text[::-1]],
    ),
    "uppercase": _Task(
        re.compile(r"\bupper\s?case\b|\bcapital\s+letters\b", _I),
        0,
        True,
        lambda c: f"the text {_quoted(c.text)} in upper case",
        lambda c: [c.text.upper()],
    ),
}

#: The names of the catalogue's tasks, in the order they are tried.
TASK_NAMES: Final = tuple(_TASKS)


def _clean(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _numbers(text: str) -> list[int]:
    words = re.sub(
        r"\b(" + "|".join(_NUMBER_WORDS) + r")\b",
        lambda m: str(_NUMBER_WORDS[m.group(1).lower()]),
        text,
        flags=_I,
    )
    return [int(n) for n in re.findall(r"(?<![\w.])-?\d+(?![\w.]*\d)", words)]


def _digits(text: str) -> str:
    return re.sub(
        r"\b(" + "|".join(_NUMBER_WORDS) + r")\b",
        lambda m: str(_NUMBER_WORDS[m.group(1).lower()]),
        text,
        flags=_I,
    )


def recognise_task(text: str) -> TaskCall | None:
    """Return the catalogue task ``text`` asks for, with its arguments, or None.

    Numbers may be digits or the words one to twenty; a text task needs a quoted span
    (``"..."``, ``'...'``, ````...```` or curly quotes). Numbers above 10000 (or lists longer
    than 1000) are refused: the programs must finish within the judge's time limit.
    """
    quoted = next(
        (next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)), None
    )
    outside = _QUOTED.sub(" ", text)
    plain = _digits(outside)
    for name, task in _TASKS.items():
        match = task.pattern.search(plain)
        if match is None:
            continue
        if task.text:
            if quoted is None:
                continue
            return TaskCall(name, (), quoted)
        if task.arity < 0:
            numbers = tuple(_numbers(outside))
            if not numbers or len(numbers) > _MAX_ITEMS:
                continue
            return TaskCall(name, numbers)
        groups = [int(g) for g in match.groups() if g is not None]
        numbers = tuple(groups[: task.arity]) or task.default
        if len(numbers) != task.arity or any(abs(n) > _MAX_NUMBER for n in numbers):
            continue
        return TaskCall(name, numbers)
    return None


def describe_task(call: TaskCall) -> str:
    """Return the words for ``call`` (e.g. ``the first 10 primes``); they read back as ``call``.

    Raises:
        KeyError: the task is not in the catalogue.
    """
    return _TASKS[call.name].describe(call)


def expected_output(call: TaskCall) -> str:
    """Return the right output of ``call``: one item per line, ending with a newline.

    Raises:
        KeyError: the task is not in the catalogue.
    """
    return "\n".join(_TASKS[call.name].answer(call)) + "\n"


def output_tokens(text: str) -> list[str]:
    """Split output into comparable tokens: numbers by value, words in lower case."""
    tokens = []
    for token in re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|[^\W\d_]+|\d+", text.lower()):
        if re.fullmatch(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", token):
            value = float(token)
            tokens.append(str(int(value)) if value.is_integer() and abs(value) < 1e15 else token)
        else:
            tokens.append(token)
    return tokens


def output_matches(call: TaskCall, output: str) -> bool:
    """True when a program's ``output`` holds exactly the right answer's tokens, in order."""
    return output_tokens(output) == output_tokens(expected_output(call))
