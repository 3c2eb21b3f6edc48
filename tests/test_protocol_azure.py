"""Azure OpenAI: every recorded Azure stream through the real HTTP path, checked against the openai
SDK's `AzureOpenAI` client reading the same bytes from the same server; the URL forms (deployments +
api-version, v1, Responses), the auth headers (api-key, Entra ID token, token provider, azure-identity
credential with expiry), the stream quirks (first chunk without model or choices, filter results,
content-filter finish), prices for deployment names, and fallback from Azure to OpenAI.
"""

from __future__ import annotations

import json
import time

import pytest

from helpers import collect, run, texts

import llmrelay
from llmrelay import FallbackEvent, MissingAPIKeyError
from llmrelay.cloud import AzureAuth
from llmrelay.errors import MissingCredentialsError
from llmrelay.testing import Reply, client_for, faults, request_for, wire_recordings

openai = pytest.importorskip("openai")

RECORDINGS = [n for n in wire_recordings() if n.startswith("azure/")]
VERSION = "2024-12-01-preview"


def sdk_view(server, name: str) -> tuple[dict, str]:
    """What `openai.AzureOpenAI` assembles from the recording (and the path it requested)."""
    server.enqueue(Reply.recording(name))
    sdk = openai.AzureOpenAI(api_key="k", api_version=VERSION, azure_endpoint=server.url, max_retries=0)
    text, tools, finish, usage, models = [], {}, None, None, []
    with sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True) as s:
        for chunk in s:
            models.append(chunk.model)
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    text.append(c.delta.content)
                for tc in c.delta.tool_calls or []:
                    t = tools.setdefault(tc.index, {"id": tc.id, "name": tc.function.name, "args": ""})
                    t["args"] += tc.function.arguments or ""
                if c.finish_reason:
                    finish = c.finish_reason
    sdk.close()
    path = server.requests[-1].path
    return {
        "text": "".join(text), "finish": finish, "model": next(m for m in models if m),
        "tools": [(t["id"], t["name"], json.loads(t["args"])) for t in tools.values()],
        "usage": (usage.prompt_tokens, usage.completion_tokens),
    }, path


@pytest.mark.parametrize("chunking", ["events", "random"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", RECORDINGS)
async def test_recordings_equal_the_openai_sdks_azure_client(server, name, mode, chunking):
    expected, sdk_path = sdk_view(server, name)
    c = llmrelay.Client(base_urls={"azure": server.url}, api_keys={"azure": "k"},
                        env={"OPENAI_API_VERSION": VERSION}, retry=0)
    server.enqueue(Reply.recording(name, chunking=chunking, max_piece=31))
    _, r = await collect(c, mode, "azure:gpt-4o-mini", "hi")
    await c.aclose()
    assert server.requests[-1].path == sdk_path == f"/openai/deployments/gpt-4o-mini/chat/completions?api-version={VERSION}"
    assert r.text == expected["text"]
    assert r.raw_finish_reason == expected["finish"]
    assert [(t.id, t.name, t.arguments) for t in r.tool_calls] == expected["tools"]
    assert (r.usage.input_tokens, r.usage.output_tokens) == expected["usage"]
    # the first chunk names no model (`model: ""`): the served model is the one later chunks name
    assert r.model == expected["model"] == "gpt-4o-mini-2024-07-18"
    (prompt_filter,) = [e for e in r.provider_events if e.kind == "prompt_filter_results"]
    assert prompt_filter.data[0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}


def test_tool_call_request_matches_the_recorded_one(server):
    recorded = request_for("azure/chat_tool_call_prompt_filter.sse")
    c = llmrelay.Client(base_urls={"azure": server.url}, api_keys={"azure": "k"}, env={"OPENAI_API_VERSION": VERSION})
    tool = recorded["tools"][0]["function"]
    server.enqueue(Reply.recording("azure/chat_tool_call_prompt_filter.sse"))
    r = c.complete("azure:gpt-4o-mini", recorded["messages"], tools=[llmrelay.Tool(tool["name"], tool["description"], tool["parameters"])],
                   tool_choice="auto", run_tools=False)
    body = server.requests[0].json
    assert body == {"model": "gpt-4o-mini", **recorded}
    assert server.requests[0].headers["api-key"] == "k"
    assert "authorization" not in server.requests[0].headers
    assert r.tool_calls[0].arguments == {"city": "San Francisco"}
    c.close()


def test_url_forms(server):
    env = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/", "AZURE_OPENAI_API_KEY": "key1"}
    _, req, _, _ = llmrelay.Client(env={**env, "OPENAI_API_VERSION": "2024-10-21"}).prepare("azure:prod-4o", "hi")
    assert req.url == "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == "key1" and req.json["model"] == "prod-4o"
    _, req, _, _ = llmrelay.Client(env=env).prepare("azure:prod-4o", "hi")  # no version: the v1 API
    assert req.url == "https://res.openai.azure.com/openai/v1/chat/completions"
    _, req, _, _ = llmrelay.Client(env={**env, "OPENAI_API_VERSION": "2025-04-01-preview"}).prepare("azure-responses:o4", "hi")
    assert req.url == "https://res.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
    assert req.json["model"] == "o4"
    _, req, _, _ = llmrelay.Client(env=env).prepare("azure-responses:o4", "hi")
    assert req.url == "https://res.openai.azure.com/openai/v1/responses"
    # a Foundry endpoint given with its API root, the version from AzureAuth
    _, req, _, _ = llmrelay.Client(env={}).prepare(
        "azure:gpt-4o", "hi", api_key=AzureAuth(api_key="k", endpoint="https://x.services.ai.azure.com/openai/v1"))
    assert req.url == "https://x.services.ai.azure.com/openai/v1/chat/completions"


def test_entra_id_token_provider_is_asked_before_every_request(server):
    issued = []

    def provider() -> str:
        issued.append(f"token-{len(issued)}")
        return issued[-1]

    c = llmrelay.Client(base_urls={"azure": server.url}, api_keys={"azure": provider}, env={}, retry=0)
    server.enqueue(Reply.recording("azure/chat_text_prompt_filter_usage.sse"),
                   Reply.recording("azure/chat_text_prompt_filter_usage.sse"))
    c.complete("azure:gpt-4o-mini", "hi")
    c.complete("azure:gpt-4o-mini", "hi")
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer token-0", "Bearer token-1"]
    assert all("api-key" not in r.headers for r in server.requests)
    assert server.requests[0].path == "/openai/v1/chat/completions"
    c.close()


class _Credential:
    """An azure-identity-style credential (`get_token(scope) -> AccessToken`) whose tokens live `ttl` seconds."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.scopes: list[str] = []

    def get_token(self, *scopes, **kw):
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        return AccessToken(f"entra-{len(self.scopes)}", int(time.time() + self.ttl))


@pytest.mark.parametrize("ttl,tokens", [(3600, ["entra-1", "entra-1"]), (60, ["entra-1", "entra-2"])])
def test_credential_tokens_are_cached_until_they_near_expiry(server, ttl, tokens):
    pytest.importorskip("azure.core")
    cred = _Credential(ttl)
    c = llmrelay.Client(base_urls={"azure": server.url}, api_keys={"azure": AzureAuth(credential=cred)}, env={}, retry=0)
    server.enqueue(Reply.recording("azure/chat_text_prompt_filter_usage.sse"),
                   Reply.recording("azure/chat_text_prompt_filter_usage.sse"))
    c.complete("azure:gpt-4o-mini", "hi")
    c.complete("azure:gpt-4o-mini", "hi")
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {t}" for t in tokens]
    assert set(cred.scopes) == {"https://cognitiveservices.azure.com/.default"}
    c.close()


def test_env_token_and_missing_credentials():
    env = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_AD_TOKEN": "ad"}
    _, req, _, _ = llmrelay.Client(env=env).prepare("azure:d", "hi")
    assert req.headers["authorization"] == "Bearer ad"
    with pytest.raises(MissingCredentialsError) as info:
        llmrelay.Client(env={"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com"}).prepare("azure:d", "hi")
    assert isinstance(info.value, MissingAPIKeyError)
    for needle in ("api_key=", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "token provider", "DefaultAzureCredential"):
        assert needle in str(info.value)
    with pytest.raises(MissingCredentialsError, match="AZURE_OPENAI_ENDPOINT"):
        llmrelay.Client(env={"AZURE_OPENAI_API_KEY": "k"}).prepare("azure:d", "hi")
    with pytest.raises(llmrelay.InvalidRequestError):
        llmrelay.Client(env={}).prepare("azure:d", "hi", api_key=42)


def test_default_azure_credential_failure_is_typed(monkeypatch):
    """azure-identity installed but no credential anywhere: a typed error before anything is sent."""
    pytest.importorskip("azure.identity")
    for var in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                "AZURE_CLIENT_SECRET", "AZURE_USERNAME", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("PATH", "/nonexistent")  # no az / azd / pwsh CLI to ask
    monkeypatch.setenv("AZURE_CONFIG_DIR", "/nonexistent")
    from llmrelay.cloud import azure

    monkeypatch.setattr(azure, "_DEFAULT", [])
    from azure.identity import DefaultAzureCredential

    monkeypatch.setattr(azure, "_default_credential", lambda p: azure._CredentialTokens(DefaultAzureCredential(
        exclude_managed_identity_credential=True, exclude_workload_identity_credential=True)))
    with pytest.raises(MissingCredentialsError, match="DefaultAzureCredential"):
        llmrelay.Client().prepare("azure:d", "hi")


def test_content_filter_finish_keeps_the_categories(server):
    """Synthetic (no recording has one): an Azure chunk stream blocked by the output filter."""
    chunks = [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"violence": {"filtered": False, "severity": "safe"}}}]},
        {"choices": [{"content_filter_results": {}, "delta": {"content": "", "role": "assistant"}, "finish_reason": None, "index": 0}],
         "id": "c1", "model": "gpt-4o-2024-08-06", "object": "chat.completion.chunk"},
        {"choices": [{"content_filter_results": {"violence": {"filtered": False, "severity": "safe"}}, "delta": {"content": "Step one"},
                      "finish_reason": None, "index": 0}], "id": "c1", "model": "gpt-4o-2024-08-06", "object": "chat.completion.chunk"},
        {"choices": [{"content_filter_results": {"violence": {"filtered": True, "severity": "high"}}, "delta": {},
                      "finish_reason": "content_filter", "index": 0}], "id": "c1", "model": "gpt-4o-2024-08-06", "object": "chat.completion.chunk"},
    ]
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    server.enqueue(Reply(body, chunking="events"))
    c = client_for(server, retry=0)
    r = c.complete("azure:gpt-4o", "hi")
    assert (r.text, r.finish_reason, r.model) == ("Step one", "content_filter", "gpt-4o-2024-08-06")
    (blocked,) = [e.data for e in r.provider_events if e.kind == "content_filter_results"]
    assert blocked == {"violence": {"filtered": True, "severity": "high"}}
    c.close()


def test_deployment_names_are_priced_as_their_model(server):
    pytest.importorskip("genai_prices")
    from llmrelay.cost import cost_of
    from llmrelay.usage import Usage

    usage = Usage(input_tokens=1000, output_tokens=100)
    assert cost_of("azure", None, usage, requested_model="prod-chat-eu").total is None
    llmrelay.Client(env={"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com"}).prepare(
        "azure:prod-chat-eu", "hi", api_key=AzureAuth(api_key="k", deployments={"prod-chat-eu": "gpt-4o-mini"}))
    mapped = cost_of("azure", None, usage, requested_model="prod-chat-eu")
    assert mapped.total == cost_of("azure", "gpt-4o-mini", usage).total != None  # noqa: E711
    # a stream that names its model is priced by it
    server.enqueue(Reply.recording("azure/chat_long_text_usage.sse"))
    c = client_for(server)
    r = c.complete("azure:whatever-deployment", "hi")
    assert r.cost.total == pytest.approx(cost_of("azure", "gpt-4o-mini", Usage(input_tokens=168, output_tokens=158)).total)
    c.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_fallback_from_azure_to_openai_after_text(server, mode):
    """Azure is cut after showing text; OpenAI continues (a user turn, OpenAI has no prefill): no repeated text."""
    rec = "azure/chat_long_text_usage.sse"
    server.enqueue(faults.cut(rec, after=8), faults.ok("openai_chat/text_usage_chunk.sse"))
    c = client_for(server, retry=0)
    events, err, r = await run(c, mode, ["azure:gpt-4o-mini", "openai:gpt-4o"], "hi")
    await c.aclose()
    assert err is None
    (fb,) = [e for e in events if type(e) is FallbackEvent]
    assert (fb.from_model, fb.to_model, fb.mode) == ("azure:gpt-4o-mini", "openai:gpt-4o", "user_turn")
    partial = r.attempts[0].response.text
    assert partial and texts(events) == r.text
    assert r.text.startswith(partial) and r.text.count(partial) == 1
    assert server.requests[1].path == "/v1/chat/completions"
    assert server.requests[1].json["messages"][1] == {"role": "assistant", "content": partial}


@pytest.mark.parametrize("version,path", [(None, "/openai/v1/responses"),
                                          ("2025-04-01-preview", "/openai/responses?api-version=2025-04-01-preview")])
def test_responses_api_on_azure(server, version, path):
    """No Azure Responses stream was recorded: OpenAI's own Responses recording stands in for the body
    (the same protocol); the URL forms and the auth are Azure's."""
    env = {"OPENAI_API_VERSION": version} if version else {}
    c = llmrelay.Client(base_urls={"azure-responses": server.url}, api_keys={"azure-responses": "k"}, env=env, retry=0)
    server.enqueue(Reply.recording("openai_responses/function_call.sse"))
    r = c.complete("azure-responses:my-o4-mini", "hi")
    c.close()
    assert server.requests[0].path == path
    assert server.requests[0].json["model"] == "my-o4-mini" and server.requests[0].headers["api-key"] == "k"
    assert r.tool_calls and r.finish_reason == "tool_calls"
