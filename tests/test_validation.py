"""Bad input fails at the edge, typed, before anything is sent (issue 12, item 6).

Each case is an `InvalidRequestError` (or subclass) whose message names the field, raised by
`stream`/`astream` (httpx and aiohttp) before any byte reaches the server: the server counts
requests and must see none.
"""

from __future__ import annotations

import asyncio
import math

import pytest

import llmrelay
from llmrelay import InvalidRequestError, Limits, Retry, Timeouts
from llmrelay.testing import ReplayServer


def untyped(a, b):
    return a


CASES = {  # name: (kwargs for the call, field the message must name)
    "extra_body not JSON": (dict(extra_body={"x": {1, 2}}), "extra_body"),
    "extra_body NaN": (dict(extra_body={"x": [math.nan]}), "extra_body"),
    "extra_body inf": (dict(extra_body={"x": math.inf}), "extra_body"),
    "header value not a string": (dict(extra_headers={"x-a": 1}), "extra_headers"),
    "CRLF in a header value": (dict(extra_headers={"x-a": "a\r\nx-b: c"}), "extra_headers"),
    "LF in a header name": (dict(extra_headers={"x-a\nb": "c"}), "extra_headers"),
    "CRLF in api_key": (dict(api_key="sk-abc\r\n"), "api_key"),
    "timeout=-1": (dict(timeout=-1), "timeout"),
    "timeout NaN": (dict(timeout=Timeouts(idle=math.nan)), "timeout.idle"),
    "timeout not a number": (dict(timeout="soon"), "timeout"),
    "retry=-1": (dict(retry=-1), "max_retries"),
    "retry not a number": (dict(retry="3"), "retry"),
    "n=0": (dict(n=0), "n must"),
    "temperature NaN": (dict(temperature=math.nan), "temperature"),
    "top_p inf": (dict(top_p=math.inf), "top_p"),
    "max_tokens=0": (dict(max_tokens=0), "max_tokens"),
    "tool schema type": (dict(tools=[{"name": "t", "description": "d", "parameters": {"type": 123, "properties": "nope"}}]),
                         "parameters"),
    "tool schema properties": (dict(tools=[{"name": "t", "parameters": {"type": "object", "properties": "nope"}}]),
                               "properties"),
    "tool schema required": (dict(tools=[{"name": "t", "parameters": {"type": "object", "required": "a"}}]), "required"),
    "content None": (dict(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    "unknown role": (dict(messages=[{"role": "robot", "content": "hi"}]), "messages[0]"),
    "empty model list": (dict(model=[]), "model"),
}


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


@pytest.mark.parametrize("mode", ["sync", "httpx", "aiohttp"])
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_typed_and_never_sent(server, mode, case):
    kw, field = CASES[case]
    kw = dict(kw)
    model = kw.pop("model", "openai:gpt-4o")
    messages = kw.pop("messages", "hi")
    client = llmrelay.Client(base_urls={"openai": server.url + "/v1"}, api_keys={"openai": "k"},
                             async_backend="aiohttp" if mode == "aiohttp" else "httpx")
    before = len(server.requests)

    async def call() -> None:
        if mode == "sync":
            client.complete(model, messages, **kw)
        else:
            await client.acomplete(model, messages, **kw)
            await client.aclose()

    with pytest.raises(InvalidRequestError) as info:
        asyncio.run(call())
    assert field in str(info.value)
    assert len(server.requests) == before  # nothing reached the wire


def test_client_options_are_checked():
    for make, field in [(lambda: llmrelay.Client(timeout=-1), "timeout"),
                        (lambda: llmrelay.Client(retry=-2), "max_retries"),
                        (lambda: llmrelay.Client(limits=Limits(max_line=0)), "limits.max_line"),
                        (lambda: llmrelay.Client(limits={"max_line": 1}), "limits"),
                        (lambda: Retry(1, initial_delay=math.nan), "initial_delay")]:
        with pytest.raises(InvalidRequestError, match=field.replace(".", r"\.")):
            make()


def test_a_function_without_type_hints_takes_any_json():
    """Documented: a parameter without a type hint accepts any JSON value (schema `{}`)."""
    t = llmrelay.tool(untyped)
    assert t.parameters["properties"] == {"a": {}, "b": {}} and t.parameters["required"] == ["a", "b"]
