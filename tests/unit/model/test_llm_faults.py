"""Model faults without a server: when a fault fires (count, every_nth, a seeded probability),
what it answers with, how answers are broken, and the retry-budget check on request logs."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.model.faults import (
    RETRY_AFTER_TOLERANCE,
    FaultQueue,
    FaultSpec,
    RequestRecord,
    check_llm_budget,
    conversation_digest,
    fault_error,
    malform_completion,
    match_text,
    planned_hits,
    retry_after_seconds,
    truncate_completion,
)
from actors.model.wire import ChatCompletionRequest


def _hits(queue: FaultQueue, requests: int, text: str = "goal") -> list[int]:
    return [n for n in range(requests) if queue.take(text) is not None]


# --- when a fault fires -----------------------------------------------------------------------


@given(
    seed=st.integers(),
    probability=st.floats(0, 1),
    count=st.none() | st.integers(1, 60),
    requests=st.integers(0, 300),
)
def test_the_same_seed_hits_the_same_requests_and_the_plan_says_which(
    seed: int, probability: float, count: int | None, requests: int
) -> None:
    spec = FaultSpec(kind="429", count=count, probability=probability, seed=seed)

    def run() -> list[int]:
        queue = FaultQueue()
        queue.add([spec])
        return _hits(queue, requests)

    first = run()

    assert first == run()
    assert planned_hits(spec, requests) == first
    assert count is None or len(first) <= count


@given(nth=st.integers(1, 10), count=st.none() | st.integers(1, 10), requests=st.integers(0, 80))
def test_every_nth_hits_the_nth_2nth_and_so_on_up_to_count(
    nth: int, count: int | None, requests: int
) -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="503", every_nth=nth, count=count)])

    expected = [i for i in range(requests) if (i + 1) % nth == 0][:count]
    assert expected == _hits(queue, requests)


@given(count=st.integers(1, 20), requests=st.integers(0, 40))
def test_by_default_the_next_count_requests_are_hit(count: int, requests: int) -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="500", count=count)])

    assert list(range(min(count, requests))) == _hits(queue, requests)


def test_an_unlimited_fault_hits_until_cleared() -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="500", count=None)])

    assert list(range(50)) == _hits(queue, 50)
    assert 1 == queue.clear()
    assert [] == _hits(queue, 5)


@pytest.mark.parametrize("seed", range(5))
def test_five_percent_of_calls_is_about_five_percent(seed: int) -> None:
    hits = planned_hits(FaultSpec(kind="429", count=None, probability=0.05, seed=seed), 4000)

    assert 120 <= len(hits) <= 280  # 200 expected; more than 5 standard deviations either way


def test_probability_zero_never_fires_and_one_always_does() -> None:
    assert [] == planned_hits(FaultSpec(kind="429", count=None, probability=0.0), 100)
    assert [0, 1, 2] == planned_hits(FaultSpec(kind="429", count=3, probability=1.0), 100)


def test_a_later_spec_fires_only_when_the_earlier_ones_do_not() -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="429", every_nth=2, count=None), FaultSpec(kind="401", count=2)])

    kinds = [getattr(queue.take("x"), "kind", None) for _ in range(6)]

    assert ["401", "429", "401", "429", None, "429"] == kinds


def test_pending_shows_what_is_left() -> None:
    queue = FaultQueue()
    queue.add([FaultSpec(kind="500", count=3), FaultSpec(kind="hang", count=None, match="m")])
    queue.take("x")

    assert [("500", 2), ("hang", None)] == [(s.kind, s.count) for s in queue.pending()]


# --- what a fault is and answers with ----------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "504"},
        {"kind": "5xx", "status": 499},
        {"kind": "5xx", "status": 600},
        {"kind": "429", "status": 503},
        {"kind": "502", "status": 503},
        {"kind": "429", "probability": 0.5, "every_nth": 2},
        {"kind": "429", "every_nth": 0},
        {"kind": "429", "count": 0},
        {"kind": "429", "probability": 1.5},
    ],
)
def test_inconsistent_specs_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FaultSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"kind": 429, "retry_after": 2.5}, 429, "rate_limit_exceeded"),
        ({"kind": "500"}, 500, "server_error"),
        ({"kind": "502"}, 502, "bad_gateway"),
        ({"kind": "503"}, 503, "overloaded"),
        ({"kind": "5xx"}, 500, "server_error"),
        ({"kind": "5xx", "status": 504}, 504, "gateway_timeout"),
        ({"kind": "5xx", "status": 599}, 599, "server_error"),
        ({"kind": "401"}, 401, "invalid_api_key"),
        ({"kind": "400"}, 400, "context_length_exceeded"),
    ],
)
def test_a_status_fault_answers_with_its_status_and_code(
    fields: dict[str, Any], status: int, code: str
) -> None:
    spec = FaultSpec.model_validate(fields)

    error = fault_error(spec, "m", 10)

    assert (status, code) == (error.status, error.code)
    assert status == spec.http_status
    assert ({"Retry-After": "2.5"} if status == 429 else {}) == error.headers


def _completion(content: str | None, arguments: str | None = None) -> dict[str, Any]:
    calls = None
    if arguments is not None:
        calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]
    message = {"role": "assistant", "content": content, "tool_calls": calls}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def test_truncation_halves_the_text_and_the_arguments_with_finish_reason_length() -> None:
    text = truncate_completion(_completion("abcdefgh"))["choices"][0]
    call = truncate_completion(_completion(None, '{"path": "/ws/a.txt"}'))["choices"][0]

    assert ("abcd", "length") == (text["message"]["content"], text["finish_reason"])
    assert '{"path": "' == call["message"]["tool_calls"][0]["function"]["arguments"]
    assert "length" == call["finish_reason"]


@pytest.mark.parametrize("completion", [_completion("hello"), _completion(None, '{"a": 1}')])
def test_a_malformed_tool_call_has_arguments_that_are_not_json(completion: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "write_file"}}]

    choice = malform_completion(completion, {"tools": tools})["choices"][0]
    call = choice["message"]["tool_calls"][0]

    with pytest.raises(json.JSONDecodeError):
        json.loads(call["function"]["arguments"])
    assert call["function"]["name"] in {"f", "write_file"}


def test_the_match_text_is_the_servers_reading_of_the_request() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image"}]},
            {"role": "user", "content": "second"},
        ],
    }
    request = ChatCompletionRequest.model_validate(body)
    parsed = [m.text() for m in request.messages]

    assert "\n".join([parsed[0], parsed[1], parsed[2]]) == match_text(body)
    assert 16 == len(conversation_digest(match_text(body)))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_the_headers(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert seconds == retry_after_seconds(headers)


# --- the retry budget --------------------------------------------------------------------------


def _record(
    at: float,
    status: int | None,
    *,
    took: float = 0.01,
    who: str = "agent-a",
    retry_after: float | None = None,
    fault: str | None = None,
) -> dict[str, Any]:
    if status == 429 and fault is None:
        fault = "429"
    return {
        "at": 1000.0 + at,
        "finished_at": 1000.0 + at + took,
        "monotonic": at,
        "finished_monotonic": at + took,
        "status": status,
        "retry_after": retry_after,
        "fault": fault,
        "fingerprint": who,
    }


def test_retries_that_wait_out_retry_after_pass() -> None:
    log = [
        _record(0.0, 429, retry_after=1.0),
        _record(1.02, 429, retry_after=1.0),
        _record(2.04, 200),
    ]

    ok, detail, counterexample = check_llm_budget(log, max_retries=2)

    assert (True, None) == (ok, counterexample)
    assert "2 retried 429(s)" in detail


def test_a_retry_before_retry_after_fails_with_the_two_requests() -> None:
    log = [_record(0.0, 429, retry_after=1.0), _record(0.5, 200)]

    ok, detail, counterexample = check_llm_budget(log, max_retries=3)

    assert not ok
    assert counterexample is not None
    assert "retry_after" == counterexample["rule"]
    assert "agent-a" == counterexample["fingerprint"]
    assert 0.49 == pytest.approx(counterexample["waited"])
    assert (429, 200) == (counterexample["limited"]["status"], counterexample["next"]["status"])
    assert "0.490 s after a 429 that asked for 1 s" in detail


def test_the_tolerance_is_allowed_and_no_more() -> None:
    def waited(gap: float) -> bool:
        return check_llm_budget([_record(0.0, 429, retry_after=1.0), _record(gap, 200)], 1)[0]

    assert waited(0.01 + 1.0 - RETRY_AFTER_TOLERANCE + 0.001)
    assert not waited(0.01 + 1.0 - RETRY_AFTER_TOLERANCE - 0.001)


def test_other_clients_requests_do_not_count_as_retries() -> None:
    log = [
        _record(0.0, 429, retry_after=1.0, who="a"),
        _record(0.1, 200, who="b"),
        _record(0.2, 200, who="c"),
        _record(1.1, 200, who="a"),
    ]

    assert check_llm_budget(log, max_retries=0)[0]


def test_more_faulted_attempts_in_a_row_than_max_retries_plus_one_fail() -> None:
    log = [
        _record(0.0, 503),
        _record(0.1, 503),
        _record(0.2, None, fault="timeout"),
        _record(0.3, 200, fault="truncated"),
        _record(0.4, 200),
    ]

    assert check_llm_budget(log, max_retries=3)[0]
    ok, detail, counterexample = check_llm_budget(log, max_retries=2)
    assert not ok
    assert counterexample is not None
    assert "max_retries" == counterexample["rule"]
    assert 4 == len(counterexample["attempts"])
    assert "4 consecutive faulted attempts; at most 3 allowed" in detail


def test_a_success_ends_a_run_of_faulted_attempts() -> None:
    log = [_record(t, 503 if t != 0.2 else 200) for t in (0.0, 0.1, 0.2, 0.3, 0.4)]

    assert check_llm_budget(log, max_retries=1)[0]
    assert not check_llm_budget(log, max_retries=0)[0]


def test_the_earliest_violation_is_the_counterexample() -> None:
    log = [
        _record(5.0, 429, retry_after=1.0, who="late"),
        _record(5.1, 200, who="late"),
        _record(0.0, 429, retry_after=1.0, who="early"),
        _record(0.2, 200, who="early"),
    ]

    ok, detail, counterexample = check_llm_budget(log, max_retries=5)

    assert not ok
    assert counterexample is not None
    assert "early" == counterexample["fingerprint"]
    assert "2 violation(s)" in detail


def test_the_monotonic_clock_is_preferred_to_the_wall_clock() -> None:
    limited, retry = _record(0.0, 429, retry_after=1.0), _record(1.1, 200)
    retry["at"] = limited["finished_at"]  # the wall clock stepped back by a second

    assert check_llm_budget([limited, retry], 1)[0]
    del retry["monotonic"]
    assert not check_llm_budget([limited, retry], 1)[0]


def test_records_without_a_fingerprint_use_the_conversation_or_are_skipped() -> None:
    first, second = _record(0.0, 429, retry_after=1.0), _record(0.1, 200)
    for record in (first, second):
        record["fingerprint"] = None
    assert check_llm_budget([first, second], 1)[0]

    for record in (first, second):
        record["conversation"] = "c1"
    assert not check_llm_budget([RequestRecord.model_validate(first), second], 1)[0]


@given(
    waits=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=8),
    retry_after=st.floats(0.0, 2.0),
)
def test_the_budget_holds_exactly_when_every_wait_covers_retry_after(
    waits: list[float], retry_after: float
) -> None:
    starts = [sum(waits[:i]) for i in range(len(waits) + 1)]
    log = [_record(at, 429, retry_after=retry_after, took=0.0) for at in starts[:-1]]
    log.append(_record(starts[-1], 200, took=0.0))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]

    ok, _, counterexample = check_llm_budget(log, max_retries=len(waits))

    assert ok == all(gap >= retry_after - RETRY_AFTER_TOLERANCE for gap in gaps)
    assert (counterexample is None) == ok
