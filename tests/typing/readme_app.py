"""A user's app made of every Python snippet in the README, as a user would paste them.

Never run: tests/test_typing.py checks it with `mypy --strict` and pyright (strict). Each README
snippet is one function here; a user's own functions carry the annotations `--strict` asks of
any code (the README snippets show them too). `assert_type` pins what the API gives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from azure.identity import DefaultAzureCredential, get_bearer_token_provider
from pydantic import BaseModel
from typing_extensions import assert_type

import llmrelay
from llmrelay import Call, Client, Finish, Provider, ReasoningDelta, Retry, RetryEvent, TextDelta, Timeouts
from llmrelay import ToolCallEnd, UsageEvent
from llmrelay.cloud import AWSAuth, AzureAuth, GoogleAuth
from llmrelay.memory import Memory
from llmrelay.reliability import Logging, Plan, SendFn, Timeout
from llmrelay.testing import ReplayServer, Reply, client_for, faults


def sync_streaming() -> None:
    # Just the text, as it arrives:
    for text in llmrelay.stream("openai:gpt-4o-mini", "Explain SSE in two sentences").text_stream:
        print(text, end="", flush=True)


def typed_events() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Two names for a pet pelican"},
    ]
    with llmrelay.stream("anthropic:claude-sonnet-4-5", messages, max_tokens=300) as stream:
        for event in stream:
            match event:
                case TextDelta(text=text):
                    print(text, end="", flush=True)
                case ReasoningDelta(text=text):
                    pass  # thinking: never mixed into the text
                case ToolCallEnd(name=name, arguments=args):
                    print(f"\nmodel wants {name}({args})")
                case UsageEvent():
                    pass  # usage reported so far (last value wins, never summed)
                case Finish(reason=reason):
                    print(f"\n[{reason}]")
                case _:
                    pass
        response = stream.response  # the final Response
    assert_type(response, llmrelay.Response[Any])


def collect_and_complete() -> None:
    response = llmrelay.stream("groq:llama-3.1-8b-instant", "Hi", temperature=0.2).collect()
    print(response.text, response.reasoning, response.tool_calls, response.finish_reason)
    print(response.usage.input_tokens, response.usage.output_tokens, response.usage.estimated)
    print(response.timings.time_to_first_token, response.timings.time_to_first_text, response.timings.total)
    response = llmrelay.complete("groq:llama-3.1-8b-instant", "Hi")  # the same thing in one call
    messages = [*response.messages, response.to_message()]  # a completed response has its transcript
    assert_type(messages, list[llmrelay.Message])


async def async_main() -> None:
    stream = llmrelay.astream("gemini:gemini-2.5-flash", "Write a haiku about TCP")
    try:
        async for event in stream:
            if isinstance(event, llmrelay.TextDelta):
                print(event.text, end="", flush=True)
    finally:
        await stream.aclose()  # closes the connection even if you stop early
    print(stream.response.usage)

    async with llmrelay.astream("ollama:gemma3:1b", "Count to 5") as s:  # same, as a context manager
        response = await s.collect()
    print(response.text)
    await llmrelay.default_client().aclose()  # close the pools before the event loop ends


async def awaited_astream() -> None:
    stream = await llmrelay.astream("openai:gpt-4o-mini", "Hi")  # as with SDKs whose calls are awaited
    assert_type(stream, llmrelay.AsyncStream[Any])
    async for text in stream.text_stream:
        print(text, end="")


def configuration() -> None:
    client = Client(
        api_keys={"openai": "sk-...", "anthropic": "sk-ant-..."},  # instead of env vars
        base_urls={"ollama": "http://gpu-box:11434"},  # e.g. a proxy or a remote server
        timeout=Timeouts(connect=5, first_byte=60, idle=30, total=300),  # seconds; None disables one
        aliases={"fast": "groq:llama-3.1-8b-instant"},
        providers={
            # Any OpenAI-compatible service is one Provider: name, protocol, base URL, key env vars.
            "acme": Provider("acme", "openai_chat", "https://llm.acme.internal/v1", ("ACME_API_KEY",)),
        },
    )
    client.stream("fast", "Hi")
    client.stream("acme:our-model-7b", "Hi")
    client.stream("openai:gpt-4o-mini", "Hi", api_key="sk-other", timeout=10)  # per-call overrides
    client.close()


def errors() -> None:
    try:
        response = llmrelay.complete("openrouter:moonshotai/kimi-k2", "Write a long story")
        print(response.text)
    except llmrelay.StreamInterruptedError as e:
        print("cut after", len(e.partial.text), "chars; about", e.partial.usage.output_tokens, "tokens")
    except llmrelay.ProviderStreamError as e:
        print("provider error in the stream:", e.code, e.message, "| partial:", e.partial_text[:80])
    except llmrelay.RateLimitError as e:
        print("retry after", e.retry_after, "s")


@llmrelay.tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


@llmrelay.tool(name="lookup", strict=True)
async def lookup(city: str) -> str:
    """Find a city."""
    return city


def tools() -> None:
    assert_type(multiply(6, 7), int)  # the decorated function keeps its signature
    llmrelay.complete("openai:gpt-4o-mini", "Where is Lyon?", tools=[lookup])  # an async tool, with options
    with llmrelay.stream("openai:gpt-4o-mini", "What is 1231 * 2331?", tools=[multiply]) as stream:
        for event in stream:  # ToolCallStart / ToolCallDelta / ToolCallEnd, then:
            if isinstance(event, llmrelay.ToolResult):
                print(f"[{event.name} returned {event.content}]")
            elif isinstance(event, llmrelay.TextDelta):
                print(event.text, end="")  # the next turn streams on
    response = stream.response
    print([m.role for m in response.messages])  # ['user', 'assistant', 'tool', 'assistant']
    print(len(response.turns))  # 2 requests; response.usage is their sum


class Weather(BaseModel):
    city: str
    temperature: float


def structured_output() -> None:
    with llmrelay.stream("openai:gpt-4o", "Weather in Paris?", output=Weather) as stream:
        for partial in stream.partial_stream:  # async: `async for partial in stream.partials`
            print(partial.value)  # {}, {'city': 'Pa'}, {'city': 'Paris'}, ... plain JSON data
    print(stream.response.output)  # city='Paris' temperature=18.5
    weather = llmrelay.complete("openai:gpt-4o", "Weather in Paris?", output=Weather).output
    assert_type(weather, Weather)
    print(weather.temperature + 1.0)
    cities = llmrelay.complete("openai:gpt-4o", "Three cities", output=list[Weather]).output
    assert_type(cities, list[Weather])
    schema = llmrelay.complete("openai:gpt-4o", "Hi", output={"type": "object"}).output  # a JSON schema: Any
    print(schema)


async def structured_output_async() -> None:
    stream = llmrelay.astream("openai:gpt-4o", "Weather in Paris?", output=Weather)
    async for partial in stream.partials:
        print(partial.value)
    assert_type((await stream.collect()).output, Weather)
    assert_type((await llmrelay.acomplete("openai:gpt-4o", "Hi", output=Weather)).output, Weather)


def retries() -> None:
    client = llmrelay.Client(
        retry=Retry(3, initial_delay=0.5, max_delay=8),  # or retry=3; retry=0 turns retries off
        timeout=Timeouts(first_token=20, idle=30),  # give up on a stream that sends no tokens
    )
    with client.stream("anthropic:claude-sonnet-4-5", "Hi") as stream:
        for event in stream:
            if isinstance(event, RetryEvent):
                print(f"retry {event.attempt} in {event.delay:.2f}s after {type(event.error).__name__}")
    print(stream.response.text)


def fallback() -> None:
    models = ["anthropic:claude-sonnet-4-5", "openai:gpt-4o"]
    with llmrelay.stream(models, "Two names for a pet pelican") as stream:
        for event in stream:
            if isinstance(event, llmrelay.TextDelta):
                print(event.text, end="")
            elif isinstance(event, llmrelay.FallbackEvent):
                print(f"\n[{event.from_model} failed: {type(event.error).__name__}; {event.to_model} goes on ({event.mode})]")
    response = stream.response
    print(response.provider, response.resumed, [(a.model, a.ok) for a in response.attempts])


class TeamHeader(llmrelay.Middleware):
    def turn(self, call: Call, send: SendFn) -> Plan:
        call = dataclasses.replace(call, extra_headers={**(call.extra_headers or {}), "x-team": "search"})
        started = time.monotonic()
        response = yield from send(call)
        print(f"{call.model}: {time.monotonic() - started:.2f}s, {response.usage.output_tokens} tokens")
        return response


class HideReasoning(llmrelay.Middleware):
    def on_event(self, event: Any, call: Call) -> Any:
        return None if isinstance(event, llmrelay.ReasoningDelta) else event


def middleware() -> None:
    logging.basicConfig(level=logging.INFO)  # Logging(): one record per turn start and end, content masked
    client = llmrelay.Client(middleware=[Logging(), Timeout(first_token=10), TeamHeader(), HideReasoning()])
    print(client.complete("deepseek:deepseek-reasoner", "Why is the sky blue?").text)


def cost() -> None:
    response = llmrelay.complete("openai:gpt-4o", "Hi")
    print(response.cost.total, response.cost.source)  # e.g. 0.000335 prices; None + .reason when unknown

    llmrelay.set_price("vllm:*", input=0.0, output=0.0)  # USD per million tokens, for the whole process
    client = llmrelay.Client(prices={"openai:gpt-4o*": {"input": 2.5, "output": 10.0}})  # a PriceTable
    with client.stream("openai:gpt-4o", "Write a haiku") as stream:
        for _ in stream.text_stream:
            print(f"{stream.cost.total:.6f}", end=" ")  # live: estimated until the provider reports usage
    print(stream.response.cost)


class Printer(llmrelay.Hooks):  # also on_call_start/end, on_turn_start, on_tool_result, on_retry, on_fallback
    def on_first_token(self, ctx: llmrelay.CallContext, call: llmrelay.Call, ttft: float) -> None:
        print(ctx.correlation_id[:8], ctx.tags, call.model, f"TTFT {ttft * 1000:.0f} ms")

    def on_turn_end(self, ctx: llmrelay.CallContext, call: llmrelay.Call, response: llmrelay.Response) -> None:
        print(response.status, response.usage.output_tokens)


def hooks() -> None:
    client = llmrelay.Client(hooks=[Printer()], log="calls.db")
    response = client.complete("anthropic:claude-sonnet-4-5", "Two names for a pet pelican", tags={"user": "alice"})
    print(response.correlation_id)  # the same id in hooks, logs and traces


def memory() -> None:
    memory = Memory(path="memory.db")  # SQLite; default ":memory:". Extraction: the conversation's model
    memory.add_text("alice", "Alice is vegetarian.")

    chat = llmrelay.Client().with_memory(user_id="alice", memory=memory)
    for event in chat.stream("openai:gpt-4o", "I just moved to Lyon. Plan a dinner for me."):
        if isinstance(event, llmrelay.ToolResult):
            print(event.content)  # what search_memory found
    chat.flush()  # wait for learning (scripts and tests)
    print([fact.text for fact in memory.list("alice")])
    memory.forget("alice")  # every row of alice, and her queued learning


async def backends() -> None:
    async with llmrelay.Client(async_backend="httpx") as client:  # closes the pools on exit
        print((await client.acomplete("openai:gpt-4o-mini", "Hi")).text)


def test_my_summarizer() -> None:
    with ReplayServer() as server:
        server.enqueue(Reply.recording("anthropic/text_basic.sse", chunking="events", delay=0.01))
        client = client_for(server)  # every provider's base URL points at the server; dummy keys
        response = client.complete("anthropic:claude-sonnet-4-5", "Two names for a pet pelican")
        assert response.text == "- Captain\n- Scoop"
        assert server.requests[0].json["model"] == "claude-sonnet-4-5"  # the exact body sent
        client.close()


def test_survives_a_bad_day() -> None:
    with ReplayServer() as server:
        server.enqueue(
            faults.status(429, retry_after=0.1),  # rate limited
            faults.cut("openai_chat/text_usage_chunk.sse", after=4),  # cut mid-answer
            faults.ok("anthropic/text_basic.sse"),  # the fallback answers
        )
        client = client_for(server, retry=llmrelay.Retry(1, initial_delay=0.01))
        response = client.complete(["openai:gpt-4o", "anthropic:claude-sonnet-4-5"], "Hi")
        assert response.resumed and response.provider == "anthropic"
        assert len(server.requests) == 3  # the 429, its retry (cut), the fallback


def default_provider() -> None:
    client = llmrelay.Client(default_provider="auto")
    client.complete("claude-sonnet-4-5", "Hi")  # anthropic:claude-sonnet-4-5
    client.complete(["gpt-4o", "gemini-2.5-flash"], "Hi")  # a fallback list of bare ids


if __name__ == "__main__":
    asyncio.run(async_main())


def cloud_providers() -> None:
    # Azure OpenAI: AZURE_OPENAI_ENDPOINT + AZURE_OPENAI_API_KEY
    llmrelay.complete("azure:my-gpt4o-deployment", "Hi")
    token = get_bearer_token_provider(DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default")
    client = llmrelay.Client(api_keys={"azure": AzureAuth(token_provider=token, api_version="2024-10-21",
                                                          deployments={"my-gpt4o-deployment": "gpt-4o"})})

    # AWS Bedrock
    llmrelay.complete("bedrock:us.anthropic.claude-sonnet-4-20250514-v1:0", "Hi", thinking_budget=2048)
    client = llmrelay.Client(api_keys={"bedrock": AWSAuth(profile="prod", region="eu-west-1")})

    # Vertex AI
    llmrelay.complete("vertex:gemini-2.5-flash", "Hi")
    llmrelay.complete("vertex:claude-sonnet-4-5@20250929", "Hi")
    client = llmrelay.Client(api_keys={"vertex": GoogleAuth(project="my-proj", location="europe-west4")})
    client.close()

    # fallback across clouds
    llmrelay.complete(["bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic:claude-sonnet-4-5",
                       "vertex:claude-sonnet-4-5@20250929"], "Hi")
