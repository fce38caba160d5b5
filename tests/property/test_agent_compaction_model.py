"""Properties of context compaction over random conversations: every call keeps the system
prompt and the request, never sends a tool result without its call, and a run that compacts
still does each of its steps exactly once."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.agents.agent_loop import (
    AgentRun,
    CallModel,
    CheckTool,
    Effect,
    ExecuteTool,
    Finish,
)
from actors.agents.agent_tools import ToolOutcome
from actors.agents.model_guard import CircuitBreaker
from protocols.prompts import SUMMARY_LABEL, prompt_kind
from tests.unit.agents.test_agent_compaction import context_error
from tests.unit.agents.test_agent_loop import Clock, call, goal, say

# One step of a conversation: how many tool calls the model asks for in one turn, the prompt
# tokens it reports, and whether the provider refuses the call as too long first.
steps = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3),
        st.integers(min_value=0, max_value=2000),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


def _run(
    script: list[tuple[int, int, bool]], window: int, keep: int
) -> tuple[AgentRun, list[CallModel], Finish]:
    clock = Clock()
    run = AgentRun(
        goal("write the files", token_budget=10_000_000, max_steps=100),
        agent="coder",
        breaker=CircuitBreaker(3, 5.0, clock=clock),
        clock=clock,
        context_window=window,
        keep_recent=keep,
    )
    turns: deque[Any] = deque()
    written = 0
    for calls, tokens, refused in script:
        if refused:
            turns.append(context_error())
        names = [f"f{written + i}.txt" for i in range(calls)]
        written += calls
        turns.append(
            call(*(("write_file", {"path": n, "content": "x" * 40}) for n in names), inp=tokens)
        )
    turns.append(say("all done"))
    sent: list[CallModel] = []
    pending: deque[Effect] = deque(run.start())
    finish: Finish | None = None
    while pending:
        effect = pending.popleft()
        match effect:
            case CallModel(purpose="compaction"):
                sent.append(effect)
                pending.extend(run.model_replied(say("summary", inp=20, out=3)))
            case CallModel():
                sent.append(effect)
                answer = turns.popleft() if turns else say("all done")
                pending.extend(
                    run.model_failed(answer)
                    if isinstance(answer, BaseException)
                    else run.model_replied(answer)
                )
            case CheckTool():
                pending.extend(run.access_decided(allowed=True, reason="ok", resolved=""))
            case ExecuteTool():
                outcome = ToolOutcome(ok=True, output=f"wrote {effect.target}")
                pending.extend(run.tool_done(outcome))
            case Finish():
                finish = effect
    assert finish is not None
    return run, sent, finish


@given(
    script=steps,
    window=st.integers(min_value=300, max_value=3000),
    keep=st.integers(min_value=1, max_value=8),
)
def test_compaction_keeps_the_head_pairs_tool_results_and_runs_each_step_once(
    script: list[tuple[int, int, bool]], window: int, keep: int
) -> None:
    run, sent, finish = _run(script, window, keep)
    turns = [c for c in sent if c.purpose == "turn"]
    head = turns[0].messages[:2]

    for model_call in turns:
        assert head == model_call.messages[:2]
        called = {
            tool_call["id"]
            for message in model_call.messages
            for tool_call in message.get("tool_calls") or []
        }
        assert all(m["tool_call_id"] in called for m in model_call.messages if m["role"] == "tool")
        summaries = [
            m for m in model_call.messages if str(m.get("content")).startswith(SUMMARY_LABEL)
        ]
        assert len(summaries) <= 1
    for compaction in (c for c in sent if c.purpose == "compaction"):
        assert "compact" == prompt_kind(compaction.messages[0]["content"])
        assert [] == compaction.tools
    written = [s.arguments["path"] for s in finish.result.steps]
    expected = [f"f{i}.txt" for i in range(sum(calls for calls, _t, _r in script))]
    if finish.result.success:
        assert expected == written
    else:  # only a refusal may end it: with nothing to fold yet, or right after a compaction
        assert "fatal" == finish.result.error_class
        assert (finish.result.error or "").startswith("BadRequestError: HTTP 400")
    assert run.compactions == len([c for c in sent if c.purpose == "compaction"])
