"""Context compaction in the pure agent loop: past a share of the context, or after a
context-length error, older turns are summarised by the model and replaced."""

from __future__ import annotations

import json
from typing import Any

import openai
from hypothesis import given
from hypothesis import strategies as st

from actors.agents.agent_loop import (
    AgentRun,
    CallModel,
    Progress,
    compaction_cut,
    conversation_tokens,
)
from actors.agents.model_guard import CircuitBreaker, is_context_length_error
from protocols.prompts import (
    SUMMARY_LABEL,
    parse_compaction_request,
    prompt_kind,
)
from tests.unit.agents.test_agent_loop import Clock, FakeHost, call, goal, response, say


def context_error(code: str | None = "context_length_exceeded") -> openai.BadRequestError:
    body = {"message": "This model's maximum context length is 100 tokens.", "code": code}
    return openai.BadRequestError("Error code: 400", response=response(400), body=body)


def compacting_host(script: list[Any], **run_options: Any) -> FakeHost:
    clock = Clock()
    run = AgentRun(
        goal("write a.txt then b.txt then c.txt", token_budget=100_000),
        agent="coder",
        breaker=CircuitBreaker(3, 5.0, clock=clock),
        clock=clock,
        **run_options,
    )
    return FakeHost(run, clock, list(script))


def model_calls(host: FakeHost) -> list[CallModel]:
    return host.of(CallModel)


def write(name: str, inp: int = 10) -> Any:
    return call(("write_file", {"path": name, "content": "x" * 50}), inp=inp)


def assert_no_orphan_tool_results(messages: list[dict[str, Any]]) -> None:
    called = set()
    for message in messages:
        for tool_call in message.get("tool_calls") or []:
            called.add(tool_call["id"])
        if message["role"] == "tool":
            assert message["tool_call_id"] in called, message


# --- past the threshold ----------------------------------------------------------------------


def test_past_the_threshold_older_turns_are_summarised_and_replaced() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt", inp=900), say("summary of a and b"), say("all done")],
        context_window=1000,
        compact_at=0.8,
        keep_recent=2,
    )

    finish = host.go()
    calls = model_calls(host)
    compaction = calls[2]
    after = calls[3].messages
    folded = parse_compaction_request(compaction.messages[0]["content"])

    assert finish.result.success
    assert ["turn", "turn", "compaction", "turn"] == [c.purpose for c in calls]
    assert [] == compaction.tools
    assert "compact" == prompt_kind(compaction.messages[0]["content"])
    assert ["assistant", "tool"] == [t["role"] for t in folded]
    assert "a.txt" in json.dumps(folded)
    assert calls[0].messages[:2] == after[:2]
    assert after[2]["content"].startswith(SUMMARY_LABEL)
    assert "summary of a and b" in after[2]["content"]
    assert ["assistant", "tool"] == [m["role"] for m in after[3:]]
    assert "b.txt" in json.dumps(after[3:])
    assert_no_orphan_tool_results(after)
    assert 1 == host.run.compactions
    assert 3 == host.run.turns  # the compaction is not a step
    compactions = [p for p in host.of(Progress) if p.what == "compaction"]
    assert ["threshold", "threshold"] == [p.detail["cause"] for p in compactions]


def test_below_the_threshold_nothing_is_compacted() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt", inp=700), say("all done")],
        context_window=1000,
        compact_at=0.8,
        keep_recent=2,
    )

    finish = host.go()

    assert finish.result.success
    assert ["turn"] * 3 == [c.purpose for c in model_calls(host)]
    assert 0 == host.run.compactions


def test_a_compaction_counts_its_tokens_toward_the_budget() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt", inp=900), say("short", inp=40, out=7), say("all done")],
        context_window=1000,
        keep_recent=2,
    )

    finish = host.go()

    assert 10 + 900 + 40 + 10 == finish.result.usage.input_tokens
    assert 5 + 5 + 7 + 5 == finish.result.usage.output_tokens


# --- a context-length error --------------------------------------------------------------------


def test_a_context_length_error_compacts_once_and_retries_the_call() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt"), context_error(), say("summary"), say("all done")],
        keep_recent=2,
    )

    finish = host.go()
    calls = model_calls(host)

    assert finish.result.success, finish.result.error
    assert ["turn", "turn", "turn", "compaction", "turn"] == [c.purpose for c in calls]
    assert len(calls[4].messages) < len(calls[2].messages)
    assert calls[4].messages[2]["content"].startswith(SUMMARY_LABEL)
    compactions = [p for p in host.of(Progress) if p.what == "compaction"]
    assert "context_length_error" == compactions[0].detail["cause"]


def test_a_second_context_length_error_in_a_row_fails_the_run_as_fatal() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt"), context_error(), say("summary"), context_error()],
        keep_recent=2,
    )

    finish = host.go()

    assert not finish.result.success
    assert "fatal" == finish.result.error_class
    assert finish.exit_reason is not None
    assert finish.exit_reason.startswith("error:fatal:BadRequestError: HTTP 400")
    assert 1 == host.run.compactions


def test_a_context_length_error_with_nothing_to_fold_fails_as_before() -> None:
    host = compacting_host([context_error()], keep_recent=2)

    finish = host.go()

    assert "fatal" == finish.result.error_class
    assert 0 == host.run.compactions


def test_a_compaction_that_fails_fails_the_run_with_its_error() -> None:
    host = compacting_host(
        [write("a.txt"), write("b.txt"), context_error(), context_error()], keep_recent=2
    )

    finish = host.go()

    assert "fatal" == finish.result.error_class
    assert ["turn", "turn", "turn", "compaction"] == [c.purpose for c in model_calls(host)]


def test_only_a_context_length_400_is_a_context_length_error() -> None:
    other = openai.BadRequestError(
        "Error code: 400", response=response(400), body={"message": "bad", "code": "invalid"}
    )

    assert is_context_length_error(context_error())
    assert is_context_length_error(context_error(code=None))  # the wording alone
    assert not is_context_length_error(other)
    assert not is_context_length_error(ValueError("maximum context length"))


# --- the pure helpers --------------------------------------------------------------------------

roles = st.lists(st.sampled_from(["user", "assistant", "tool"]), max_size=30)


@given(tail=roles, keep=st.integers(min_value=1, max_value=10))
def test_the_cut_keeps_the_head_the_recent_messages_and_no_orphan_tool_result(
    tail: list[str], keep: int
) -> None:
    messages = [{"role": "system"}, {"role": "user"}, *({"role": r} for r in tail)]

    cut = compaction_cut(messages, keep)

    assert 2 <= cut <= max(2, len(messages) - keep)
    if cut > 2:
        assert "tool" != messages[cut]["role"]


def test_conversation_tokens_add_the_new_messages_to_the_reported_prompt() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    grown = [
        *messages,
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "x" * 400},
    ]

    estimated = conversation_tokens(grown, [], reported=(500, 20, 2))
    unreported = conversation_tokens(grown, [])

    assert 500 + 20 < estimated < 500 + 20 + 200
    assert 100 < unreported < 200
