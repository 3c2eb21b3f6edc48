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

from typing import TYPE_CHECKING, Any

from .model import Cost, sum_costs

if TYPE_CHECKING:  # lazy at run time (see __getattr__), visible to type checkers
    from .prices import (
        DEFAULT_PRICES,
        Price,
        PriceTable,
        attempt_cost,
        call_cost,
        clear_prices,
        cost_of,
        response_cost,
        set_price,
    )

__all__ = [
    "Cost",
    "Price",
    "PriceTable",
    "DEFAULT_PRICES",
    "cost_of",
    "set_price",
    "clear_prices",
    "map_model",
    "call_cost",
    "sum_costs",
    "preload_prices",
]


def preload_prices() -> bool:
    """Load the price database now (e.g. at startup) instead of on the first cost read."""
    from .pricedb import preload

    return preload()


_PRICES_API = (
    "Price", "PriceTable", "DEFAULT_PRICES", "cost_of", "set_price", "clear_prices", "map_model",
    "response_cost", "attempt_cost", "call_cost",
)


def __getattr__(name: str) -> Any:
    """Price tables and the response-level functions live in `llmrelay.cost.prices` (same API here)."""
    if name in _PRICES_API:
        from . import prices

        return getattr(prices, name)
    raise AttributeError(f"module 'llmrelay.cost' has no attribute {name!r}")
