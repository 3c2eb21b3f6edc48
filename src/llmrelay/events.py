"""Typed stream events: what a `Stream` yields.

These are slotted dataclasses, not pydantic models: one is built per streamed
chunk, so they must be cheap. Every protocol decoder emits the same kinds, and
one assembler (`llmrelay.engine.assembler`) folds them into a `Response`.

`choice` is the candidate index (OpenAI `n>1`); it is 0 everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .usage import Usage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class StreamStart:
    """The provider's response id and the model that actually serves the call."""

    id: str | None
    model: str | None
    type: Literal["start"] = "start"


@dataclass(slots=True)
class TextDelta:
    text: str
    choice: int = 0
    #: Opaque provider data attached to this part (Gemini `thoughtSignature`).
    signature: str | None = None
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ReasoningDelta:
    """Model reasoning ("thinking"). Never mixed into text.

    `signature` (Anthropic `signature_delta`, Gemini `thoughtSignature`) and
    `redacted` (Anthropic `redacted_thinking.data`) are opaque and must be sent
    back unchanged when the conversation continues; they close the current
    reasoning part.
    """

    text: str
    choice: int = 0
    signature: str | None = None
    redacted: str | None = None
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class RefusalDelta:
    text: str
    choice: int = 0
    type: Literal["refusal"] = "refusal"


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins. `index` is dense per choice: 0, 1, 2… in call order."""

    index: int
    id: str | None
    name: str
    choice: int = 0
    signature: str | None = None
    type: Literal["tool_call_start"] = "tool_call_start"


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str
    choice: int = 0
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(slots=True)
class ToolCallEnd:
    """A tool call is complete.

    `arguments` is the parsed JSON object, or None when `raw_arguments` is not
    a valid JSON object; then `error` says why (for example a call cut by
    `max_tokens`). An empty argument string means `{}`.
    """

    index: int
    id: str | None
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str
    error: str | None = None
    choice: int = 0
    signature: str | None = None
    type: Literal["tool_call_end"] = "tool_call_end"


@dataclass(slots=True)
class ToolResult:
    """What a tool returned (or why it failed), as sent back to the model."""

    call_id: str | None
    name: str
    #: The Python value the function returned (None on error).
    value: Any
    #: The text sent to the model: the value serialized, or the error message.
    content: str
    error: str | None = None
    duration: float = 0.0
    index: int = 0
    type: Literal["tool_result"] = "tool_result"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class UsageEvent:
    """Token usage as reported so far. Fields merge last-value-wins, never summed."""

    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(slots=True)
class Finish:
    """A choice is finished. `reason` is normalized; `raw_reason` is the provider's."""

    reason: FinishReason
    raw_reason: str | None = None
    choice: int = 0
    type: Literal["finish"] = "finish"


@dataclass(slots=True)
class ProviderEvent:
    """Provider-side activity that is not content for the caller.

    Server-run tools (Anthropic `server_tool_use`, OpenAI `web_search_call`),
    citations, Gemini code execution: kept so nothing is silently dropped, never
    handed to the caller as a tool call to execute.
    """

    kind: str
    data: Any = None
    choice: int = 0
    type: Literal["provider"] = "provider"


@dataclass(slots=True)
class StreamError:
    """An error reported inside a 200 stream (decoder output only).

    The stream turns it into a `ProviderStreamError` after folding everything
    before it, so partial text and usage survive. Callers never see this
    event; they get the exception.
    """

    message: str
    code: str | int | None = None
    status: int | None = None
    data: Any = field(default=None)
    #: "provider" (an error event the provider sent) or "malformed" (an undecodable chunk).
    kind: str = "provider"
    type: Literal["error"] = "error"


@dataclass(slots=True)
class RetryEvent:
    """A request failed before any content reached the caller; it is sent again after `delay` seconds."""

    attempt: int
    delay: float
    error: BaseException
    provider: str | None = None
    model: str | None = None
    type: Literal["retry"] = "retry"


@dataclass(slots=True)
class FallbackEvent:
    """`from_model` failed; `to_model` answers next. `mode` says how the answer continues:
    "fresh" (nothing had been shown), "restart", "prefill" or "user_turn"."""

    from_model: str
    to_model: str
    error: BaseException
    mode: str
    #: Why the mode differs from the one asked for (e.g. prefill unsupported), if it does.
    note: str | None = None
    type: Literal["fallback"] = "fallback"


@dataclass(slots=True)
class Reset:
    """Discard what you showed of this answer: the next model starts it again (fallback `restart`)."""

    discarded_text: str
    type: Literal["reset"] = "reset"


@dataclass(slots=True)
class PartialOutput:
    """Structured output (`output=`): the object as far as the JSON received so far can be read.

    `value` is plain JSON data (dicts, lists, str, numbers), not yet validated:
    containers appear as they open, strings grow, numbers/booleans/null and
    keys appear only once complete, missing fields are absent. A snapshot is
    never mutated afterwards (keep it as it is). Each chunk that changes what
    can be read yields one. The validated object is `response.output` at the end.
    """

    value: Any
    choice: int = 0
    type: Literal["partial_output"] = "partial_output"


@dataclass(slots=True)
class OutputItem:
    """Structured output `output=list[Item]`: one item, complete and validated, reported once."""

    index: int
    item: Any
    choice: int = 0
    type: Literal["output_item"] = "output_item"


Event = Union[
    StreamStart,
    TextDelta,
    ReasoningDelta,
    RefusalDelta,
    ToolCallStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolResult,
    UsageEvent,
    Finish,
    ProviderEvent,
    RetryEvent,
    FallbackEvent,
    Reset,
    PartialOutput,
    OutputItem,
]

#: Events that count as content for time-to-first-token.
CONTENT_EVENTS = (TextDelta, ReasoningDelta, RefusalDelta, ToolCallStart)
