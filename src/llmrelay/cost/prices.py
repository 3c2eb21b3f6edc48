"""Price tables (your overrides) and the cost of a usage, a response, a call.

`llmrelay.cost` documents where prices come from and re-exports everything
here; see its docstring.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Mapping

from .model import _PER, Cost, _free, _provider_cost, _tokens, _Tokens, sum_costs  # noqa: F401
from ..usage import Usage

_UIDS = itertools.count()


# ---------------------------------------------------------------------------
def _rate(name: str, value: Any, required: bool) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"price {name!r} must be a finite non-negative number of USD per million tokens, got {value!r}")
    return float(value)


@dataclass(slots=True, frozen=True)
class Price:
    """USD per million tokens. Unset `cached_input` / `cache_write` / `reasoning` bill at the input / output rate."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write", "reasoning"):
            object.__setattr__(self, name, _rate(name, getattr(self, name), name in ("input", "output")))

    @classmethod
    def of(cls, value: Any) -> Price:
        if isinstance(value, Price):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        if isinstance(value, (tuple, list)):
            return cls(*value)
        raise TypeError(f"a price is a Price, a dict or an (input, output) tuple, got {type(value).__name__}")

    def cost(self, t: _Tokens, priced_as: str) -> Cost:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        cached = t.cached * cached_rate / _PER
        write = t.write * write_rate / _PER
        inp = (t.input - t.cached - t.write) * self.input / _PER + cached + write
        if self.reasoning is None:
            out = t.output * self.output / _PER
        else:
            out = (t.output - t.reasoning) * self.output / _PER + t.reasoning * self.reasoning / _PER
        return Cost(inp + out, inp, out, cached, write, "override", None, t.estimated, priced_as)


class _Pattern:
    __slots__ = ("key", "price", "match", "literal", "order")

    def __init__(self, key: str, price: Price, order: int):
        self.key = key
        self.price = price
        self.match = re.compile(translate(key)).match
        self.literal = len(key) - sum(key.count(c) for c in "*?[]")
        self.order = order


def _norm_key(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"a price key is 'provider:model' or a glob pattern, got {pattern!r}")
    key = pattern.strip().lower()
    return key if ":" in key else "*:" + key


class PriceTable:
    """Your prices (USD per million tokens), by `"provider:model"` or glob pattern.

        prices = PriceTable({"openai:gpt-4o": {"input": 2.5, "output": 10}})
        prices.set("groq:*", input=0.1, output=0.1)
        client = llmrelay.Client(prices=prices)

    A table given to a `Client` is consulted first, then the process-wide
    prices (`set_price`) unless `inherit=False`, then genai-prices unless
    `genai_prices=False`.
    """

    def __init__(
        self,
        prices: Mapping[str, Price | Mapping[str, float] | tuple[float, float]] | None = None,
        *,
        inherit: bool = True,
        genai_prices: bool = True,
    ):
        self._exact: dict[str, Price] = {}
        self._globs: list[_Pattern] = []
        self._memo: dict[tuple[str, str], tuple[str, Price] | None] = {}
        self._order = 0
        self._uid = next(_UIDS)  # never reused, unlike id(): keys the result memo
        self.version = 0
        self.inherit = inherit
        self.genai_prices = genai_prices
        for key, value in (prices or {}).items():
            self.add(key, Price.of(value))

    @classmethod
    def of(cls, value: Any) -> PriceTable | None:
        """`Client(prices=...)`: a `PriceTable`, a mapping of key -> price, or None (the process-wide prices)."""
        if value is None or isinstance(value, PriceTable):
            return value
        if isinstance(value, Mapping):
            return cls(value)
        raise TypeError(f"prices must be a PriceTable or a mapping of 'provider:model' -> price, got {type(value).__name__}")

    # -- editing ----------------------------------------------------------------
    def set(
        self,
        model: str,
        *,
        input: float,
        output: float,
        cached_input: float | None = None,
        cache_write: float | None = None,
        reasoning: float | None = None,
    ) -> Price:
        """Set the price of `model` ("provider:model" or a glob), in USD per million tokens."""
        price = Price(input, output, cached_input, cache_write, reasoning)
        self.add(model, price)
        return price

    def add(self, model: str, price: Price) -> None:
        key = _norm_key(model)
        price = Price.of(price)
        self._globs = [p for p in self._globs if p.key != key]
        self._exact.pop(key, None)
        if any(c in key for c in "*?["):
            self._order += 1
            self._globs.append(_Pattern(key, price, self._order))
            self._globs.sort(key=lambda p: (-p.literal, -p.order))
        else:
            self._exact[key] = price
        self._changed()

    def remove(self, model: str) -> None:
        key = _norm_key(model)
        self._exact.pop(key, None)
        self._globs = [p for p in self._globs if p.key != key]
        self._changed()

    def clear(self) -> None:
        self._exact.clear()
        self._globs.clear()
        self._changed()

    def _changed(self) -> None:
        self._memo.clear()
        self.version += 1
        _RESULTS.clear()

    def __len__(self) -> int:
        return len(self._exact) + len(self._globs)

    def __repr__(self) -> str:
        keys = [*self._exact, *(p.key for p in self._globs)]
        return f"PriceTable({len(keys)} prices: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"

    # -- lookup -----------------------------------------------------------------
    def lookup(self, provider: str, model: str) -> tuple[str, Price] | None:
        """Your price for provider:model in this table (and the process-wide one if inherited): (key, price)."""
        memo_key = (provider, model)
        try:
            return self._memo[memo_key]
        except KeyError:
            pass
        name = f"{provider}:{model}".lower()
        found: tuple[str, Price] | None = None
        if name in self._exact:
            found = (name, self._exact[name])
        else:
            for p in self._globs:
                if p.match(name):
                    found = (p.key, p.price)
                    break
        if found is None and self.inherit and self is not DEFAULT_PRICES:
            found = DEFAULT_PRICES.lookup(provider, model)
        self._memo[memo_key] = found
        return found

    def _token(self) -> tuple[int, int, int, bool, bool]:
        return (self._uid, self.version, DEFAULT_PRICES.version, self.inherit, self.genai_prices)

    # -- pricing ------------------------------------------------------------------
    def cost(self, provider: str, model: str | None, usage: Usage, *, requested_model: str | None = None) -> Cost:
        """The cost of `usage` on provider:model (see the module docstring for the order). Never raises."""
        try:
            key = (self._token(), provider, model, requested_model, _usage_key(usage))
        except TypeError:  # an unhashable raw value: no memo
            key = None
        if key is not None:
            hit = _RESULTS.get(key)
            if hit is not None:
                return hit
        try:
            result = self._cost(provider, model, usage, requested_model)
        except Exception as exc:  # pricing must never break a call
            result = Cost(None, reason=f"cost computation failed: {type(exc).__name__}: {exc}", estimated=usage.estimated)
        if key is not None:
            if len(_RESULTS) >= _RESULTS_MAX:
                _RESULTS.clear()
            _RESULTS[key] = result
        return result

    def _cost(self, provider: str, model: str | None, usage: Usage, requested_model: str | None) -> Cost:
        reported = _provider_cost(usage)
        if reported is not None:
            return reported
        models = [m for m in dict.fromkeys((model, requested_model)) if m]
        if MODEL_MAP:  # an Azure deployment name (say) priced as the model it serves
            models = list(dict.fromkeys(x for m in models for x in (m, MODEL_MAP.get(f"{provider}:{m}")) if x))
        if not models:
            return Cost(None, reason="no model name to price", estimated=usage.estimated)
        tokens = _tokens(provider, usage)
        if isinstance(tokens, str):
            return Cost(None, reason=tokens, estimated=usage.estimated)
        for m in models:
            found = self.lookup(provider, m)
            if found is not None:
                return found[1].cost(tokens, found[0])
        if not self.genai_prices:
            return Cost(None, reason=f"no price for {provider}:{models[0]} (genai-prices disabled); set one with "
                        f"set_price({provider + ':' + models[0]!r}, input=..., output=...)", estimated=tokens.estimated)
        from .pricedb import genai_cost  # lazy: the price database loads on first use

        return genai_cost(provider, models, tokens)


_RESULTS: dict[tuple[Any, ...], Cost] = {}
_RESULTS_MAX = 2048


def _usage_key(u: Usage) -> tuple[Any, ...]:
    raw = u.raw if isinstance(u.raw, dict) else None
    extra: tuple[Any, ...] = ()
    if raw is not None:
        billed = raw.get("billed_units")
        creation = raw.get("cache_creation")
        details = raw.get("cost_details")
        extra = (
            tuple(sorted(billed.items())) if isinstance(billed, dict) else None,
            creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else None,
            raw.get("is_byok"),
            tuple(sorted(details.items())) if isinstance(details, dict) else None,
        )
    return (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens, u.reasoning_tokens,
            u.provider_cost, u.estimated, extra)


#: The process-wide prices (`set_price`, `clear_prices`); the default for a `Client` without `prices=`.
DEFAULT_PRICES = PriceTable(inherit=False)


def set_price(
    model: str,
    *,
    input: float,
    output: float,
    cached_input: float | None = None,
    cache_write: float | None = None,
    reasoning: float | None = None,
) -> Price:
    """Override or add a price for this process: `model` is "provider:model" or a glob; USD per million tokens."""
    return DEFAULT_PRICES.set(
        model, input=input, output=output, cached_input=cached_input, cache_write=cache_write, reasoning=reasoning
    )


#: "provider:name" -> the model it serves, for pricing (`map_model`).
MODEL_MAP: dict[str, str] = {}


def map_model(name: str, model: str) -> None:
    """Price `name` ("provider:name", e.g. an Azure deployment "azure:prod-chat") as `model` ("gpt-4o")
    whenever the stream does not name a model the price list knows. `AzureAuth(deployments={...})` calls this."""
    if MODEL_MAP.get(name) != model:
        MODEL_MAP[name] = model
        _RESULTS.clear()


def clear_prices() -> None:
    """Forget every price set with `set_price`."""
    DEFAULT_PRICES.clear()


def cost_of(
    provider: str,
    model: str | None,
    usage: Usage,
    *,
    prices: PriceTable | Mapping[str, Any] | None = None,
    requested_model: str | None = None,
) -> Cost:
    """The cost of `usage` on provider:model: provider-reported, then your prices, then genai-prices.

    Never raises: without a price, `Cost(total=None, reason=...)`."""
    table = PriceTable.of(prices)
    return (DEFAULT_PRICES if table is None else table).cost(provider, model, usage, requested_model=requested_model)


# ---------------------------------------------------------------------------
# Responses, attempts, whole calls
# ---------------------------------------------------------------------------
def _subtract(total: Usage, parts: list[Usage]) -> Usage:
    """`total` minus `parts`, field by field (the last tool-loop turn's own usage)."""
    out = Usage(raw=total.raw, estimated=total.estimated)
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        value = getattr(total, name)
        if value is not None:
            setattr(out, name, max(0, value - sum(getattr(p, name) or 0 for p in parts)))
    if total.provider_cost is not None:
        out.provider_cost = max(0.0, total.provider_cost - sum(p.provider_cost or 0.0 for p in parts))
    return out


def rejected(r: Any) -> Any:
    """The HTTP error that rejected response `r` before any output (not billed), or None."""
    error = r.error
    if error is None or r.text or r.tool_calls:
        return None
    from ..errors import APIStatusError

    return error if isinstance(error, APIStatusError) else None


def _single_cost(r: Any, usage: Usage) -> Cost:
    if r.provider is None:
        if usage.is_empty() and usage.provider_cost is None:
            return _free("no request was sent")
        return Cost(None, reason="unknown provider", estimated=usage.estimated)
    error = rejected(r)
    if error is not None:
        return _free(f"rejected with HTTP {error.status_code}: not billed")
    return cost_of(r.provider, r.model, usage, prices=getattr(r, "_prices", None), requested_model=r.requested_model)


def response_cost(r: Any) -> Cost:
    """`Response.cost`: the served response's cost (a tool loop: the sum of its turns), cached on the response."""
    turns = r.turns
    prices = getattr(r, "_prices", None)
    key = (
        r.provider, r.model, r.requested_model, r.status, id(r.error), _safe_usage_key(r.usage), id(turns),
        len(turns) if turns else 0, prices._token() if isinstance(prices, PriceTable) else id(prices),
        DEFAULT_PRICES.version,
    )
    cached = getattr(r, "_cost", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if turns and len(turns) > 1:
        others = [t for t in turns if t is not r]
        costs = [t.cost for t in others]
        if len(others) < len(turns):  # r is the last turn, its usage the sum: price its own share
            costs.append(_single_cost(r, _subtract(r.usage, [t.usage for t in others])))
        result = sum_costs(costs)
    else:
        result = _single_cost(r, r.usage)
    try:
        r._cost = (key, result)
    except AttributeError:
        pass
    return result


def _safe_usage_key(u: Usage) -> Any:
    try:
        key = _usage_key(u)
        hash(key)
        return key
    except TypeError:
        return object()  # never equal: no caching


def attempt_cost(a: Any) -> Cost:
    """`Attempt.cost`: its (partial) response's cost; a model never sent to costs nothing."""
    if a.response is None:
        name = type(a.error).__name__ if a.error is not None else "skipped"
        return _free(f"not sent ({name})")
    return a.response.cost


def call_cost(r: Any) -> Cost:
    """Everything a call cost: the served response (every tool-loop turn) plus every failed fallback attempt."""
    parts: list[Cost] = []
    turns = r.turns if r.turns else [r]
    for turn in turns:
        for a in turn.attempts or ():
            if a.response is not turn and a.error is not None:
                parts.append(a.cost)
    parts.append(r.cost)
    return sum_costs(parts)
