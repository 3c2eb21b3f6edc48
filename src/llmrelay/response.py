"""`Response`: what a finished (or broken) stream assembled to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic

from .messages import Message, Part, ReasoningPart, TextPart, ToolCall
from .usage import Usage

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from .cost.model import Cost

    #: The type of `Response.output`: what `output=` asked for (`output=Weather` -> `Weather`);
    #: `Any` without `output=`. Type checkers only: at run time the classes are plain generics.
    OutputT = TypeVar("OutputT", default=Any)
else:
    from typing import TypeVar

    OutputT = TypeVar("OutputT")


@dataclass(slots=True)
class Timings:
    """Monotonic-clock timings, from request dispatch.

    `total` excludes the time the caller spent between chunks (their own work),
    so it measures the provider and llmrelay, not the consumer.

    `time_to_first_token` is the first token of any kind (text, reasoning, refusal or a
    tool call); `time_to_first_text` the first visible answer text (choice 0), None if no
    text came. For a tool loop, both are counted from the first request's dispatch:
    `time_to_first_text` includes the earlier turns and the tool runs before the text.
    """

    time_to_first_token: float | None = None
    total: float | None = None
    output_tokens_per_second: float | None = None
    time_to_first_text: float | None = None
    #: `time.perf_counter()` at dispatch (to place turns on one clock); not a duration.
    dispatched_at: float | None = field(default=None, repr=False, compare=False)
    #: The mean time between output chunks (decoded events) after the first token: one
    #: value per request (OpenTelemetry's `gen_ai.client.operation.time_per_output_chunk`).
    time_per_output_chunk: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_to_first_token": self.time_to_first_token,
            "time_to_first_text": self.time_to_first_text,
            "total": self.total,
            "output_tokens_per_second": self.output_tokens_per_second,
            "time_per_output_chunk": self.time_per_output_chunk,
        }


@dataclass(slots=True)
class Choice:
    """One candidate answer. `Response` exposes choice 0 directly."""

    index: int = 0
    parts: list[Part] = field(default_factory=list)
    refusal: str | None = None
    finish_reason: str | None = None
    raw_finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, ReasoningPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if isinstance(p, ToolCall)]


@dataclass(slots=True)
class Attempt:
    """One model tried by a fallback list: its (partial) response and why it failed, if it did."""

    model: str
    response: Response[Any] | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def usage(self) -> Usage | None:
        return self.response.usage if self.response is not None else None

    @property
    def cost(self) -> Cost:
        """What this attempt cost (estimated if it was cut); a model never sent to costs 0."""
        from .cost.prices import attempt_cost

        return attempt_cost(self)


@dataclass(slots=True)
class Response(Generic[OutputT]):
    """What a stream assembled to. Generic in the type of `output` (`Response[Weather]`)."""

    provider: str | None = None
    #: The model that actually served the call (as the provider reported it).
    model: str | None = None
    #: The model id that was requested.
    requested_model: str | None = None
    id: str | None = None
    request_id: str | None = None
    choices: list[Choice] = field(default_factory=lambda: [Choice()])
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    #: "ok", "truncated", "error" or "aborted".
    status: str = "ok"
    error: BaseException | None = None
    #: Provider-side events that are not content (server tools, citations).
    provider_events: list[Any] = field(default_factory=list)
    #: The whole conversation: the request's messages, then every assistant turn
    #: and tool result (append a user message and call again to continue). Set when
    #: the call completes; empty in the partial response of an error or a closed stream.
    messages: list[Message] = field(default_factory=list)
    #: With tools: one `Response` per request of the tool loop (usage above is their sum);
    #: empty for a single request.
    turns: list[Response[Any]] = field(default_factory=list)
    #: With a fallback list (or retries): every model tried, in order (the last one answered);
    #: empty when the first attempt answered without either.
    attempts: list[Attempt] = field(default_factory=list)
    #: True when this answer continues text a failed model had already streamed.
    resumed: bool = False
    #: One id across every tool round, retry and fallback of the call (logs, traces).
    correlation_id: str | None = None
    #: The caller's `conversation_id=` (None when not given: never generated).
    conversation_id: str | None = None
    #: Structured output (`output=`): the validated object (choice 0), typed as asked
    #: (`output=Weather` -> `Weather`); None without `output=` (and before the end).
    output: OutputT = None  # type: ignore[assignment]  # None until validated
    #: The `PriceTable` of the client that made the call (None: the process-wide prices);
    #: an init field so `dataclasses.replace` keeps it.
    _prices: Any = field(default=None, repr=False, compare=False, kw_only=True)
    #: Across a tool loop: the text / reasoning of every turn, in order (what `text_stream` showed);
    #: None when `text` is choice 0's own (one turn). Set by the tool loop, kept by `replace`.
    _text: str | None = field(default=None, repr=False, compare=False, kw_only=True)
    _reasoning: str | None = field(default=None, repr=False, compare=False, kw_only=True)
    #: `cost`, computed once (keyed on what it depends on, so a later change recomputes it).
    _cost: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def cost(self) -> Cost:
        """What the served response cost in USD (`llmrelay.cost`): provider-reported, your
        prices, or genai-prices; `total` None with a `reason` when unknown. A tool loop: the
        sum of its turns. Failed fallback attempts are in `attempts[i].cost`."""
        from .cost.prices import response_cost

        return response_cost(self)

    @property
    def choice(self) -> Choice:
        return self.choices[0]

    @property
    def parts(self) -> list[Part]:
        return self.choices[0].parts

    @property
    def text(self) -> str:
        """Everything `text_stream` showed: choice 0's text, across every turn of a tool loop
        (the last turn's own text: `turns[-1].text` or `choice.text`)."""
        return self._text if self._text is not None else self.choices[0].text

    @property
    def reasoning(self) -> str:
        """Choice 0's reasoning, across every turn of a tool loop (like `text`)."""
        return self._reasoning if self._reasoning is not None else self.choices[0].reasoning

    @property
    def refusal(self) -> str | None:
        return self.choices[0].refusal

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    @property
    def raw_finish_reason(self) -> str | None:
        return self.choices[0].raw_finish_reason

    def to_message(self) -> Message:
        """The assistant turn, ready to append to the conversation (signatures kept)."""
        return Message("assistant", list(self.choices[0].parts))

    def __str__(self) -> str:
        return self.text
