"""The genai-prices database, behind one function: `genai_cost(provider, models, tokens)`.

Imported only on the first cost computation (never by `import llmrelay`, never
before the first token). Only the package's bundled data is used; its update
(download) machinery is never called.
"""

from __future__ import annotations

import threading
from typing import Any

from .model import _PER, Cost, _Tokens

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
    "azure": "azure",
    "azure-responses": "azure",
    "bedrock": "aws",
    "bedrock-invoke": "aws",
    "vertex": "google",
}

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


def preload() -> bool:
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
    if provider == "vertex" and model.startswith("claude"):
        gid = "anthropic"  # Claude on Vertex: `claude-sonnet-4-5@20250929`, priced as Anthropic's
    if provider in ("gemini", "vertex") and "models/" in model:
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


def genai_cost(provider: str, models: list[str], t: _Tokens) -> Cost:
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


