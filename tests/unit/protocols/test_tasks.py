"""The program catalogue: recognising a task in words, its words read back, its right answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.tasks import (
    TASK_NAMES,
    TaskCall,
    describe_task,
    expected_output,
    output_matches,
    recognise_task,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a python script that prints the first 10 primes", TaskCall("primes", (10,))),
        ("a program printing the first ten prime numbers", TaskCall("primes", (10,))),
        ("the first 7 Fibonacci numbers", TaskCall("fibonacci", (7,))),
        ("fizzbuzz up to 20 in python", TaskCall("fizzbuzz", (20,))),
        ("a fizzbuzz program", TaskCall("fizzbuzz", (100,))),
        ("computes the factorial of 6", TaskCall("factorial", (6,))),
        ("the gcd of 48 and 18", TaskCall("gcd", (48, 18))),
        ("sorts the numbers 5, 3, 9 and 1", TaskCall("sort", (5, 3, 9, 1))),
        ('reverses the string "hello world"', TaskCall("reverse_string", (), "hello world")),
        (
            "counts the words in 'to be or not to be'",
            TaskCall("word_count", (), "to be or not to be"),
        ),
        (
            "checks whether 'A man, a plan' is a palindrome",
            TaskCall("palindrome", (), "A man, a plan"),
        ),
        ("the sum of the numbers from 1 to 100", TaskCall("sum_to", (100,))),
        ("the leap years from 1990 to 2010", TaskCall("leap_years", (1990, 2010))),
        ("prints hello world", TaskCall("hello_world")),
    ],
)
def test_tasks_are_recognised_with_their_numbers_and_text(text: str, expected: TaskCall) -> None:
    assert expected == recognise_task(text)


@pytest.mark.parametrize(
    "text",
    [
        "a web scraper",
        "a program that trains a neural network",
        "reverses a string",  # a text task without its text
        "the first 99999 primes",  # too long to run within the judge's limit
    ],
)
def test_what_is_not_in_the_catalogue_is_not_recognised(text: str) -> None:
    assert recognise_task(text) is None


@pytest.mark.parametrize(
    ("call", "output"),
    [
        (TaskCall("primes", (10,)), "2 3 5 7 11 13 17 19 23 29"),
        (TaskCall("fibonacci", (7,)), "0 1 1 2 3 5 8"),
        (TaskCall("fizzbuzz", (5,)), "1 2 Fizz 4 Buzz"),
        (TaskCall("factorial", (5,)), "120"),
        (TaskCall("gcd", (48, 18)), "6"),
        (TaskCall("sort", (5, 3, 9, 1)), "1 3 5 9"),
        (TaskCall("reverse_string", (), "abc"), "cba"),
        (TaskCall("palindrome", (), "Never odd or even"), "True"),
        (TaskCall("binary", (10,)), "1010"),
        (TaskCall("leap_years", (1999, 2005)), "2000 2004"),
        (TaskCall("mean", (1, 2, 3, 4)), "2.5"),
    ],
)
def test_the_right_answers(call: TaskCall, output: str) -> None:
    assert output.split() == expected_output(call).split()


def test_output_is_compared_by_tokens_not_by_layout() -> None:
    call = TaskCall("primes", (5,))

    assert output_matches(call, "[2, 3, 5, 7, 11]\n")
    assert output_matches(call, "2\n3\n5\n7\n11.0\n")
    assert not output_matches(call, "2 3 5 7\n")
    assert not output_matches(call, "2 3 5 7 11 13\n")
    assert not output_matches(call, "2 3 5 7 9\n")


@st.composite
def task_calls(draw: st.DrawFn) -> TaskCall:
    name = draw(st.sampled_from(TASK_NAMES))
    call = recognise_task(describe_task(TaskCall(name, (3, 4, 5), "ab c")))
    assert call is not None
    if call.text:
        text = draw(st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=20))
        return TaskCall(name, (), text.strip() or "x")
    count = len(call.numbers)
    numbers = draw(st.lists(st.integers(1, 60), min_size=count, max_size=count if count < 3 else 8))
    if name == "leap_years":
        numbers = [1900 + numbers[0], 1960 + numbers[1]]
    return TaskCall(name, tuple(numbers), "")


@given(call=task_calls())
def test_a_tasks_words_read_back_as_the_same_task(call: TaskCall) -> None:
    assert call == recognise_task(describe_task(call))
