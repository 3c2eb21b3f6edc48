"""Token usage, normalized across providers.

Conventions (the same for every provider, whatever its wire format says):

- `input_tokens` counts *all* prompt tokens, cached reads and cache writes
  included (Anthropic reports those separately; we add them back).
- `cached_input_tokens` and `cache_write_tokens` are subsets of `input_tokens`.
- `output_tokens` counts all generated tokens, reasoning included. Some
  providers count reasoning outside their completion count (Gemini always;
  xAI's OpenAI-compatible API); `output_with_reasoning` below is the one rule
  every decoder applies to add it back.
- `reasoning_tokens` is a subset of `output_tokens`.
- `raw` is the provider's own usage object, as last reported.
- `estimated` is True when the provider did not report usage and the numbers
  were estimated from text (a cut or cancelled stream).

A field the provider did not report is None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    #: Cost in USD when the provider reports it in the stream (OpenRouter).
    provider_cost: float | None = None
    raw: dict[str, Any] | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def merge(self, other: Usage) -> None:
        """Last value wins, field by field; None never overwrites a value."""
        # the five counts (`_COUNT_FIELDS`) spelled out: merged for every usage event of every stream,
        # where a getattr/setattr loop cost three times as much
        if other.input_tokens is not None:
            self.input_tokens = other.input_tokens
        if other.output_tokens is not None:
            self.output_tokens = other.output_tokens
        if other.cached_input_tokens is not None:
            self.cached_input_tokens = other.cached_input_tokens
        if other.cache_write_tokens is not None:
            self.cache_write_tokens = other.cache_write_tokens
        if other.reasoning_tokens is not None:
            self.reasoning_tokens = other.reasoning_tokens
        if other.provider_cost is not None:
            self.provider_cost = other.provider_cost
        if other.raw is not None:
            self.raw = other.raw if self.raw is None else {**self.raw, **other.raw}
        if other.estimated:
            self.estimated = True

    def is_empty(self) -> bool:
        return (self.input_tokens is None and self.output_tokens is None and self.cached_input_tokens is None
                and self.cache_write_tokens is None and self.reasoning_tokens is None)  # `_COUNT_FIELDS`

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["total_tokens"] = self.total_tokens
        return out


def output_with_reasoning(
    completion: int | None, reasoning: int | None, prompt: int | None = None, total: int | None = None,
    *, outside: bool = False,
) -> int | None:
    """Output tokens with reasoning included, from a provider's own counts (the one rule).

    When the provider reports a total, it decides: prompt + completion + reasoning == total
    means the reasoning was counted outside the completion, so output is completion +
    reasoning; prompt + completion == total means the completion already holds it. Without
    a total (or when it matches neither), `outside` (what the protocol documents) decides. Per provider: Gemini counts thoughts outside
    (`candidatesTokenCount` + `thoughtsTokenCount`); xAI's Chat Completions count
    `reasoning_tokens` outside `completion_tokens`; OpenAI, DeepSeek, Groq, OpenRouter and
    the Responses API count them inside.
    """
    if not reasoning:
        return completion
    if completion is None:
        return reasoning if outside else None
    if prompt is not None and total is not None:
        if prompt + completion + reasoning == total:
            return completion + reasoning
        if prompt + completion == total:
            return completion
    return completion + reasoning if outside else completion


def estimate_tokens(text: str) -> int:
    """A rough token count for text the provider never billed us for (≈4 chars/token)."""
    if not text:
        return 0
    return max(1, (len(text) + 3) // 4)
