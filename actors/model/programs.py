"""The embedded model's programs: Python source for each task of the catalogue.

Each task of ``protocols.tasks`` has a small, real program here: it computes its answer when it
runs (a sieve for primes, a loop for Fibonacci, ...), with the task's numbers or text as
constants at the top. :func:`program_source` returns it, or a deliberately wrong version (the
``quality`` setting of the model server uses those): arguments off by one (it runs and prints
the wrong answer) or a syntax error.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from protocols.tasks import TASK_NAMES, TaskCall, describe_task, expected_output

__all__ = ["program_source"]

_BODIES: Final[dict[str, str]] = {
    "hello_world": 'print("Hello, world!")\n',
    "nth_fibonacci": """def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


print(fibonacci(N))
""",
    "fibonacci": """def fibonacci(count):
    a, b = 0, 1
    for _ in range(count):
        yield a
        a, b = b, a + b


for value in fibonacci(N):
    print(value)
""",
    "is_prime": """def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


print(is_prime(N))
""",
    "primes": """def first_primes(count):
    found = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return found


for p in first_primes(N):
    print(p)
""",
    "primes_below": """def sieve(limit):
    flags = [True] * max(limit, 2)
    flags[0] = flags[1] = False
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            for j in range(i * i, limit, i):
                flags[j] = False
    return [i for i in range(limit) if flags[i]]


for p in sieve(N):
    print(p)
""",
    "primes_up_to": """def sieve(limit):
    flags = [True] * (limit + 1)
    flags[0] = False
    if limit >= 1:
        flags[1] = False
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            for j in range(i * i, limit + 1, i):
                flags[j] = False
    return [i for i in range(limit + 1) if flags[i]]


for p in sieve(N):
    print(p)
""",
    "perfect_numbers": """def is_perfect(n):
    return sum(d for d in range(1, n) if n % d == 0) == n


for n in range(2, N):
    if is_perfect(n):
        print(n)
""",
    "fizzbuzz": """for i in range(1, N + 1):
    if i % 15 == 0:
        print("FizzBuzz")
    elif i % 3 == 0:
        print("Fizz")
    elif i % 5 == 0:
        print("Buzz")
    else:
        print(i)
""",
    "factorial": """def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


print(factorial(N))
""",
    "digit_sum": """print(sum(int(digit) for digit in str(N)))
""",
    "sum_to": """total = 0
for i in range(1, N + 1):
    total += i
print(total)
""",
    "sum_list": """print(sum(NUMBERS))
""",
    "mean": """average = sum(NUMBERS) / len(NUMBERS)
print(f"{average:g}")
""",
    "maximum": """largest = NUMBERS[0]
for n in NUMBERS[1:]:
    if n > largest:
        largest = n
print(largest)
""",
    "minimum": """smallest = NUMBERS[0]
for n in NUMBERS[1:]:
    if n < smallest:
        smallest = n
print(smallest)
""",
    "sort": """def insertion_sort(values):
    result = list(values)
    for i in range(1, len(result)):
        key, j = result[i], i - 1
        while j >= 0 and result[j] > key:
            result[j + 1] = result[j]
            j -= 1
        result[j + 1] = key
    return result


for n in insertion_sort(NUMBERS):
    print(n)
""",
    "squares": """for i in range(1, N + 1):
    print(i * i)
""",
    "cubes": """for i in range(1, N + 1):
    print(i**3)
""",
    "triangular": """total = 0
for i in range(1, N + 1):
    total += i
    print(total)
""",
    "powers_of_two": """value = 1
for _ in range(N):
    print(value)
    value *= 2
""",
    "evens": """for i in range(1, N + 1):
    print(2 * i)
""",
    "odds": """for i in range(1, N + 1):
    print(2 * i - 1)
""",
    "multiplication_table": """for i in range(1, 11):
    print(f"{N} x {i} = {N * i}")
""",
    "gcd": """def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


print(gcd(A, B))
""",
    "lcm": """def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


print(A * B // gcd(A, B))
""",
    "binary": """def to_binary(n):
    if n == 0:
        return "0"
    digits = []
    while n:
        digits.append(str(n % 2))
        n //= 2
    return "".join(reversed(digits))


print(to_binary(N))
""",
    "collatz": """n = N
print(n)
while n > 1:
    n = n // 2 if n % 2 == 0 else 3 * n + 1
    print(n)
""",
    "leap_years": """def is_leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


for year in range(A, B + 1):
    if is_leap(year):
        print(year)
""",
    "celsius_to_fahrenheit": """fahrenheit = N * 9 / 5 + 32
print(f"{fahrenheit:g}")
""",
    "countdown": """for i in range(N, 0, -1):
    print(i)
""",
    "count_to": """for i in range(1, N + 1):
    print(i)
""",
    "word_frequencies": """import re
from collections import Counter

counts = Counter(re.findall(r"\\w+", TEXT.lower()))
for word in sorted(counts):
    print(word, counts[word])
""",
    "word_count": """print(len(TEXT.split()))
""",
    "vowel_count": """print(sum(1 for ch in TEXT.lower() if ch in "aeiou"))
""",
    "char_count": """print(len(TEXT))
""",
    "palindrome": """cleaned = "".join(ch for ch in TEXT.lower() if ch.isalnum())
print(cleaned == cleaned[::-1])
""",
    "reverse_string": """print(TEXT[::-1])
""",
    "uppercase": """print(TEXT.upper())
""",
}
if set(_BODIES) != set(TASK_NAMES):  # pragma: no cover - a catalogue edit without its program
    msg = f"programs and tasks differ: {sorted(set(_BODIES) ^ set(TASK_NAMES))}"
    raise RuntimeError(msg)


def _constants(call: TaskCall, body: str) -> str:
    if "TEXT" in body:
        lines = [f"TEXT = {call.text!r}"]
    elif "NUMBERS" in body:
        lines = [f"NUMBERS = {list(call.numbers)!r}"]
    elif len(call.numbers) == 2:
        lines = [f"A = {call.numbers[0]}", f"B = {call.numbers[1]}"]
    elif call.numbers:
        lines = [f"N = {call.numbers[0]}"]
    else:
        return ""
    return "\n".join(lines) + "\n\n"


def _wrong(call: TaskCall) -> TaskCall | None:
    """The call with an argument off by one (or its text one character short) whose right
    answer differs from ``call``'s; None when no such near miss changes the answer."""
    candidates: list[TaskCall] = []
    if call.text:
        candidates.append(dataclasses.replace(call, text=call.text[:-1]))
        candidates.append(dataclasses.replace(call, text=call.text + "x"))
    if call.numbers:
        first, rest = call.numbers[0], call.numbers[1:]
        candidates += [
            dataclasses.replace(call, numbers=(first + delta, *rest)) for delta in (-1, 1, 2, -2)
        ]
    right = expected_output(call)
    return next((c for c in candidates if expected_output(c) != right), None)


def program_source(
    call: TaskCall, *, wrong_output: bool = False, syntax_error: bool = False
) -> str:
    """Return a Python program that prints :func:`protocols.tasks.expected_output` of ``call``.

    Args:
        call: the task and its arguments.
        wrong_output: compute the task for arguments off by one (it runs, but is wrong).
        syntax_error: drop a colon, so that the program does not compile.

    Raises:
        KeyError: the task is not in the catalogue.
    """
    body = _BODIES[call.name]
    near_miss = _wrong(call) if wrong_output else None
    used = near_miss or call
    source = f'"""Print {describe_task(call)}."""\n\n{_constants(used, body)}{body}'
    if wrong_output and near_miss is None:
        source += 'print("done")\n'
    if syntax_error:
        lines = source.split("\n")
        at = next((i for i, line in enumerate(lines) if line.rstrip().endswith(":")), None)
        if at is None:
            source = source + "print(\n"
        else:
            lines[at] = lines[at].rstrip()[:-1]
            source = "\n".join(lines)
    return source
