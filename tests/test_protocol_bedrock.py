"""AWS Bedrock (Converse and InvokeModel streams): every recorded body through the real HTTP path,
the exact requests (SigV4 checked against botocore's signer), auth resolution and in-band errors.

Differential: for each Converse recording, the expected response is assembled here from
botocore's own event-stream parser (independently of llmrelay's decoder) and compared
with what llmrelay assembled from the same bytes served over HTTP.
"""

from __future__ import annotations

import datetime
import json

import pytest

from helpers import collect

import llmrelay
from llmrelay import MissingAPIKeyError, ProviderStreamError, RateLimitError, Retry, RetryEvent
from llmrelay.cloud import AWSAuth
from llmrelay.errors import MissingCredentialsError
from llmrelay.testing import Reply, client_for, faults, read_recording, request_for, wire_recordings

botocore = pytest.importorskip("botocore")
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials, RefreshableCredentials  # noqa: E402
from botocore.eventstream import EventStreamBuffer  # noqa: E402

CONVERSE = [n for n in wire_recordings() if n.startswith("bedrock/converse_")]
INVOKE = [n for n in wire_recordings() if n.startswith("bedrock/invoke_")]
CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
ENV = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG"}
FIXED = datetime.datetime(2026, 1, 2, 3, 4, 5)


def botocore_view(name: str) -> dict:
    """What botocore's parser finds in a Converse body, assembled here (not by llmrelay)."""
    buf = EventStreamBuffer()
    buf.add_data(read_recording(name))
    text, reasoning, signature, tools, stop, usage = [], [], None, {}, None, {}
    for m in buf:
        kind, body = m.headers[":event-type"], json.loads(m.payload)
        if kind == "contentBlockStart" and "toolUse" in body["start"]:
            t = body["start"]["toolUse"]
            if t.get("type") != "server_tool_use":
                tools[body["contentBlockIndex"]] = [t["toolUseId"], t["name"], ""]
        elif kind == "contentBlockDelta":
            d = body["delta"]
            text.append(d.get("text", ""))
            r = d.get("reasoningContent", {})
            reasoning.append(r.get("text", ""))
            signature = r.get("signature", signature)
            if "toolUse" in d and body["contentBlockIndex"] in tools:
                tools[body["contentBlockIndex"]][2] += d["toolUse"]["input"]
        elif kind == "messageStop":
            stop = body["stopReason"]
        elif kind == "metadata":
            usage = body["usage"]
    return {
        "text": "".join(text), "reasoning": "".join(reasoning), "signature": signature,
        "tools": [(i, n, json.loads(a or "{}")) for i, n, a in tools.values()], "stop": stop,
        "usage": (usage.get("inputTokens"), usage.get("outputTokens")),
    }


@pytest.fixture
def client(server):
    c = client_for(server, retry=0)
    yield c
    c.close()


@pytest.mark.parametrize("chunking", ["whole", "events", "random"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", CONVERSE)
async def test_converse_recordings_equal_botocore_view(server, client, name, mode, chunking):
    expected = botocore_view(name)
    server.enqueue(Reply.recording(name, chunking=chunking, max_piece=23))
    _, r = await collect(client, mode, "bedrock:" + CLAUDE, "hi")
    assert r.text == expected["text"]
    assert r.reasoning == expected["reasoning"]
    assert [(t.id, t.name, t.arguments) for t in r.tool_calls] == expected["tools"]
    assert r.raw_finish_reason == expected["stop"]
    assert (r.usage.input_tokens, r.usage.output_tokens) == expected["usage"]
    if expected["signature"]:
        parts = r.choices[0].parts
        assert [p.signature for p in parts if p.type == "reasoning" and p.signature] == [expected["signature"]]
    assert r.status == ("truncated" if expected["stop"] == "max_tokens" else "ok")


def test_recordings_hand_read_values(server, client):
    server.enqueue(Reply.recording("bedrock/converse_stream_tool_use_claude.eventstream"),
                   Reply.recording("bedrock/converse_stream_code_interpreter_nova2.eventstream"),
                   Reply.recording("bedrock/converse_stream_reasoning_empty_text_gpt_oss.eventstream"))
    r = client.complete("bedrock:" + CLAUDE, "hi", tools=[weather], run_tools=False)
    assert r.text == "I'll check the current weather in San Francisco, CA for you."
    assert [(t.name, t.arguments) for t in r.tool_calls] == [("get_weather", {"location": "San Francisco, CA"})]
    assert (r.finish_reason, r.usage.input_tokens, r.usage.output_tokens) == ("tool_calls", 446, 76)
    assert {"metrics": {"latencyMs": 1859}} in [e.data for e in r.provider_events if e.kind == "metadata"]
    r = client.complete("bedrock:us.amazon.nova-2-lite-v1:0", "hi")
    # the server-run code interpreter is a provider event, never a tool call for the caller
    assert [t.name for t in r.tool_calls] == ["final_result"]
    (server_tool,) = [e.data for e in r.provider_events if e.kind == "server_tool_use"]
    assert (server_tool["name"], server_tool["input"]) == ("nova_code_interpreter", '{"snippet":"1234 * 5678"}')
    r = client.complete("bedrock:openai.gpt-oss-120b-1:0", "hi")
    assert r.text == "Hello! How can I help you today?" and r.reasoning.startswith('The user just says "')


def weather(location: str) -> str:
    """Get the weather for a location."""
    return "sunny"


@pytest.mark.parametrize("name", INVOKE)
async def test_invoke_recordings(server, client, name):
    server.enqueue(Reply.recording(name, chunking="random", max_piece=17))
    _, r = await collect(client, "async", "bedrock-invoke:anthropic.claude-3-sonnet-20240229-v1:0", "hi")
    assert r.status in ("ok", "truncated")
    buf = EventStreamBuffer()
    buf.add_data(read_recording(name))
    chunks = [json.loads(__import__("base64").b64decode(json.loads(m.payload)["bytes"])) for m in buf]
    metrics = chunks[-1].get("amazon-bedrock-invocationMetrics") or {}
    assert r.usage.output_tokens == metrics.get("outputTokenCount")
    texts = {"invoke_stream_titan_text": "outputText", "invoke_stream_llama3_generation": "generation"}
    key = texts.get(name.split("/")[1].rsplit(".", 1)[0])
    if key:
        assert r.text == "".join(c.get(key, "") for c in chunks)


def test_invoke_anthropic_and_cohere_details(server, client):
    server.enqueue(Reply.recording("bedrock/invoke_stream_anthropic_text.eventstream"),
                   Reply.recording("bedrock/invoke_stream_cohere_command_two_generations.eventstream"))
    r = client.complete("bedrock-invoke:anthropic.claude-3-sonnet-20240229-v1:0", "hi", max_tokens=200, temperature=0.5)
    assert r.model == "claude-3-sonnet-20240229" and r.raw_finish_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (16, 21)
    req = server.requests[0]
    assert req.path == "/model/anthropic.claude-3-sonnet-20240229-v1%3A0/invoke-with-response-stream"
    assert req.json == {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 200,
                        "temperature": 0.5, "anthropic_version": "bedrock-2023-05-31"}
    r = client.complete("bedrock-invoke:cohere.command-light-text-v14", "hi")
    assert len(r.choices) == 2 and all(c.raw_finish_reason == "MAX_TOKENS" for c in r.choices)


# -- requests -----------------------------------------------------------------------------------


def test_converse_request_body_url_and_headers(server):
    c = llmrelay.Client(base_urls={"bedrock": server.url}, env=ENV, retry=0)
    server.enqueue(Reply.recording("bedrock/converse_stream_tool_use_claude.eventstream"))
    c.complete("bedrock:" + CLAUDE, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
               tools=[weather], tool_choice="required", run_tools=False, max_tokens=300, temperature=0.2,
               top_p=0.9, stop=["END"])
    req = server.requests[0]
    assert req.method == "POST"
    assert req.path == "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream"
    assert req.json == {
        "messages": [{"role": "user", "content": [{"text": "Weather?"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "description": "Get the weather for a location.",
                                               "inputSchema": {"json": weather_schema()}}}],
                       "toolChoice": {"any": {}}},
    }
    assert req.headers["accept"] == "application/vnd.amazon.eventstream"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/bedrock/aws4_request" in req.headers["authorization"]
    c.close()


def weather_schema() -> dict:
    from llmrelay.tools import as_tools

    return as_tools([weather])["weather"].parameters


def test_thinking_and_a_continued_conversation(server):
    c = llmrelay.Client(base_urls={"bedrock": server.url}, env=ENV, retry=0)
    server.enqueue(Reply.recording("bedrock/converse_stream_thinking_claude.eventstream"),
                   Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    r = c.complete("bedrock:" + CLAUDE, "Hello", thinking_budget=1024)
    assert server.requests[0].json["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert server.requests[0].json["inferenceConfig"] == {"maxTokens": 1024 + 4096}
    c.complete("bedrock:" + CLAUDE, [*r.messages, {"role": "user", "content": "And?"}])
    sent = server.requests[1].json["messages"]
    reasoning = r.choices[0].parts[0]
    assert sent[1] == {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": reasoning.text, "signature": reasoning.signature}}},
        {"text": r.text}]}
    with pytest.raises(llmrelay.UnsupportedParameterError):
        c.prepare("bedrock:meta.llama3-2-1b-instruct-v1:0", "hi", thinking_budget=2000)
    with pytest.raises(llmrelay.UnsupportedParameterError):
        c.prepare("bedrock:" + CLAUDE, "hi", seed=3)
    c.close()


def test_sigv4_matches_botocores_signer(server, monkeypatch):
    """The signature on the wire is botocore's for a fixed clock and key, over the bytes the server got."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FIXED)
    c = llmrelay.Client(base_urls={"bedrock": server.url}, env={**ENV, "AWS_SESSION_TOKEN": "tok"}, retry=0)
    server.enqueue(Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    c.complete("bedrock:us.amazon.nova-micro-v1:0", "What is the capital of France?")
    got = server.requests[0]
    # 1. independently: botocore signs the request we expect to send
    expected = AWSRequest(method="POST", url=server.url + "/model/us.amazon.nova-micro-v1%3A0/converse-stream",
                          data=json.dumps({"messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]},
                                          separators=(",", ":")).encode(),
                          headers={"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"})
    SigV4Auth(Credentials("AKIDEXAMPLE", ENV["AWS_SECRET_ACCESS_KEY"], "tok"), "bedrock", "us-east-1").add_auth(expected)
    assert got.headers["authorization"] == expected.headers["Authorization"]
    assert got.headers["x-amz-date"] == "20260102T030405Z"
    assert got.headers["x-amz-security-token"] == "tok"
    # 2. re-signed from what reached the server (its path, body and the signed headers' values)
    signed = got.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    again = AWSRequest(method=got.method, url=server.url + got.path, data=got.body,
                       headers={h: got.headers[h] for h in signed if h not in ("x-amz-date", "x-amz-security-token", "host")})
    SigV4Auth(Credentials("AKIDEXAMPLE", ENV["AWS_SECRET_ACCESS_KEY"], "tok"), "bedrock", "us-east-1").add_auth(again)
    assert again.headers["Authorization"] == got.headers["authorization"]
    c.close()


def test_bearer_api_key_and_region_endpoint(server):
    c = llmrelay.Client(base_urls={"bedrock": server.url}, env={"AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-x"}, retry=0)
    server.enqueue(Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    c.complete("bedrock:us.amazon.nova-micro-v1:0", "hi")
    assert server.requests[0].headers["authorization"] == "Bearer bedrock-api-key-x"
    assert "x-amz-date" not in server.requests[0].headers
    call, request, _, _ = llmrelay.Client(env={"AWS_DEFAULT_REGION": "eu-west-3", "AWS_BEARER_TOKEN_BEDROCK": "k"}).prepare(
        "bedrock:eu.amazon.nova-micro-v1:0", "hi")
    assert request.url == "https://bedrock-runtime.eu-west-3.amazonaws.com/model/eu.amazon.nova-micro-v1%3A0/converse-stream"
    call, request, _, _ = llmrelay.Client(env={}).prepare(
        "bedrock:m", "hi", api_key=AWSAuth(region="ap-south-1", access_key_id="A", secret_access_key="S"))
    assert request.url.startswith("https://bedrock-runtime.ap-south-1.amazonaws.com/")
    assert "Credential=A/" in request.headers["authorization"]
    c.close()


def test_missing_credentials_name_every_way(monkeypatch):
    with pytest.raises(MissingCredentialsError) as info:
        llmrelay.Client(env={"AWS_REGION": "us-east-1"}).prepare("bedrock:" + CLAUDE, "hi")
    msg = str(info.value)
    assert isinstance(info.value, MissingAPIKeyError)
    for needle in ("api_key=", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                   "sso", "AWSAuth"):
        assert needle in msg
    with pytest.raises(MissingCredentialsError, match="AWS_REGION"):
        llmrelay.Client(env={"AWS_BEARER_TOKEN_BEDROCK": "k"}).prepare("bedrock:" + CLAUDE, "hi")
    # the process environment: botocore's chain finds nothing either (no files, no instance role)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from llmrelay.cloud import aws

    monkeypatch.setattr(aws, "_SESSIONS", {})
    with pytest.raises(MissingCredentialsError):
        llmrelay.Client().prepare("bedrock:" + CLAUDE, "hi")


def test_profile_from_shared_files_through_botocore(tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text("[dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s3cr3t\n")
    (tmp_path / "config").write_text("[profile dev]\nregion = sa-east-1\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK",
                "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "dev")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from llmrelay.cloud import aws

    monkeypatch.setattr(aws, "_SESSIONS", {})
    _, request, _, _ = llmrelay.Client().prepare("bedrock:" + CLAUDE, "hi")
    assert request.url.startswith("https://bedrock-runtime.sa-east-1.amazonaws.com/")
    assert "Credential=AKIDPROFILE/" in request.headers["authorization"]
    assert "/sa-east-1/bedrock/aws4_request" in request.headers["authorization"]


def test_expiring_credentials_are_refreshed_before_the_next_request(server):
    """botocore's refreshable credentials (as from SSO or an assumed role) with a short expiry:
    the second request goes out signed with the refreshed key."""
    issued = []

    def refresh():
        issued.append(f"AKID{len(issued)}")
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)  # inside botocore's window
        return {"access_key": issued[-1], "secret_key": "s", "token": "t", "expiry_time": expiry.isoformat()}

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    c = llmrelay.Client(base_urls={"bedrock": server.url}, api_keys={"bedrock": AWSAuth(region="us-east-1", credentials=creds)},
                        env={}, retry=0)
    server.enqueue(Reply.recording("bedrock/converse_stream_text_nova.eventstream"),
                   Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    c.complete("bedrock:us.amazon.nova-micro-v1:0", "hi")
    c.complete("bedrock:us.amazon.nova-micro-v1:0", "hi")
    keys = [r.headers["authorization"].split("Credential=")[1].split("/")[0] for r in server.requests]
    assert len(set(keys)) == 2 and all(k.startswith("AKID") for k in keys)
    assert len(issued) >= 3
    c.close()


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_http_400_body(server, client, mode):
    server.enqueue(Reply.recording("bedrock/converse_stream_error_400_invalid_model.json"))
    with pytest.raises(llmrelay.BadRequestError, match="The provided model identifier is invalid"):
        await collect(client, mode, "bedrock:does-not-exist", "hi")


@pytest.mark.parametrize("kind,status,error", [
    ("throttlingException", 429, ProviderStreamError),
    ("modelStreamErrorException", 424, ProviderStreamError),
    ("internalServerException", 500, ProviderStreamError),
    ("validationException", 400, ProviderStreamError),
])
def test_in_band_exceptions_are_typed(server, kind, status, error):
    """Synthetic: an exception message after two events of a real recording (none was recorded)."""
    server.enqueue(faults.error_event("bedrock", "bedrock/converse_stream_text_nova.eventstream", after=3,
                                      code=kind, message="Too many tokens, please wait", status=status))
    c = client_for(server, retry=0)
    with pytest.raises(error) as info:
        c.complete("bedrock:us.amazon.nova-micro-v1:0", "hi")
    assert (info.value.code, info.value.status_code) == (kind, status)
    assert "Too many tokens" in str(info.value)
    assert info.value.partial.text == "The capital of France is Paris."
    c.close()


def test_throttling_before_content_is_retried(server):
    server.enqueue(faults.error_event("bedrock", "bedrock/converse_stream_text_nova.eventstream", after=1,
                                      code="throttlingException", status=429),
                   Reply.recording("bedrock/converse_stream_text_nova.eventstream"))
    c = client_for(server, retry=Retry(2, initial_delay=0.001))
    events = list(c.stream("bedrock:us.amazon.nova-micro-v1:0", "hi"))
    (retry,) = [e for e in events if type(e) is RetryEvent]
    assert retry.error.code == "throttlingException"
    assert len(server.requests) == 2
    c.close()


def test_http_429_is_a_rate_limit_error(server):
    server.enqueue(faults.status(429, protocol="bedrock", headers={"x-amzn-errortype": "ThrottlingException"}))
    c = client_for(server, retry=0)
    with pytest.raises(RateLimitError):
        c.complete("bedrock:us.amazon.nova-micro-v1:0", "hi")
    c.close()


def test_cost_from_the_price_database_for_bedrock_ids(server, client):
    pytest.importorskip("genai_prices")
    server.enqueue(Reply.recording("bedrock/converse_stream_thinking_claude.eventstream"))
    r = client.complete("bedrock:" + CLAUDE, "hi")
    assert r.cost.total is not None and r.cost.source == "prices"
    assert "aws:" in r.cost.priced_as
    # 36 in, 73 out at Claude Sonnet 4's $3 / $15 per million
    assert r.cost.total == pytest.approx(36 * 3e-6 + 73 * 15e-6)


def test_recorded_request_bodies_are_what_we_encode_for_simple_cases():
    """The recordings' own request bodies (from the SDKs that made them) for a text turn."""
    for name in ("bedrock/converse_stream_thinking_claude.eventstream",):
        recorded = request_for(name)
        _, request, _, _ = llmrelay.Client(env=ENV).prepare("bedrock:" + CLAUDE, "Hello", thinking_budget=1024)
        assert request.json["messages"] == recorded["messages"]
        assert request.json["additionalModelRequestFields"] == recorded["additionalModelRequestFields"]
