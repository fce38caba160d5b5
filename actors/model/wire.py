"""The OpenAI chat-completions wire models the Understudy model server reads and writes.

Pydantic models for the request body of ``POST /v1/chat/completions`` and the
``chat.completion`` object it returns. Unknown fields are ignored, as OpenAI's own clients
expect. :mod:`actors.model.server` re-exports every public name here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "CompletionUsage",
    "FunctionCall",
    "FunctionDefinition",
    "ToolCall",
    "ToolDefinition",
]

# --- OpenAI wire models ---------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Wire):
    """The function half of a tool call; ``arguments`` is a JSON string (or, faulted, not)."""

    name: str
    arguments: str


class ToolCall(_Wire):
    """One tool call of an assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    """One message of a chat-completions request."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """Return the content as text (the text parts of a multi-part content, joined)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class FunctionDefinition(_Wire):
    """A function tool as the request declares it."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Wire):
    """A tool the model may call."""

    type: str = "function"
    function: FunctionDefinition


class ChatCompletionRequest(_Wire):
    """The body of ``POST /v1/chat/completions`` (the fields this server uses)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None


class AssistantMessage(_Wire):
    """The message of a completion choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class Choice(_Wire):
    """One completion choice (this server always returns exactly one)."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "tool_calls", "length"]
    logprobs: None = None


class CompletionUsage(_Wire):
    """Token counts, estimated with ``prompts.estimate_tokens``."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Wire):
    """A ``chat.completion`` object, as OpenAI returns it."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str = "understudy-stub"
