"""Token usage, normalized across providers.

Conventions (the same for every provider, whatever its wire format says):

- `input_tokens` counts *all* prompt tokens, cached reads and cache writes
  included (Anthropic reports those separately; we add them back).
- `cached_input_tokens` and `cache_write_tokens` are subsets of `input_tokens`.
- `output_tokens` counts all generated tokens, reasoning included (Gemini
  reports thoughts separately; we add them back).
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
        for name in _COUNT_FIELDS:
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)
        if other.provider_cost is not None:
            self.provider_cost = other.provider_cost
        if other.raw is not None:
            self.raw = other.raw if self.raw is None else {**self.raw, **other.raw}
        if other.estimated:
            self.estimated = True

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in _COUNT_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["total_tokens"] = self.total_tokens
        return out


def estimate_tokens(text: str) -> int:
    """A rough token count for text the provider never billed us for (≈4 chars/token)."""
    if not text:
        return 0
    return max(1, (len(text) + 3) // 4)
