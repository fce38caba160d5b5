"""The embedded model's interview and compaction answers: deterministic, pure, no HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.model.brain import respond
from actors.model.brain_dialogue import (
    QUESTION_FILE,
    QUESTION_SUBJECT,
    QUESTION_TASK,
    summarise_turns,
    summary_steps,
)
from actors.model.wire import ChatCompletionRequest
from protocols.prompts import (
    agent_system_prompt,
    compaction_prompt,
    interview_prompt,
    parse_interview,
    summary_message,
    tool_definitions,
)


def rate(request: str, *clarifications: tuple[str, str]) -> Any:
    prompt = interview_prompt(request, clarifications)
    reply = respond(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        )
    )
    assert reply.content is not None
    return parse_interview(reply.content)


@pytest.mark.parametrize("message", ["hi", "hello there", "Hello!", "thanks", "what can you do?"])
def test_small_talk_is_not_a_task_and_gets_a_direct_reply(message: str) -> None:
    rating = rate(message)

    assert not rating.is_task
    assert rating.reply
    assert () == rating.questions


@pytest.mark.parametrize(
    "request_text",
    ["write a haiku about the sea to sea.txt", "list the workspace", "read notes.txt"],
)
def test_a_concrete_request_is_clear(request_text: str) -> None:
    rating = rate(request_text)

    assert rating.is_task
    assert 0.2 >= rating.ambiguity
    assert () == rating.questions


def test_a_vague_request_is_ambiguous_and_gets_questions() -> None:
    rating = rate("write something")

    assert rating.is_task
    assert rating.ambiguity > 0.2
    assert (QUESTION_SUBJECT, QUESTION_FILE) == rating.questions


def test_a_request_with_no_action_asks_what_to_do() -> None:
    rating = rate("help me with my project")

    assert rating.ambiguity > 0.2
    assert (QUESTION_TASK,) == rating.questions


def test_answers_over_several_turns_make_the_request_clear() -> None:
    first = rate("write something", (QUESTION_SUBJECT, "a haiku about the sea"))
    second = rate(
        "write something",
        (QUESTION_SUBJECT, "a haiku about the sea"),
        (QUESTION_FILE, "sea.txt"),
    )

    assert (QUESTION_FILE,) == first.questions
    assert 0.2 < first.ambiguity < 0.8
    assert () == second.questions
    assert 0.0 == second.ambiguity
    assert "write a haiku about the sea to sea.txt" == second.goal


def test_an_answer_that_is_a_whole_request_becomes_the_goal() -> None:
    rating = rate("help me", (QUESTION_TASK, "list the workspace"))

    assert 0.0 == rating.ambiguity
    assert "list the workspace" == rating.goal


def test_complexity_grows_with_the_steps() -> None:
    one = rate("write a haiku about x to x.txt")
    three = rate("write a haiku about x to x.txt, then read x.txt and then list the workspace")

    assert 0.0 == one.complexity
    assert one.complexity < three.complexity <= 1.0


def test_the_same_request_is_rated_the_same_every_time() -> None:
    assert rate("write something") == rate("write something")


# --- compaction --------------------------------------------------------------------------------


def _turns() -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "write_file",
                        "arguments": json.dumps({"path": "/ws/a.txt", "content": "a"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "wrote 1 bytes to /ws/a.txt"},
    ]


def test_a_summary_lists_each_tool_call_and_reads_back_as_steps() -> None:
    summary = summarise_turns(_turns())
    steps = summary_steps(summary)

    assert 1 == len(steps)
    assert "write_file" == steps[0][0]
    assert "/ws/a.txt" == json.loads(steps[0][1])["path"]
    assert steps[0][2].ok


def test_a_second_compaction_carries_the_first_summary_steps_forward() -> None:
    first = summarise_turns(_turns())
    second = summarise_turns([summary_message(first), *_turns()])

    assert 2 == len(summary_steps(second))


def test_the_embedded_agent_counts_compacted_steps_as_done() -> None:
    """After a compaction the embedded model goes on with the next step, not the first."""
    goal = "write a haiku about a to a.txt, then write a haiku about b to b.txt"
    system = agent_system_prompt(goal, goal, [], [], "/ws")
    compacted = summarise_turns(_turns())
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": goal},
                summary_message(compacted),
            ],
            "tools": tool_definitions(),
        }
    )

    reply = respond(request)

    assert "write_file" == reply.tool_name
    assert "/ws/b.txt" == reply.arguments["path"]


def test_the_compaction_prompt_is_answered_with_the_summary() -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": compaction_prompt(_turns())}]}
    )

    reply = respond(request)

    assert reply.content is not None
    assert 1 == len(summary_steps(reply.content))
