"""Fits where its users come from: the official SDKs' environment variables, the model strings of
LiteLLM, pydantic-ai and any-llm, a default provider for bare model ids, and `await client.astream()`.

Requests go to a real `ReplayServer`; `Client(env={...})` pins the environment.
"""

from __future__ import annotations

import pytest

from llmrelay import PROVIDERS, AsyncStream, Client, MissingAPIKeyError, Provider, UnknownProviderError
from llmrelay.providers import PREFIX_ALIASES
from llmrelay.testing import BASE_PATHS, Reply

HI = [{"role": "user", "content": "hi"}]
ALL_KEYS = {name: "k" for name in PROVIDERS}
OPENAI_TEXT = "openai_chat/text_usage_obfuscation_gpt35.sse"  # "1, 2, 3, 4, 5"
ANTHROPIC_TEXT = "anthropic/text_basic.sse"  # "- Captain\n- Scoop"


def on_server(server, env=None, **kw) -> Client:
    """A client whose providers all point at the replay server, with only the given environment."""
    base_urls = {name: server.url + BASE_PATHS.get(p.protocol, "") for name, p in PROVIDERS.items()}
    return Client(base_urls=base_urls, env=env or {}, retry=0, **kw)


def resolved(model: str, **kw) -> tuple[str, str]:
    call = Client(api_keys=ALL_KEYS, env=kw.pop("env", {}), **kw).prepare(model, HI)[0]
    return call.provider.name, call.model


# ---------------------------------------------------------------------------
# Environment variables as the official SDKs read them
# ---------------------------------------------------------------------------


def test_openai_org_and_project_env_vars_are_sent_as_the_sdk_sends_them(server):
    server.enqueue(Reply.recording(OPENAI_TEXT), Reply.recording(OPENAI_TEXT), Reply.recording(OPENAI_TEXT))
    env = {"OPENAI_API_KEY": "sk-1", "OPENAI_ORG_ID": "org-42", "OPENAI_PROJECT_ID": "proj_7"}
    with on_server(server, env) as client:
        assert client.complete("openai:gpt-4o-mini", HI).text == "1, 2, 3, 4, 5"
        client.complete("openai:gpt-4o-mini", HI, extra_headers={"openai-project": "proj_call"})
    with on_server(server, {"OPENAI_API_KEY": "sk-1"}) as client:
        client.complete("openai:gpt-4o-mini", HI)
    first, overridden, unset = (r.headers for r in server.requests)
    assert (first["openai-organization"], first["openai-project"]) == ("org-42", "proj_7")
    assert first["authorization"] == "Bearer sk-1"
    assert overridden["openai-project"] == "proj_call"  # extra_headers win over the environment
    assert "openai-organization" not in unset and "openai-project" not in unset


def test_openai_org_header_also_for_the_responses_api_but_not_for_other_providers():
    env = {"OPENAI_ORG_ID": "org-42"}
    for name, expected in (("openai-responses", "org-42"), ("groq", None), ("anthropic", None)):
        request = Client(api_keys=ALL_KEYS, env=env).prepare(f"{name}:m", HI)[1]
        assert request.headers.get("openai-organization") == expected, name


def test_anthropic_auth_token_is_a_bearer_token_in_place_of_the_key(server):
    server.enqueue(Reply.recording(ANTHROPIC_TEXT), Reply.recording(ANTHROPIC_TEXT))
    with on_server(server, {"ANTHROPIC_AUTH_TOKEN": "tok-1"}) as client:
        assert client.complete("anthropic:claude-sonnet-4-5", HI).text == "- Captain\n- Scoop"
    with on_server(server, {"ANTHROPIC_AUTH_TOKEN": "tok-1", "ANTHROPIC_API_KEY": "sk-ant"}) as client:
        client.complete("anthropic:claude-sonnet-4-5", HI)
    token_only, both = (r.headers for r in server.requests)
    assert token_only["authorization"] == "Bearer tok-1" and "x-api-key" not in token_only
    assert both["authorization"] == "Bearer tok-1" and both["x-api-key"] == "sk-ant"  # the SDK sends both


def test_without_key_or_token_the_error_names_both_variables():
    with pytest.raises(MissingAPIKeyError) as info:
        Client(env={}).prepare("anthropic:claude-sonnet-4-5", HI)
    assert info.value.env_vars == ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
    assert "ANTHROPIC_AUTH_TOKEN" in str(info.value)


def test_google_api_key_wins_over_gemini_api_key_as_in_google_genai(server):
    server.enqueue(Reply.recording("gemini/text_sse.sse"))
    with on_server(server, {"GEMINI_API_KEY": "gem", "GOOGLE_API_KEY": "goog"}) as client:
        client.complete("gemini:gemini-2.5-flash", HI)
    assert server.requests[0].headers["x-goog-api-key"] == "goog"


def test_co_api_url_sets_the_cohere_base_url(server):
    server.enqueue(Reply.recording("cohere/v2_text.sse"))
    client = Client(env={"CO_API_URL": server.url, "CO_BASE_URL": "http://127.0.0.1:9"}, api_keys=ALL_KEYS, retry=0)
    with client:
        assert client.complete("cohere:command-a-03-2025", HI).text
    assert server.requests[0].path == "/v2/chat"


# ---------------------------------------------------------------------------
# Model strings of LiteLLM, pydantic-ai and any-llm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,provider,model_id",
    [
        # LiteLLM
        ("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("ollama_chat/llama3.1:8b", "ollama", "llama3.1:8b"),
        ("ollama/gemma3:1b", "ollama", "gemma3:1b"),
        ("cohere_chat/command-r", "cohere", "command-r"),
        ("gemini/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct", "fireworks",
         "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        ("hosted_vllm/meta-llama/Llama-3.1-8B-Instruct", "vllm", "meta-llama/Llama-3.1-8B-Instruct"),
        ("lm_studio/qwen2.5-7b-instruct", "lmstudio", "qwen2.5-7b-instruct"),
        ("openrouter/anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
        # pydantic-ai
        ("google-gla:gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("grok:grok-3-mini", "xai", "grok-3-mini"),
        ("groq:llama-3.1-8b-instant", "groq", "llama-3.1-8b-instant"),
        # any-llm
        ("mistral:mistral-small-latest", "mistral", "mistral-small-latest"),
        ("google:gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("huggingface/meta-llama/Llama-3.1-8B-Instruct", "huggingface", "meta-llama/Llama-3.1-8B-Instruct"),
    ],
)
def test_model_strings_of_other_libraries(model, provider, model_id):
    assert resolved(model) == (provider, model_id)


@pytest.mark.parametrize(
    "model,provider,model_id",
    [
        ("azure/my-gpt-4o-deployment", "azure", "my-gpt-4o-deployment"),
        ("azureopenai:my-deployment", "azure", "my-deployment"),
        ("bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("vertex_ai/gemini-2.5-flash", "vertex", "gemini-2.5-flash"),
        ("google-vertex:gemini-2.5-flash", "vertex", "gemini-2.5-flash"),
        ("vertexai:gemini-2.5-flash", "vertex", "gemini-2.5-flash"),
    ],
)
def test_cloud_prefixes_go_to_the_cloud_providers_or_say_what_is_missing(model, provider, model_id):
    if provider in PROVIDERS:  # the cloud settings besides the key: an endpoint, a region, a project
        env = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AWS_REGION": "us-east-1", "GOOGLE_CLOUD_PROJECT": "p"}
        assert resolved(model, env=env) == (provider, model_id)
        return
    with pytest.raises(UnknownProviderError) as info:  # the provider is not in this build
        resolved(model)
    assert f"provider {provider!r}" in str(info.value) and "Client(providers=" in str(info.value)
    local = Provider(provider, "openai_chat", "http://127.0.0.1:9/v1", requires_key=False)
    assert resolved(model, providers={provider: local}) == (provider, model_id)  # given one, the alias finds it


def test_every_alias_targets_a_provider_name_and_never_shadows_one():
    cloud = {"azure", "bedrock", "vertex"}  # added by their own provider modules
    for prefix, target in PREFIX_ALIASES.items():
        assert target in PROVIDERS or target in cloud, (prefix, target)
        assert prefix == target or prefix not in PROVIDERS, prefix


def test_an_own_provider_named_like_an_alias_wins():
    mine = Provider("together_ai", "openai_chat", "http://127.0.0.1:9/v1", requires_key=False)
    assert resolved("together_ai/some-model", providers={"together_ai": mine}) == ("together_ai", "some-model")


def test_a_litellm_model_string_reaches_the_provider_with_its_own_model_id(server):
    server.enqueue(Reply.recording("together/deepseek_r1_think_tags.sse"), Reply.recording("gemini/text_sse.sse"))
    with on_server(server, api_keys=ALL_KEYS) as client:
        response = client.complete("together_ai/deepseek-ai/DeepSeek-R1", HI)
        assert response.provider == "together" and response.text
        assert client.complete("google-gla:gemini-2.5-flash", HI).provider == "gemini"
    assert server.requests[0].json["model"] == "deepseek-ai/DeepSeek-R1"
    assert server.requests[1].path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


# ---------------------------------------------------------------------------
# Bare model ids: a default provider, or an error naming who serves them
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,candidates",
    [
        ("gpt-4o", ["openai", "openai-responses"]),
        ("o3-mini", ["openai", "openai-responses"]),
        ("claude-sonnet-4-5", ["anthropic"]),
        ("gemini-2.5-flash", ["gemini"]),
        ("command-a-03-2025", ["cohere"]),
        ("deepseek-chat", ["deepseek"]),
    ],
)
def test_a_bare_model_id_without_default_names_the_providers_that_serve_it(model, candidates):
    with pytest.raises(UnknownProviderError) as info:
        resolved(model)
    cloud = {"azure", "vertex", "bedrock"} & set(PROVIDERS)
    assert [c for c in info.value.candidates if c not in cloud] == candidates
    message = str(info.value)
    assert f"'{candidates[0]}:{model}'" in message and "default_provider" in message
    assert "LLMRELAY_DEFAULT_PROVIDER" in message


def test_default_provider_serves_bare_ids_and_leaves_prefixed_ones_alone():
    assert resolved("gpt-4o", default_provider="openai") == ("openai", "gpt-4o")
    assert resolved("my-finetune", default_provider="openai") == ("openai", "my-finetune")
    assert resolved("gemma3:1b", default_provider="ollama") == ("ollama", "gemma3:1b")  # a tag, not a provider
    assert resolved("meta-llama/Llama-3-8b", default_provider="together") == ("together", "meta-llama/Llama-3-8b")
    assert resolved("anthropic:claude-sonnet-4-5", default_provider="openai") == ("anthropic", "claude-sonnet-4-5")
    assert resolved("gpt-4o", env={"LLMRELAY_DEFAULT_PROVIDER": "openai-responses"}) == ("openai-responses", "gpt-4o")
    # the client's setting beats the variable
    assert resolved("gpt-4o", default_provider="openai", env={"LLMRELAY_DEFAULT_PROVIDER": "groq"})[0] == "openai"


def test_default_provider_auto_picks_by_the_model_family():
    assert resolved("claude-sonnet-4-5", default_provider="auto") == ("anthropic", "claude-sonnet-4-5")
    assert resolved("gpt-4o", default_provider="auto") == ("openai", "gpt-4o")
    assert resolved("gemini-2.5-flash", env={"LLMRELAY_DEFAULT_PROVIDER": "auto"}) == ("gemini", "gemini-2.5-flash")
    with pytest.raises(UnknownProviderError, match="No known provider prefix"):
        resolved("my-finetune", default_provider="auto")


def test_an_unknown_default_provider_fails_at_once():
    with pytest.raises(UnknownProviderError, match="default_provider 'opnai'"):
        Client(default_provider="opnai")
    with pytest.raises(UnknownProviderError, match="default provider 'opnai'"):
        resolved("gpt-4o", env={"LLMRELAY_DEFAULT_PROVIDER": "opnai"})


def test_fallback_lists_resolve_bare_ids_through_the_default(server):
    server.enqueue(Reply.json({"error": {"message": "down"}}, status=500), Reply.recording(ANTHROPIC_TEXT))
    with on_server(server, api_keys=ALL_KEYS, default_provider="auto") as client:
        response = client.complete(["gpt-4o", "claude-sonnet-4-5"], HI)
    assert response.provider == "anthropic" and [a.model for a in response.attempts] == ["openai:gpt-4o", "anthropic:claude-sonnet-4-5"]


# ---------------------------------------------------------------------------
# `await client.astream(...)`, as code written for awaited SDK calls does
# ---------------------------------------------------------------------------


async def test_awaiting_astream_gives_the_same_stream_and_sends_nothing_yet(server):
    server.enqueue(Reply.recording(ANTHROPIC_TEXT))
    client = on_server(server, api_keys=ALL_KEYS)
    pending = client.astream("anthropic:claude-sonnet-4-5", HI)
    stream = await pending
    assert stream is pending and isinstance(stream, AsyncStream)
    assert server.requests == []  # awaiting is not iterating: nothing sent
    text = "".join([t async for t in stream.text_stream])
    assert text == "- Captain\n- Scoop" and stream.response.text == text
    assert len(server.requests) == 1
    await client.aclose()


async def test_awaited_stream_as_context_manager_and_collect(server):
    server.enqueue(Reply.recording(ANTHROPIC_TEXT), Reply.recording(ANTHROPIC_TEXT))
    async with on_server(server, api_keys=ALL_KEYS) as client:
        async with await client.astream("anthropic:claude-sonnet-4-5", HI) as stream:
            events = [e async for e in stream]
        assert events and stream.response.status == "ok"
        stream = await client.astream("anthropic:claude-sonnet-4-5", HI)
        assert (await stream.collect()).text == "- Captain\n- Scoop"
        assert await stream is stream  # awaiting a finished stream is harmless too
