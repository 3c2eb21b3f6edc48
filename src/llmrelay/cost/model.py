"""The cost model: `Cost` (what a call cost, or why unknown), the token counts a price applies to,
and the provider-reported cost. Price tables are in `prices.py`, the genai-prices adapter in `pricedb.py`;
the public API is `llmrelay.cost`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterable

from ..usage import Usage

_PER = 1_000_000

_COHERE = frozenset({"cohere", "cohere-v1"})


# ---------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Cost:
    """What a call cost, in USD.

    - `total`: None when it cannot be known (`reason` says why).
    - `input` (cached reads and cache writes included), `output` (reasoning
      included), `cached_input`, `cache_write`: components, when known.
    - `source`: "provider" (reported in the stream), "override" (your prices),
      "prices" (genai-prices), "mixed" (a sum over parts priced differently),
      or None (no price, or nothing was billed).
    - `reason`: why `total` is None, or why it is 0 without a price (a request
      never sent, or rejected with an HTTP error).
    - `estimated`: the token counts were estimated (a cut or cancelled stream).
    - `priced_as`: the price entry used ("genai-prices openai:gpt-4o", or your
      pattern).
    """

    total: float | None = None
    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    source: str | None = None
    reason: str | None = None
    estimated: bool = False
    priced_as: str | None = None

    @property
    def known(self) -> bool:
        return self.total is not None

    def __add__(self, other: Any) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return sum_costs((self, other))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _free(reason: str) -> Cost:
    return Cost(0.0, 0.0, 0.0, None, None, None, reason)


def sum_costs(costs: Iterable[Cost]) -> Cost:
    """The cost of several parts (tool-loop turns, attempts): None if any part is unknown."""
    costs = list(costs)
    if not costs:
        return Cost(0.0, 0.0, 0.0)
    if len(costs) == 1:
        return costs[0]

    def total_of(name: str) -> float | None:
        values = [getattr(c, name) for c in costs]
        return None if any(v is None for v in values) else sum(values)

    unknown = [c for c in costs if c.total is None]
    reason = None
    if unknown:
        reasons = list(dict.fromkeys(c.reason or "unknown" for c in unknown))
        reason = f"{len(unknown)} of {len(costs)} parts have no cost: " + "; ".join(reasons)
    sources = {c.source for c in costs if c.source is not None}
    priced = list(dict.fromkeys(c.priced_as for c in costs if c.priced_as))
    return Cost(
        total=total_of("total"),
        input=total_of("input"),
        output=total_of("output"),
        cached_input=total_of("cached_input"),
        cache_write=total_of("cache_write"),
        source=sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        reason=reason,
        estimated=any(c.estimated for c in costs),
        priced_as=priced[0] if len(priced) == 1 else None,
    )


# ---------------------------------------------------------------------------
# Token counts as priced
# ---------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class _Tokens:
    """Counts to price, clamped so every subset fits its total."""

    input: int
    output: int
    cached: int
    write: int
    write_1h: int
    reasoning: int
    estimated: bool


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _tokens(provider: str, usage: Usage) -> _Tokens | str:
    """The counts to price, or why there are none."""
    inp, out = usage.input_tokens, usage.output_tokens
    cached, write, reasoning = usage.cached_input_tokens, usage.cache_write_tokens, usage.reasoning_tokens
    raw = usage.raw if isinstance(usage.raw, dict) else None
    write_1h = 0
    if raw is not None:
        if provider in _COHERE and isinstance(raw.get("billed_units"), dict):
            billed = raw["billed_units"]
            b_in, b_out = _int(billed.get("input_tokens")), _int(billed.get("output_tokens"))
            if b_in is not None or b_out is not None:
                inp = b_in if b_in is not None else inp
                out = b_out if b_out is not None else out
                cached = write = reasoning = None  # billed units carry no breakdown
        creation = raw.get("cache_creation")  # Anthropic: cache writes by TTL
        if isinstance(creation, dict):
            write_1h = _int(creation.get("ephemeral_1h_input_tokens")) or 0
    if inp is None and out is None:
        return "the provider reported no usage"
    if inp is None or out is None:
        return f"usage incomplete: {'input' if inp is None else 'output'} tokens not reported"
    inp, out = max(0, inp), max(0, out)
    cached = min(max(0, cached or 0), inp)
    write = min(max(0, write or 0), inp - cached)
    write_1h = min(write_1h, write)
    reasoning = min(max(0, reasoning or 0), out)
    return _Tokens(inp, out, cached, write, write_1h, reasoning, usage.estimated)


def _provider_cost(usage: Usage) -> Cost | None:
    cost = usage.provider_cost
    if cost is None:
        return None
    raw: dict[str, Any] = usage.raw if isinstance(usage.raw, dict) else {}
    details: dict[str, Any] = raw["cost_details"] if isinstance(raw.get("cost_details"), dict) else {}
    total = float(cost)
    if raw.get("is_byok") is True:  # OpenRouter's fee only: the upstream provider bills the tokens
        upstream = details.get("upstream_inference_cost")
        if isinstance(upstream, (int, float)) and not isinstance(upstream, bool):
            total += float(upstream)
    inp: Any = details.get("upstream_inference_prompt_cost")
    out: Any = details.get("upstream_inference_completions_cost")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (inp, out))
    return Cost(
        total,
        float(inp) if ok else None,
        float(out) if ok else None,
        source="provider",
        estimated=usage.estimated,
        priced_as="provider-reported",
    )


# ---------------------------------------------------------------------------
# Your prices
