"""Cost in USD of a call, from what the provider reported or a price list.

    r = client.complete("openai:gpt-4o", "Hi")
    r.cost.total            # 0.000215 (USD), or None with r.cost.reason saying why
    stream.cost             # live: the cost of the usage so far

Where a price comes from, first match wins:

1. **The provider.** A stream that carries its own cost (OpenRouter's
   `usage.cost`, kept as `Usage.provider_cost`) is used as is: `source="provider"`.
   For an OpenRouter BYOK call (`usage.is_byok`), the upstream provider's own
   charge (`cost_details.upstream_inference_cost`) is added to it.
2. **Your prices** (`source="override"`): `set_price(...)` for the whole
   process, or a `PriceTable` given to `Client(prices=...)` (checked before
   the process-wide ones). Keys are `"provider:model"` or a glob
   (`"openai:gpt-4o*"`, `"*:llama-3*"`; a key without a colon matches the
   model under any provider). An exact key wins over a glob; among globs the
   most specific (most literal characters) wins. Prices are USD per million
   tokens. Both the served model (`Response.model`, e.g.
   `gpt-4o-2024-08-06`) and the requested one are tried.
3. **genai-prices** (`source="prices"`), a maintained price database, when
   installed (`pip install llmrelay[prices]`). It is imported on the first
   cost computation, never by `import llmrelay` and never before the first
   token, and only its bundled data is used: llmrelay never calls its update
   (download) machinery, so nothing is fetched at import or call time. (If
   *you* start genai-prices' `UpdatePrices`, its fresher snapshot is used.)

Otherwise `Cost(total=None, reason="...")`: an unknown model, a local server,
genai-prices not installed, usage never reported. Never an exception.

Token conventions are llmrelay's (`llmrelay.usage`): cached reads and cache
writes are part of `input_tokens`, reasoning is part of `output_tokens`.
genai-prices uses the same ones (its `input_tokens` is the total, cache reads
and writes included; its reasoning tokens are part of `output_tokens`), so
counts map one to one. Reasoning is billed as output unless a reasoning price
is set. Cohere bills `billed_units` (prompt-template tokens excluded), so a
Cohere usage is priced from `raw["billed_units"]` when present.

Usage that was estimated (a cut or cancelled stream: `Usage.estimated`) gives
an estimated cost: `Cost.estimated` is True.

Lookups are memoized per (provider, model), so pricing a usage again (e.g.
`stream.cost` read on every event) costs a dict lookup when the counts did not
change and about 0.1 ms when they did.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from dataclasses import dataclass, fields
from fnmatch import translate
from typing import Any, Iterable, Mapping

from .usage import Usage

__all__ = [
    "Cost",
    "Price",
    "PriceTable",
    "DEFAULT_PRICES",
    "GENAI_PROVIDERS",
    "cost_of",
    "set_price",
    "clear_prices",
    "call_cost",
    "sum_costs",
    "preload_prices",
]

_PER = 1_000_000

#: llmrelay provider name -> genai-prices provider id (None: a local or
#: self-hosted server, which has no price list). Other names are looked up in
#: genai-prices as they are (a custom provider named after a known one works).
GENAI_PROVIDERS: dict[str, str | None] = {
    "openai": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "openrouter": "openrouter",
    "together": "together",
    "fireworks": "fireworks",
    "xai": "x-ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "cohere-v1": "cohere",
    "cerebras": "cerebras",
    "ollama": None,
    "lmstudio": None,
    "vllm": None,
    "openai-compatible": None,
}

_COHERE = frozenset({"cohere", "cohere-v1"})
_UIDS = itertools.count()


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
    raw = usage.raw if isinstance(usage.raw, dict) else {}
    details = raw.get("cost_details") if isinstance(raw.get("cost_details"), dict) else {}
    total = float(cost)
    if raw.get("is_byok") is True:  # OpenRouter's fee only: the upstream provider bills the tokens
        upstream = details.get("upstream_inference_cost")
        if isinstance(upstream, (int, float)) and not isinstance(upstream, bool):
            total += float(upstream)
    inp = details.get("upstream_inference_prompt_cost")
    out = details.get("upstream_inference_completions_cost")
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
        return _genai_cost(provider, models, tokens)


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
# genai-prices (optional, imported on first use)
# ---------------------------------------------------------------------------
_LOAD_LOCK = threading.Lock()


class _Genai:
    """The lazily imported genai-prices, and memoized (provider, model) lookups."""

    module: Any = None
    types: Any = None
    version: str = "?"
    missing: str | None = None
    loaded = False
    snapshot: Any = None
    lookups: dict[tuple[str, str], Any] = {}


def _load() -> str | None:
    """Import genai-prices once; None when it is usable, else why not."""
    g = _Genai
    if not g.loaded:
        with _LOAD_LOCK:  # a log-writer thread may price a response while the caller does
            if not g.loaded:
                try:
                    import genai_prices
                    from genai_prices import data_snapshot, types

                    g.module, g.types = data_snapshot, types
                    g.version = getattr(genai_prices, "__version__", "?")
                except ImportError as exc:
                    g.missing = f"install llmrelay[prices] for prices (genai-prices is not installed: {exc})"
                except Exception as exc:  # a broken install must not break a call
                    g.missing = f"genai-prices failed to import: {type(exc).__name__}: {exc}"
                g.loaded = True
    return g.missing


def preload_prices() -> bool:
    """Import genai-prices and its data now (≈0.3 s), off your hot path. True if it is available."""
    if _load() is not None:
        return False
    _Genai.module.get_snapshot()
    return True


def _genai_target(provider: str, model: str) -> tuple[str, str] | str:
    """(genai-prices provider id, model ref), or why this provider has no price list."""
    if provider in GENAI_PROVIDERS:
        gid = GENAI_PROVIDERS[provider]
        if gid is None:
            return (f"{provider} serves local models: no price list; set one with "
                    f"set_price({provider + ':' + model!r}, input=..., output=...)")
    elif provider == "huggingface":
        base, sep, route = model.rpartition(":")
        if not sep or not route:
            return "huggingface without a ':provider' suffix on the model: the router picks the provider, so no price is known"
        gid, model = f"huggingface_{route.lower()}", base
    else:
        gid = provider
    if provider == "gemini" and "models/" in model:
        model = model.rsplit("models/", 1)[1]  # "models/gemini-2.5-flash", "publishers/google/models/..."
    return gid, model


def _find(gid: str, model: str) -> Any:
    """(genai provider, model info), or "no provider" / "no model"; memoized."""
    g = _Genai
    snapshot = g.module.get_snapshot()
    if snapshot is not g.snapshot:
        g.snapshot, g.lookups = snapshot, {}
    key = (gid, model)
    try:
        return g.lookups[key]
    except KeyError:
        pass
    try:
        found: Any = snapshot.find_provider_model(model, None, gid, None)
    except LookupError as exc:
        found = "no provider" if str(exc).startswith("Unable to find provider") else "no model"
    g.lookups[key] = found
    return found


def _genai_cost(provider: str, models: list[str], t: _Tokens) -> Cost:
    missing = _load()
    if missing is not None:
        return Cost(None, reason=missing, estimated=t.estimated)
    reasons: list[str] = []
    for model in models:
        target = _genai_target(provider, model)
        if isinstance(target, str):
            return Cost(None, reason=target, estimated=t.estimated)
        gid, ref = target
        found = _find(gid, ref)
        if isinstance(found, str):
            why = f"no price for {provider}:{model} in genai-prices {_Genai.version}"
            if found == "no provider":
                why += f" (it has no provider {gid!r})"
            elif gid != provider or ref != model:
                why += f" (looked up as {gid}:{ref})"
            reasons.append(why)
            continue
        gp_provider, info = found
        return _calc(gp_provider, info, t)
    hint = f"; set one with set_price({provider + ':' + models[0]!r}, input=..., output=...)"
    return Cost(None, reason="; ".join(dict.fromkeys(reasons)) + hint, estimated=t.estimated)


def _calc(gp_provider: Any, info: Any, t: _Tokens) -> Cost:
    types = _Genai.types
    usage = types.Usage(
        input_tokens=t.input,
        output_tokens=t.output,
        cache_read_tokens=t.cached or None,
        cache_write_tokens=t.write or None,
        cache_write_1h_tokens=t.write_1h or None,
        output_reasoning_tokens=t.reasoning or None,
    )
    calc = info.calc_price(usage, gp_provider)
    mp = calc.model_price

    def part(count: int, *keys: str) -> float:
        if not count:
            return 0.0
        for key in keys:
            price = getattr(mp, key, None)
            if price is not None:
                return float(types.calc_unit_price(price, count, t.input, _PER))
        return 0.0

    cached = part(t.cached, "cache_read_mtok", "input_mtok")
    write = part(t.write - t.write_1h, "cache_write_mtok", "input_mtok") + part(
        t.write_1h, "cache_write_1h_mtok", "cache_write_mtok", "input_mtok"
    )
    return Cost(
        float(calc.total_price),
        float(calc.input_price),
        float(calc.output_price),
        cached,
        write,
        "prices",
        None,
        t.estimated,
        f"genai-prices {gp_provider.id}:{info.id}",
    )


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


def _single_cost(r: Any, usage: Usage) -> Cost:
    if r.provider is None:
        if usage.is_empty() and usage.provider_cost is None:
            return _free("no request was sent")
        return Cost(None, reason="unknown provider", estimated=usage.estimated)
    error = r.error
    if error is not None and not r.text and not r.tool_calls:
        from .errors import APIStatusError

        if isinstance(error, APIStatusError):  # rejected before any token: not billed
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
