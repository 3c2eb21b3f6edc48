"""Cost (`llmrelay.cost`): provider-reported cost, your prices, genai-prices, and every outcome.

Expected numbers are computed by hand from the genai-prices 0.2.3 data (rates
in USD per million tokens, checked against the data in `test_rates_used_below`),
so a change of the data points at the data, not at llmrelay.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import llmrelay
from llmrelay import cost as costmod
from llmrelay.cost import pricedb, prices
from llmrelay.cost import Cost, PriceTable, call_cost, clear_prices, cost_of, set_price, sum_costs
from llmrelay.response import Attempt, Response
from llmrelay.testing import Reply
from llmrelay.usage import Usage

genai_prices = pytest.importorskip("genai_prices")

HI = [{"role": "user", "content": "Say something."}]
OK = "openai_chat/text_usage_chunk.sse"  # gpt-4o-2024-08-06, 14 in / 30 out


@pytest.fixture(autouse=True)
def _no_overrides():
    clear_prices()
    yield
    clear_prices()


async def run(client, mode, model, messages=HI, **kw):
    """(events, response): the whole stream."""
    if mode == "sync":
        s = client.stream(model, messages, **kw)
        return list(s), s.response
    s = client.astream(model, messages, **kw)
    return [e async for e in s], s.response


async def run_error(client, mode, model, messages=HI, **kw):
    """The error a stream raises (its `.partial` is the response so far)."""
    with pytest.raises(llmrelay.LLMRelayError) as info:
        await run(client, mode, model, messages, **kw)
    return info.value


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-15)


# ---------------------------------------------------------------------------
# genai-prices: token semantics checked against the price data
# ---------------------------------------------------------------------------
RATES = {
    # (genai provider, model): {price key: USD per MTok (base tier)}
    ("openai", "gpt-4o"): {"input_mtok": 2.5, "cache_read_mtok": 1.25, "output_mtok": 10},
    ("openai", "gpt-4o-mini"): {"input_mtok": 0.15, "output_mtok": 0.6},
    ("anthropic", "claude-sonnet-4-5"): {"input_mtok": 3, "cache_read_mtok": 0.3, "cache_write_mtok": 3.75,
                                         "cache_write_1h_mtok": 6, "output_mtok": 15},
    ("google", "gemini-2.5-flash"): {"input_mtok": 0.3, "cache_read_mtok": 0.03, "output_mtok": 2.5},
    ("google", "gemini-2.5-pro"): {"input_mtok": 1.25, "output_mtok": 10},
    ("groq", "openai/gpt-oss-120b"): {"input_mtok": 0.15, "output_mtok": 0.6},
    ("cohere", "command-a"): {"input_mtok": 2.5, "output_mtok": 10},
}


def test_rates_used_below():
    """The hand computations below use these rates: they are genai-prices 0.2.3's."""
    from datetime import UTC, datetime

    from genai_prices.data_snapshot import get_snapshot

    assert genai_prices.__version__ == "0.2.3"
    for (provider, model), rates in RATES.items():
        _, info = get_snapshot().find_provider_model(model, None, provider, None)
        prices = info.get_prices(datetime.now(tz=UTC))
        for key, rate in rates.items():
            value = getattr(prices, key)
            value = getattr(value, "base", value)  # tiered: the base tier
            assert float(value) == rate, (provider, model, key)


def test_openai_cached_input_is_part_of_input():
    # 10k input of which 4k cached reads; 2k output of which 500 reasoning (billed as output)
    c = cost_of("openai", "gpt-4o-2024-08-06", Usage(10_000, 2_000, cached_input_tokens=4_000, reasoning_tokens=500))
    assert c.source == "prices" and c.reason is None and not c.estimated
    assert c.priced_as == "genai-prices openai:gpt-4o"
    assert c.cached_input == approx(4_000 * 1.25 / 1e6)
    assert c.input == approx((6_000 * 2.5 + 4_000 * 1.25) / 1e6)  # 0.02
    assert c.output == approx(2_000 * 10 / 1e6)  # 0.02
    assert c.total == approx(0.04)
    assert c.cache_write == 0.0


def test_anthropic_cache_reads_writes_and_1h_writes():
    # Our input 10k = 5k uncached + 3k cache reads + 2k cache writes (500 of them with a 1h TTL).
    usage = Usage(10_000, 1_000, cached_input_tokens=3_000, cache_write_tokens=2_000, reasoning_tokens=400,
                  raw={"cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500}})
    c = cost_of("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert c.cached_input == approx(3_000 * 0.3 / 1e6)
    assert c.cache_write == approx((1_500 * 3.75 + 500 * 6) / 1e6)
    assert c.input == approx((5_000 * 3 + 3_000 * 0.3 + 1_500 * 3.75 + 500 * 6) / 1e6)  # 0.024525
    assert c.output == approx(1_000 * 15 / 1e6)
    assert c.total == approx(0.039525)


def test_anthropic_usage_from_the_decoder_prices_the_same():
    """The protocol's own normalization (cache reads and writes added back to input) feeds genai-prices right."""
    from llmrelay.protocols.anthropic import anthropic_usage

    usage = anthropic_usage({"input_tokens": 5_000, "cache_read_input_tokens": 3_000, "cache_creation_input_tokens": 2_000,
                             "output_tokens": 1_000})
    assert usage.input_tokens == 10_000
    c = cost_of("anthropic", "claude-sonnet-4-5-20250929", usage)
    assert c.total == approx((5_000 * 3 + 3_000 * 0.3 + 2_000 * 3.75 + 1_000 * 15) / 1e6)


def test_gemini_thoughts_cached_and_model_path():
    from llmrelay.protocols.gemini import gemini_usage

    # promptTokenCount includes cached content; thoughts are added to output by the decoder
    usage = gemini_usage({"promptTokenCount": 1_000, "cachedContentTokenCount": 400, "candidatesTokenCount": 200,
                          "thoughtsTokenCount": 300})
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (1_000, 500, 300)
    c = cost_of("gemini", "models/gemini-2.5-flash", usage)  # "models/" prefix stripped; gemini -> google
    assert c.priced_as == "genai-prices google:gemini-2.5-flash"
    assert c.input == approx((600 * 0.3 + 400 * 0.03) / 1e6)
    assert c.output == approx(500 * 2.5 / 1e6)  # thoughts billed as output
    assert c.total == approx(0.001442)


def test_gemini_long_context_tier_uses_total_input():
    # 2.5 Pro: > 200k input tokens -> $2.5 in / $15 out
    c = cost_of("gemini", "gemini-2.5-pro", Usage(250_000, 1_000))
    assert c.total == approx((250_000 * 2.5 + 1_000 * 15) / 1e6)
    c = cost_of("gemini", "gemini-2.5-pro", Usage(100_000, 1_000))
    assert c.total == approx((100_000 * 1.25 + 1_000 * 10) / 1e6)


def test_cohere_is_priced_on_billed_units():
    from llmrelay.protocols.cohere import cohere_usage

    usage = cohere_usage({"billed_units": {"input_tokens": 4, "output_tokens": 69},
                          "tokens": {"input_tokens": 70, "output_tokens": 69}})
    assert usage.input_tokens == 70  # the count convention: every prompt token
    c = cost_of("cohere", "command-a-03-2025", usage)
    assert c.total == approx((4 * 2.5 + 69 * 10) / 1e6)  # what Cohere bills
    assert cost_of("cohere-v1", "command-a-03-2025", usage).total == c.total


def test_inconsistent_counts_are_clamped_not_raised():
    # a real OpenRouter capture reports reasoning_tokens 11 > completion_tokens 10
    c = cost_of("openai", "gpt-4o", Usage(100, 10, cached_input_tokens=500, reasoning_tokens=11))
    assert c.total == approx((100 * 1.25 + 10 * 10) / 1e6)  # every input token a cached read


# ---------------------------------------------------------------------------
# No price: None with a reason, never an exception
# ---------------------------------------------------------------------------
def test_unknown_model_gives_none_with_reason():
    c = cost_of("groq", "foo", Usage(10, 10))
    assert c.total is None and c.source is None
    assert c.reason.startswith("no price for groq:foo in genai-prices 0.2.3")
    assert "set_price('groq:foo'" in c.reason


@pytest.mark.parametrize("provider,model,needle", [
    ("ollama", "llama3.2", "local models"),
    ("vllm", "qwen", "local models"),
    ("myproxy", "gpt-4o", "it has no provider 'myproxy'"),
    ("gemini", "gemini-9-ultra", "looked up as google:gemini-9-ultra"),
    ("huggingface", "meta-llama/Llama-3.1-8B-Instruct", "router picks the provider"),
])
def test_other_unpriced_cases_have_reasons(provider, model, needle):
    c = cost_of(provider, model, Usage(10, 10))
    assert c.total is None and needle in c.reason


def test_missing_usage_and_missing_model_have_reasons():
    assert cost_of("openai", "gpt-4o", Usage()).reason == "the provider reported no usage"
    assert "output tokens not reported" in cost_of("openai", "gpt-4o", Usage(10, None)).reason
    assert cost_of("openai", None, Usage(10, 10)).reason == "no model name to price"


def test_without_genai_prices_the_reason_says_how_to_install(monkeypatch):
    g = pricedb._Genai
    for name in ("loaded", "missing", "module", "types", "version"):
        monkeypatch.setattr(g, name, getattr(g, name))
    monkeypatch.setattr(g, "loaded", False)
    monkeypatch.setattr(prices, "_RESULTS", {})
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import fails
    c = cost_of("openai", "gpt-4o", Usage(10, 10))
    assert c.total is None and c.reason.startswith("install llmrelay[prices] for prices")
    # your prices still work
    set_price("openai:gpt-4o", input=1, output=1)
    assert cost_of("openai", "gpt-4o", Usage(10, 10)).total == approx(20 / 1e6)


def test_a_failing_price_computation_is_a_reason(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bad data")

    monkeypatch.setattr(pricedb, "_calc", boom)
    monkeypatch.setattr(prices, "_RESULTS", {})
    c = cost_of("openai", "gpt-4o", Usage(10, 10))
    assert c.total is None and c.reason == "cost computation failed: RuntimeError: bad data"


# ---------------------------------------------------------------------------
# Your prices
# ---------------------------------------------------------------------------
def test_override_exact_numbers():
    set_price("openai:gpt-4o", input=2, output=8, cached_input=0.5, cache_write=4, reasoning=20)
    c = cost_of("openai", "gpt-4o", Usage(1_000, 500, cached_input_tokens=200, cache_write_tokens=100, reasoning_tokens=300))
    assert c.source == "override" and c.priced_as == "openai:gpt-4o"
    assert c.cached_input == approx(200 * 0.5 / 1e6)
    assert c.cache_write == approx(100 * 4 / 1e6)
    assert c.input == approx((700 * 2 + 200 * 0.5 + 100 * 4) / 1e6)
    assert c.output == approx((200 * 8 + 300 * 20) / 1e6)
    assert c.total == approx((1_400 + 100 + 400 + 1_600 + 6_000) / 1e6)


def test_override_defaults_reasoning_and_cache_to_the_base_rates():
    set_price("openai:gpt-4o", input=2, output=8)
    c = cost_of("openai", "gpt-4o", Usage(1_000, 500, cached_input_tokens=200, reasoning_tokens=300))
    assert c.total == approx((1_000 * 2 + 500 * 8) / 1e6)


def test_override_wins_over_genai_prices_and_matches_requested_model():
    set_price("openai:gpt-4o", input=1, output=1)
    # the served model is dated; the requested one is what the user priced
    c = cost_of("openai", "gpt-4o-2024-08-06", Usage(1_000, 1_000), requested_model="gpt-4o")
    assert c.source == "override" and c.total == approx(2_000 / 1e6)


def test_glob_precedence_exact_then_most_specific():
    set_price("openai:gpt-4o-mini", input=3, output=3)
    set_price("openai:gpt-4o*", input=2, output=2)
    set_price("openai:*", input=1, output=1)
    set_price("*:llama*", input=5, output=5)  # any provider
    set_price("qwen*", input=7, output=7)  # no colon: the model under any provider
    u = Usage(1_000_000, 0)
    assert cost_of("openai", "gpt-4o-mini", u).total == 3
    assert cost_of("openai", "gpt-4o-2024-08-06", u).total == 2
    assert cost_of("openai", "o3", u).total == 1
    assert cost_of("groq", "llama-3.3-70b-versatile", u).total == 5
    assert cost_of("fireworks", "qwen3-235b", u).total == 7
    assert cost_of("together", "Qwen/Qwen3-235B", u).total == 7
    assert cost_of("together", "deepseek-ai/qwen-distill", u).source != "override"
    assert cost_of("openai", "GPT-4O-MINI", u).total == 3  # case-insensitive


def test_overrides_can_be_replaced_removed_and_cleared():
    set_price("groq:foo", input=1, output=1)
    set_price("groq:foo", input=2, output=2)
    assert cost_of("groq", "foo", Usage(1_000_000, 0)).total == 2
    clear_prices()
    assert cost_of("groq", "foo", Usage(1_000_000, 0)).total is None
    t = PriceTable({"groq:foo": (1, 1)})
    t.remove("groq:foo")
    assert len(t) == 0


def test_invalid_prices_raise_at_once():
    with pytest.raises(ValueError):
        set_price("openai:gpt-4o", input=-1, output=1)
    with pytest.raises(ValueError):
        set_price("", input=1, output=1)
    with pytest.raises(TypeError):
        PriceTable.of(["openai:gpt-4o"])


def test_price_table_layers():
    set_price("groq:*", input=1, output=1)  # process-wide
    table = PriceTable({"groq:foo": {"input": 2, "output": 2}})
    u = Usage(1_000_000, 0)
    assert cost_of("groq", "foo", u, prices=table).total == 2
    assert cost_of("groq", "bar", u, prices=table).total == 1  # inherited
    alone = cost_of("groq", "bar", u, prices=PriceTable(inherit=False))  # process-wide prices not consulted
    assert alone.total is None and alone.reason.startswith("no price for groq:bar in genai-prices")
    assert cost_of("openai", "gpt-4o", u, prices=PriceTable(genai_prices=False)).reason.startswith(
        "no price for openai:gpt-4o (genai-prices disabled)")
    assert cost_of("groq", "foo", u, prices={"groq:foo": (3, 3)}).total == 3  # a mapping is a table


def test_response_carries_its_client_prices():
    r = Response(provider="groq", model="foo", usage=Usage(1_000_000, 0), _prices=PriceTable({"groq:foo": (4, 4)}))
    assert r.cost.total == 4


def test_client_prices_option(server):
    from llmrelay.testing import client_for

    try:
        client = client_for(server, retry=0, prices={"openai:gpt-4o*": {"input": 1, "output": 1}})
    except TypeError:
        pytest.skip("Client(prices=...) is not wired yet")
    server.enqueue(Reply.recording(OK))
    r = client.complete("openai:gpt-4o", HI)
    assert r.cost.source == "override" and r.cost.total == approx((14 + 30) / 1e6)
    client.close()


# ---------------------------------------------------------------------------
# Provider-reported cost wins
# ---------------------------------------------------------------------------
async def test_openrouter_reported_cost_wins(server, client, mode):
    set_price("openrouter:*", input=1000, output=1000)  # never used: the stream says what it cost
    server.enqueue(Reply.recording("openrouter/streaming_reasoning.sse"))
    _, r = await run(client, mode, "openrouter:anthropic/claude-sonnet-4.5")
    assert r.usage.provider_cost == approx(0.000669)
    c = r.cost
    assert c.source == "provider" and c.total == approx(0.000669)
    assert c.input == approx(0.000129) and c.output == approx(0.00054)  # cost_details


async def test_openrouter_free_model_costs_zero(server, client, mode):
    server.enqueue(Reply.recording("openrouter/text_basic.sse"))
    _, r = await run(client, mode, "openrouter:meta-llama/llama-3.2-3b-instruct:free")
    assert r.cost.source == "provider" and r.cost.total == 0.0


def test_openrouter_byok_adds_the_upstream_charge():
    usage = Usage(100, 10, provider_cost=0.001, raw={"is_byok": True, "cost_details": {"upstream_inference_cost": 0.02}})
    assert cost_of("openrouter", "openai/gpt-4o", usage).total == approx(0.021)
    usage = Usage(100, 10, provider_cost=0.02, raw={"is_byok": False, "cost_details": {"upstream_inference_cost": 0.02}})
    assert cost_of("openrouter", "openai/gpt-4o", usage).total == approx(0.02)


# ---------------------------------------------------------------------------
# Every outcome has a cost or a reason
# ---------------------------------------------------------------------------
async def test_completed(server, client, mode):
    server.enqueue(Reply.recording(OK))
    _, r = await run(client, mode, "openai:gpt-4o")
    assert r.status == "ok"
    assert r.cost.total == approx((14 * 2.5 + 30 * 10) / 1e6) and not r.cost.estimated
    assert r.cost is r.cost  # cached on the response


async def test_truncated_length(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/finish_length.sse"))
    _, r = await run(client, mode, "openai:gpt-4o")
    assert r.status == "truncated"
    assert r.cost.total == approx((79 * 2.5 + 1 * 10) / 1e6) and not r.cost.estimated


async def test_in_band_error_is_estimated(server, client, mode):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"))
    error = await run_error(client, mode, "groq:openai/gpt-oss-120b")
    assert isinstance(error, llmrelay.ProviderStreamError)
    r = error.partial
    assert r.status == "error" and r.usage.estimated
    c = r.cost
    assert c.estimated and c.source == "prices" and c.total > 0
    assert c.total == approx((r.usage.input_tokens * 0.15 + r.usage.output_tokens * 0.6) / 1e6)


async def test_cut_stream_is_estimated_never_zero(server, client, mode):
    server.enqueue(Reply.recording(OK, chunking="events", cut_after=6))
    error = await run_error(client, mode, "openai:gpt-4o")
    assert isinstance(error, llmrelay.StreamInterruptedError)
    r = error.partial
    assert r.text and r.usage.estimated and r.usage.output_tokens > 0
    assert r.cost.estimated and r.cost.total == approx((r.usage.input_tokens * 2.5 + r.usage.output_tokens * 10) / 1e6)


async def test_aborted_close_is_estimated(server, client, mode):
    server.enqueue(Reply.recording(OK, chunking="events", delay=0.01))
    if mode == "sync":
        s = client.stream("openai:gpt-4o", HI)
        for e in s:
            if type(e) is llmrelay.TextDelta:
                break
        s.close()
    else:
        s = client.astream("openai:gpt-4o", HI)
        async for e in s:
            if type(e) is llmrelay.TextDelta:
                break
        await s.aclose()
    r = s.response
    assert r.status == "aborted"
    assert r.cost.estimated and r.cost.total > 0
    assert s.cost == r.cost


async def test_http_error_is_not_billed(server, client, mode):
    server.enqueue(Reply.json({"error": {"message": "slow down"}}, status=429))
    error = await run_error(client, mode, "openai:gpt-4o")
    assert isinstance(error, llmrelay.RateLimitError)
    c = error.partial.cost
    assert c.total == 0.0 and c.reason == "rejected with HTTP 429: not billed"


def test_closed_before_start_costs_nothing(server, client):
    s = client.stream("openai:gpt-4o", HI)
    s.close()
    assert s.cost.total == 0.0 and s.cost.reason == "no request was sent"
    assert Response().cost.total == 0.0


async def test_fallback_attempts_each_have_a_cost(server, client, mode):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"), Reply.recording(OK))
    _, r = await run(client, mode, ["groq:openai/gpt-oss-120b", "openai:gpt-4o"])
    assert [a.model for a in r.attempts] == ["groq:openai/gpt-oss-120b", "openai:gpt-4o"]
    failed, served = r.attempts
    assert failed.error is not None and failed.cost.estimated and failed.cost.total > 0
    assert served.cost == r.cost and not r.cost.estimated
    assert r.cost.total == approx((14 * 2.5 + 30 * 10) / 1e6)
    whole = call_cost(r)
    assert whole.total == approx(failed.cost.total + r.cost.total) and whole.estimated


def test_a_model_never_sent_costs_nothing():
    a = Attempt("groq:foo", None, llmrelay.MissingAPIKeyError("groq", ("GROQ_API_KEY",)))
    assert a.cost.total == 0.0 and a.cost.reason == "not sent (MissingAPIKeyError)"


def test_all_models_failed_attempts_have_costs(server, client):
    server.enqueue(Reply.recording("groq/error_event_tool_use_failed.sse"),
                   Reply.json({"error": {"message": "down"}}, status=503))
    with pytest.raises(llmrelay.AllModelsFailedError) as info:
        client.complete(["groq:openai/gpt-oss-120b", "openai:gpt-4o"], HI)
    costs = [a.cost for a in info.value.attempts]
    assert costs[0].estimated and costs[0].total > 0
    assert costs[1].total == 0.0 and "HTTP 503" in costs[1].reason


async def test_tool_loop_cost_is_the_sum_of_its_turns(server, client, mode):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"),
                   Reply.recording("openai_chat/text_after_tool_result.sse"))
    multiply = llmrelay.Tool("multiply", "", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                              "b": {"type": "integer"}}},
                             lambda a, b: a * b)
    _, r = await run(client, mode, "openai:gpt-4o-mini", tools=[multiply])
    assert len(r.turns) == 2
    first, second = (t.cost.total for t in r.turns)
    assert first == approx((54 * 0.15 + 20 * 0.6) / 1e6)
    assert second == approx((87 * 0.15 + 26 * 0.6) / 1e6)
    assert r.cost.total == approx(first + second)


async def test_tool_loop_provider_costs_are_summed(server, client, mode):
    server.enqueue(Reply.recording("openrouter/tool_args_full_first_no_finish.sse"),
                   Reply.recording("openrouter/text_basic.sse"))
    tool = llmrelay.Tool("llm_version", "", {"type": "object", "properties": {}}, lambda: "0.27")
    _, r = await run(client, mode, "openrouter:moonshotai/kimi-k2", tools=[tool])
    assert [t.cost.total for t in r.turns] == [approx(0.00007159), 0.0]
    assert r.cost.source == "provider" and r.cost.total == approx(0.00007159)


def test_sum_of_costs_is_unknown_if_a_part_is():
    known = Cost(1.0, 0.5, 0.5, source="prices")
    unknown = Cost(None, reason="no price for groq:foo")
    s = sum_costs([known, unknown])
    assert s.total is None and s.reason == "1 of 2 parts have no cost: no price for groq:foo"
    both = known + Cost(2.0, 1.0, 1.0, source="provider", estimated=True)
    assert (both.total, both.input, both.source, both.estimated) == (3.0, 1.5, "mixed", True)


# ---------------------------------------------------------------------------
# Live cost on the stream
# ---------------------------------------------------------------------------
async def test_live_cost_mid_stream(server, client, mode):
    server.enqueue(Reply.recording(OK, chunking="events", delay=0.003))  # paced: one read per event
    seen = []
    s = client.stream("openai:gpt-4o", HI) if mode == "sync" else client.astream("openai:gpt-4o", HI)

    def look(e):
        if type(e) is llmrelay.TextDelta:
            c = s.cost
            seen.append((len(s.text), c.total, c.estimated))

    if mode == "sync":
        for e in s:
            look(e)
    else:
        async for e in s:
            look(e)
    assert len(seen) > 3
    # usage comes in the last chunk: estimated until then (events are folded per network
    # read, so the last few text events may already see it when they share that read)
    flags = [est for _, _, est in seen]
    assert flags[0] and flags == sorted(flags, reverse=True)
    totals = [t for _, t, _ in seen]
    estimates = [t for _, t, est in seen if est]  # grow with the text; the reported usage then replaces them
    assert all(t > 0 for t in totals) and estimates == sorted(estimates) and estimates[-1] > estimates[0]
    final = s.cost
    assert not final.estimated and final == s.response.cost
    assert final.total == approx((14 * 2.5 + 30 * 10) / 1e6)


def test_repeated_pricing_is_memoized(monkeypatch):
    from genai_prices import data_snapshot

    calls = []
    original = data_snapshot.DataSnapshot.find_provider_model

    def counting(self, *a, **k):
        calls.append(a)
        return original(self, *a, **k)

    monkeypatch.setattr(data_snapshot.DataSnapshot, "find_provider_model", counting)
    monkeypatch.setattr(pricedb._Genai, "lookups", {})
    monkeypatch.setattr(prices, "_RESULTS", {})
    for n in range(1, 50):
        cost_of("openai", "gpt-4o", Usage(100, n))
        cost_of("openai", "gpt-4o", Usage(100, n))
    assert len(calls) == 1


# ---------------------------------------------------------------------------
# genai-prices is loaded lazily
# ---------------------------------------------------------------------------
def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_llmrelay_does_not_import_genai_prices():
    assert _python("""
        import sys
        import llmrelay, llmrelay.cost, llmrelay.response, llmrelay.stream
        from llmrelay.cost import set_price
        set_price("openai:gpt-4o", input=1, output=1)
        print("genai_prices" in sys.modules)
    """) == "False"


def test_genai_prices_is_not_imported_before_the_first_token():
    assert _python("""
        import sys
        import llmrelay
        from llmrelay.testing import ReplayServer, Reply, client_for

        seen = {}

        class Watch(llmrelay.Hooks):
            def on_first_token(self, ctx, call, ttft):
                seen["hook"] = "genai_prices" in sys.modules

        with ReplayServer() as server:
            server.enqueue(Reply.recording("openai_chat/text_usage_chunk.sse"))
            client = client_for(server, retry=0, hooks=[Watch()])
            s = client.stream("openai:gpt-4o", "hi")
            for e in s:
                if type(e) is llmrelay.TextDelta and "event" not in seen:
                    seen["event"] = "genai_prices" in sys.modules
            seen["after"] = "genai_prices" in sys.modules
            total = s.response.cost.total  # the first cost computation loads it
            seen["priced"] = "genai_prices" in sys.modules and total is not None
            client.close()
        print(seen["hook"], seen["event"], seen["after"], seen["priced"])
    """) == "False False False True"


def test_usage_merge_takes_every_reported_count_and_keeps_the_rest():
    from dataclasses import fields

    counts = [f.name for f in fields(Usage) if f.name.endswith("_tokens")]
    assert len(counts) == 5
    for name in counts:
        u = Usage(**{n: 1 for n in counts})
        u.merge(Usage(**{name: 7}))  # one count reported: it wins, the others keep their values
        assert [getattr(u, n) for n in counts] == [7 if n == name else 1 for n in counts]
        assert not u.is_empty() and Usage(**{name: 0}).is_empty() is False
    assert Usage().is_empty() and Usage(provider_cost=0.1).is_empty()
