"""`Client`: model strings, keys and base URLs from the environment, message and
parameter validation, custom providers and the module-level functions.

`Client(env={...})` pins the environment, so nothing here depends on the
machine's variables, and nothing contacts a real provider.
"""

from __future__ import annotations

import copy

import pytest

import llmrelay
import llmrelay.client
from llmrelay import (
    PROVIDERS,
    Client,
    ImagePart,
    InvalidRequestError,
    Message,
    MissingAPIKeyError,
    Provider,
    TextPart,
    ToolCall,
    UnknownProviderError,
    UnsupportedParameterError,
)
from llmrelay.testing import Reply

HI = [{"role": "user", "content": "hi"}]
TEXT_REPLY = "openai_chat/text_usage_obfuscation_gpt35.sse"  # "1, 2, 3, 4, 5"
ALL_KEYS = {name: "k" for name in PROVIDERS}


def keyed(**kw) -> Client:
    """A client with a key for every provider and an empty environment."""
    return Client(api_keys={**ALL_KEYS, **kw.pop("api_keys", {})}, env=kw.pop("env", {}), **kw)


def call_of(client: Client, model: str, messages=HI, **params):
    call, _request, _decoder, _timeouts = client.prepare(model, messages, **params)
    return call


def request_of(client: Client, model: str, messages=HI, **params):
    return client.prepare(model, messages, **params)[1]


# ---------------------------------------------------------------------------
# Model strings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,provider,model_id",
    [
        ("openai:gpt-4o", "openai", "gpt-4o"),
        ("ollama:gemma3:1b", "ollama", "gemma3:1b"),  # split at the first colon only
        ("openrouter:minimax/minimax-m2:free", "openrouter", "minimax/minimax-m2:free"),
        ("openrouter:moonshotai/kimi-k2", "openrouter", "moonshotai/kimi-k2"),
        ("groq/openai/gpt-oss-120b", "groq", "openai/gpt-oss-120b"),  # slash form with a known prefix
        ("openrouter/minimax/minimax-m2:free", "openrouter", "minimax/minimax-m2:free"),
        ("ollama/gemma3:1b", "ollama", "gemma3:1b"),
        ("openai-responses:gpt-5", "openai-responses", "gpt-5"),
        ("cohere-v1:command-r", "cohere-v1", "command-r"),
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("gemini:gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("deepseek:deepseek-reasoner", "deepseek", "deepseek-reasoner"),
    ],
)
def test_model_string_parsing(model, provider, model_id):
    call = call_of(keyed(), model)
    assert (call.provider.name, call.model) == (provider, model_id)


def _assert_lists_providers(message: str, extra=()) -> None:
    for name in ("openai", "anthropic", "gemini", "ollama", "groq", "openrouter", "mistral", "deepseek", *extra):
        assert name in message, name


@pytest.mark.parametrize(
    "model,why",
    [
        ("meta-llama/Llama-3.3-70B", "No known provider prefix"),  # a slash that is not a provider
        ("gpt-4o", "names no provider; openai, openai-responses"),  # bare name: who serves it
        ("my-finetune-7b", "No known provider prefix"),  # bare name of no known family
        ("foo:bar", "Unknown provider 'foo'"),
        ("openai:", "No model name"),
        ("", "non-empty"),
        ("   ", "non-empty"),
    ],
)
def test_unknown_provider_errors_list_known_providers(model, why):
    with pytest.raises(UnknownProviderError) as info:
        keyed().prepare(model, HI)
    msg = str(info.value)
    assert why in msg
    assert "provider:model" in msg
    _assert_lists_providers(msg)
    assert set(PROVIDERS) <= set(info.value.known)


def test_unknown_provider_error_is_a_value_error_and_relay_error():
    with pytest.raises(ValueError):
        keyed().prepare("gpt-4o", HI)
    with pytest.raises(llmrelay.LLMRelayError):
        keyed().prepare("gpt-4o", HI)


def test_model_not_a_string():
    with pytest.raises(UnknownProviderError):
        keyed().prepare(None, HI)  # type: ignore[arg-type]
    with pytest.raises(UnknownProviderError):
        keyed().prepare(42, HI)  # type: ignore[arg-type]


def test_unknown_provider_error_lists_custom_providers_too():
    c = keyed(providers={"myco": Provider("myco", "openai_chat", "http://127.0.0.1:9/v1", ("MYCO_KEY",))})
    with pytest.raises(UnknownProviderError) as info:
        c.prepare("nope:x", HI)
    assert "myco" in str(info.value)


def test_aliases_resolve_before_parsing():
    c = keyed(aliases={"fast": "groq:llama-3.1-8b-instant", "local": "ollama:gemma3:1b"})
    assert (call_of(c, "fast").provider.name, call_of(c, "fast").model) == ("groq", "llama-3.1-8b-instant")
    assert (call_of(c, "local").provider.name, call_of(c, "local").model) == ("ollama", "gemma3:1b")
    # not an alias: parsed as usual
    assert call_of(c, "openai:fast").model == "fast"


def test_alias_to_unknown_provider_raises():
    with pytest.raises(UnknownProviderError):
        keyed(aliases={"x": "nope:model"}).prepare("x", HI)


def test_provider_argument_skips_parsing():
    c = keyed()
    call = call_of(c, "minimax/minimax-m2:free", provider="openrouter")
    assert (call.provider.name, call.model) == ("openrouter", "minimax/minimax-m2:free")
    # explicit beats parsed: the whole string is the model id
    call = call_of(c, "ollama:gemma3:1b", provider="openai")
    assert (call.provider.name, call.model) == ("openai", "ollama:gemma3:1b")
    call = call_of(c, "meta-llama/Llama-3.3-70B", provider="together")
    assert (call.provider.name, call.model) == ("together", "meta-llama/Llama-3.3-70B")


def test_provider_argument_unknown():
    with pytest.raises(UnknownProviderError) as info:
        keyed().prepare("gpt-4o", HI, provider="nope")
    _assert_lists_providers(str(info.value))


def test_provider_argument_with_a_slash_is_unknown_not_keyerror():
    with pytest.raises(UnknownProviderError):
        keyed().prepare("model", HI, provider="openai/x")


def test_model_string_routes_the_request(server, client):
    server.enqueue(Reply.recording(TEXT_REPLY), Reply.recording(TEXT_REPLY))
    assert client.complete("groq/openai/gpt-oss-120b", HI).text == "1, 2, 3, 4, 5"
    assert client.complete("openrouter:minimax/minimax-m2:free", HI).text == "1, 2, 3, 4, 5"
    assert [r.json["model"] for r in server.requests] == ["openai/gpt-oss-120b", "minimax/minimax-m2:free"]
    assert all(r.path == "/v1/chat/completions" for r in server.requests)


# ---------------------------------------------------------------------------
# API keys
# ---------------------------------------------------------------------------

KEYED = sorted(name for name, p in PROVIDERS.items() if p.requires_key)


@pytest.mark.parametrize("name", KEYED)
def test_missing_api_key_names_every_env_var_checked(name):
    with pytest.raises(MissingAPIKeyError) as info:
        Client(env={}).prepare(f"{name}:some-model", HI)
    e = info.value
    msg = str(e)
    assert e.provider == name
    assert repr(name) in msg
    assert "api_key=" in msg
    assert e.env_vars == PROVIDERS[name].key_env + PROVIDERS[name].token_env
    for var in e.env_vars:
        assert var in msg


@pytest.mark.parametrize(
    "name,vars_",
    [
        ("openai", ("OPENAI_API_KEY",)),
        ("anthropic", ("ANTHROPIC_API_KEY",)),
        ("gemini", ("GOOGLE_API_KEY", "GEMINI_API_KEY")),  # google-genai's precedence
        ("cohere", ("CO_API_KEY", "COHERE_API_KEY")),
        ("groq", ("GROQ_API_KEY",)),
        ("deepseek", ("DEEPSEEK_API_KEY",)),
        ("mistral", ("MISTRAL_API_KEY",)),
        ("openrouter", ("OPENROUTER_API_KEY",)),
        ("together", ("TOGETHER_API_KEY",)),
        ("fireworks", ("FIREWORKS_API_KEY",)),
        ("xai", ("XAI_API_KEY",)),
        ("cerebras", ("CEREBRAS_API_KEY",)),
        ("huggingface", ("HF_TOKEN", "HUGGINGFACE_API_KEY")),
        ("perplexity", ("PERPLEXITY_API_KEY", "PPLX_API_KEY")),
    ],
)
def test_key_env_vars_per_conventions(name, vars_):
    assert PROVIDERS[name].key_env == vars_
    with pytest.raises(MissingAPIKeyError) as info:
        Client(env={}).prepare(f"{name}:m", HI)
    msg = str(info.value)
    assert all(v in msg for v in vars_)
    if len(vars_) > 1:
        assert ", ".join(vars_) in msg  # in resolution order


def test_missing_key_error_never_shows_other_key_values():
    with pytest.raises(MissingAPIKeyError) as info:
        Client(env={"ANTHROPIC_API_KEY": "sk-ant-secret"}).prepare("openai:gpt-4o", HI)
    assert "sk-ant-secret" not in str(info.value)


@pytest.mark.parametrize(
    "name,env,expected",
    [
        ("gemini", {"GEMINI_API_KEY": "g1", "GOOGLE_API_KEY": "g2"}, "g2"),  # GOOGLE_API_KEY first (google-genai)
        ("gemini", {"GEMINI_API_KEY": "g1"}, "g1"),
        ("gemini", {"GOOGLE_API_KEY": "", "GEMINI_API_KEY": "g1"}, "g1"),  # empty counts as unset
        ("cohere", {"CO_API_KEY": "c1", "COHERE_API_KEY": "c2"}, "c1"),
        ("cohere", {"COHERE_API_KEY": "c2"}, "c2"),
        ("cohere-v1", {"COHERE_API_KEY": "c2"}, "c2"),
        ("perplexity", {"PPLX_API_KEY": "p2"}, "p2"),
        ("huggingface", {"HUGGINGFACE_API_KEY": "h2", "HF_TOKEN": "h1"}, "h1"),
        ("openai", {"OPENAI_API_KEY": "o1"}, "o1"),
        ("openai-responses", {"OPENAI_API_KEY": "o1"}, "o1"),
    ],
)
def test_key_resolution_order(name, env, expected):
    assert call_of(Client(env=env), f"{name}:m").api_key == expected


def test_explicit_key_beats_client_keys_beats_env():
    env = {"OPENAI_API_KEY": "from-env"}
    assert call_of(Client(env=env), "openai:m").api_key == "from-env"
    c = Client(env=env, api_keys={"openai": "from-client"})
    assert call_of(c, "openai:m").api_key == "from-client"
    assert call_of(c, "openai:m", api_key="from-call").api_key == "from-call"
    assert request_of(c, "openai:m", api_key="from-call").headers["authorization"] == "Bearer from-call"


@pytest.mark.parametrize("name", ["ollama", "lmstudio", "vllm", "openai-compatible"])
def test_local_servers_need_no_key(name):
    c = Client(env={}, base_urls={"openai-compatible": "http://127.0.0.1:9/v1"})
    call, request, _, _ = c.prepare(f"{name}:m", HI)
    assert call.api_key is None
    assert "authorization" not in {k.lower() for k in request.headers}


def test_local_server_sends_key_when_given():
    call = call_of(Client(env={"OLLAMA_API_KEY": "ok"}), "ollama:m")
    assert call.api_key == "ok"


# ---------------------------------------------------------------------------
# Base URLs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,env,expected",
    [
        ("openai", {}, "https://api.openai.com/v1"),
        ("openai", {"OPENAI_BASE_URL": "http://a/v1", "OPENAI_API_BASE": "http://b/v1"}, "http://a/v1"),
        ("openai", {"OPENAI_API_BASE": "http://b/v1/"}, "http://b/v1"),  # trailing slash dropped
        ("openai-responses", {"OPENAI_BASE_URL": "http://a/v1"}, "http://a/v1"),
        ("anthropic", {"ANTHROPIC_BASE_URL": "http://proxy"}, "http://proxy"),
        ("gemini", {"GOOGLE_GEMINI_BASE_URL": "http://g/v1beta"}, "http://g/v1beta"),
        ("gemini", {"GEMINI_BASE_URL": "http://g2"}, "http://g2"),  # the <NAME>_BASE_URL rule
        ("groq", {"GROQ_BASE_URL": "http://groq"}, "http://groq"),
        ("groq", {"GROQ_API_BASE": "http://groq2"}, "http://groq2"),
        ("deepseek", {"DEEPSEEK_API_BASE": "http://ds"}, "http://ds"),
        ("deepseek", {"DEEPSEEK_BASE_URL": "http://ds2"}, "http://ds2"),
        ("mistral", {"MISTRAL_API_BASE": "http://mi"}, "http://mi"),
        ("mistral", {"MISTRAL_BASE_URL": "http://mi2"}, "http://mi2"),
        ("cohere", {"CO_BASE_URL": "http://co", "COHERE_BASE_URL": "http://co2"}, "http://co"),
        ("cohere", {"COHERE_BASE_URL": "http://co2"}, "http://co2"),
        ("cohere", {"CO_API_URL": "http://co0", "CO_BASE_URL": "http://co"}, "http://co0"),  # the cohere SDK's
        ("cohere-v1", {"CO_API_URL": "http://co0/"}, "http://co0"),
        ("openrouter", {"OPENROUTER_BASE_URL": "http://or"}, "http://or"),
        ("openrouter", {"OPENROUTER_API_BASE": "http://or2"}, "http://or2"),
        ("together", {"TOGETHER_BASE_URL": "http://tg"}, "http://tg"),
        ("xai", {"XAI_API_BASE": "http://x"}, "http://x"),
        ("lmstudio", {"LM_STUDIO_BASE_URL": "http://lm/v1"}, "http://lm/v1"),
        ("openai-compatible", {"OPENAI_COMPATIBLE_BASE_URL": "http://oc/v1"}, "http://oc/v1"),
        ("openai", {"OPENAI_BASE_URL": ""}, "https://api.openai.com/v1"),  # empty counts as unset
    ],
)
def test_base_url_resolution(name, env, expected):
    call = call_of(Client(env={**env}, api_keys=ALL_KEYS), f"{name}:m")
    assert call.base_url == expected


def test_base_url_lands_in_request_url():
    c = Client(env={"OPENROUTER_BASE_URL": "http://or.local/api/v1/"}, api_keys=ALL_KEYS)
    assert request_of(c, "openrouter:m").url == "http://or.local/api/v1/chat/completions"


def test_explicit_base_url_beats_client_beats_env():
    env = {"GROQ_BASE_URL": "http://env"}
    c = Client(env=env, api_keys=ALL_KEYS)
    assert call_of(c, "groq:m").base_url == "http://env"
    c = Client(env=env, api_keys=ALL_KEYS, base_urls={"groq": "http://client"})
    assert call_of(c, "groq:m").base_url == "http://client"
    assert call_of(c, "groq:m", base_url="http://call/").base_url == "http://call"


@pytest.mark.parametrize(
    "host,expected",
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("myhost", "http://myhost:11434"),
        ("localhost:11434", "http://localhost:11434"),
        ("192.168.1.5", "http://192.168.1.5:11434"),
        (":11434", "http://127.0.0.1:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("http://gpu-box:11434", "http://gpu-box:11434"),
        ("https://ollama.example.com/", "https://ollama.example.com"),
        (" myhost:1234 ", "http://myhost:1234"),
    ],
)
def test_ollama_host_normalized(host, expected):
    assert call_of(Client(env={"OLLAMA_HOST": host}), "ollama:gemma3:1b").base_url == expected


def test_ollama_env_order_and_default():
    assert call_of(Client(env={}), "ollama:m").base_url == "http://localhost:11434"
    env = {"OLLAMA_HOST": "a", "OLLAMA_API_BASE": "http://b:1", "OLLAMA_BASE_URL": "http://c:1"}
    assert call_of(Client(env=env), "ollama:m").base_url == "http://a:11434"
    env.pop("OLLAMA_HOST")
    assert call_of(Client(env=env), "ollama:m").base_url == "http://b:1"
    assert call_of(Client(env={"OLLAMA_API_URL": "d"}), "ollama:m").base_url == "http://d:11434"


def test_openai_compatible_without_base_url_is_a_clear_error():
    with pytest.raises(UnknownProviderError) as info:
        Client(env={}).prepare("openai-compatible:m", HI)
    assert "base_url" in str(info.value)


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def test_string_and_single_message_forms():
    c = keyed()
    for messages in ("hi", {"role": "user", "content": "hi"}, Message.user("hi"), [Message.user("hi")], ({"role": "user", "content": "hi"},)):
        assert request_of(c, "openai:m", messages).json["messages"] == [{"role": "user", "content": "hi"}]


def test_dicts_and_message_objects_normalize_alike():
    dicts = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    objects = [
        Message.system("s"),
        Message.user("look", ImagePart(url="https://x/y.png")),
        Message.assistant("ok", [ToolCall("c1", "f", {"a": 1}, '{"a":1}')]),
        Message.tool("c1", "done"),
    ]
    c = keyed()
    assert request_of(c, "openai:m", dicts).json == request_of(c, "openai:m", objects).json
    call = call_of(c, "openai:m", dicts)
    assert all(isinstance(m, Message) for m in call.messages)
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "tool"]
    assert call.messages[3].tool_call_id == "c1"


def test_callers_messages_and_options_never_mutated(server, client):
    tool_args = {"a": 1, "nested": {"b": [1, 2]}}
    image = ImagePart(url="https://x/y.png", detail="low")
    msg_obj = Message("user", [TextPart("from object"), image])
    messages = [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
         "name": "alice"},
        {"role": "assistant", "content": None, "reasoning_content": "thought",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": tool_args}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "1"},
        msg_obj,
    ]
    extra_body = {"user": "u", "metadata": {"k": "v"}}
    extra_headers = {"X-A": "1"}
    stop = ["a", "b"]
    before = copy.deepcopy((messages, extra_body, extra_headers, stop))
    parts_before = list(msg_obj.parts)
    server.enqueue(Reply.recording(TEXT_REPLY))
    client.complete("openai:m", messages, extra_body=extra_body, extra_headers=extra_headers, stop=stop)
    assert (messages, extra_body, extra_headers, stop) == before
    assert msg_obj.parts == parts_before and msg_obj.parts[1] is image
    assert type(stop) is list and type(messages[0]) is dict
    sent = server.requests[0].json
    assert sent["messages"][0] == {"role": "system", "content": "rules"}
    assert sent["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "nested": {"b": [1, 2]}}'
    assert sent["stop"] == ["a", "b"] and sent["user"] == "u"


def test_response_reused_as_message_is_not_mutated(server, client):
    server.enqueue(Reply.recording("openai_chat/tool_call_then_usage.sse"), Reply.recording(TEXT_REPLY))
    first = client.complete("openai:m", HI)
    snapshot = copy.deepcopy(first.choices)
    convo = [*HI, first.to_message(), {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "42"}]
    convo_before = copy.deepcopy(convo)
    client.complete("openai:m", convo)
    assert first.choices == snapshot
    assert convo == convo_before


@pytest.mark.parametrize(
    "messages,needles",
    [
        (None, ["messages must be a list", "NoneType"]),
        (42, ["messages must be a list", "int"]),
        ([], ["messages is empty"]),
        ([*HI, 5], ["messages[1]", "int"]),
        ([{"content": "x"}], ["messages[0]", "unknown role None"]),
        ([*HI, {"role": "robot", "content": "x"}], ["messages[1]", "unknown role 'robot'"]),
        ([{"role": "user", "content": 5}], ["messages[0].content", "string or a list of parts", "int"]),
        ([{"role": "user", "content": {"type": "text", "text": "x"}}], ["messages[0].content", "dict"]),
        ([*HI, *HI, {"role": "user", "content": [{"type": "audio"}]}], ["messages[2].content[0]", "'audio'"]),
        ([{"role": "user", "content": ["ok", {"type": "image_url"}]}], ["messages[0].content[1]", "no url"]),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}], ["messages[0].content[0]", "url must be a string"]),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], ["messages[0].content[0]", "text must be a string"]),
        ([{"role": "user", "content": [{"text": "untyped"}]}], ["messages[0].content[0]", "None"]),
        ([{"role": "user", "content": [3.5]}], ["messages[0].content[0]", "float"]),
        ([{"role": "user", "content": [{"type": "image", "source": {}}]}], ["messages[0].content[0]", "url or base64"]),
        ([*HI, {"role": "tool", "content": "x"}], ["messages[1]", "tool_call_id"]),
        ([{"role": "assistant", "tool_calls": [{"function": {}}]}], ["messages[0].tool_calls[0]", "no function name"]),
        ([{"role": "assistant", "tool_calls": [5]}], ["messages[0].tool_calls[0]", "dict"]),
        ([{"role": "assistant", "tool_calls": "f()"}], ["messages[0].tool_calls", "list"]),
        ([{"role": "assistant", "tool_calls": [{"function": "f"}]}], ["messages[0].tool_calls[0].function", "dict"]),
        ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}],
         ["messages[0].tool_calls[0]", "arguments must be a JSON object"]),
        ([{"role": "user", "content": "hi", "name": 5}], ["messages[0].name", "string"]),
        ([Message("robot", [])], ["messages[0]", "unknown role 'robot'"]),
        ([Message.user("a"), Message("user", [5])], ["messages[1].parts[0]", "int"]),
        ([Message("user", "not a list")], ["messages[0].parts", "list"]),
    ],
)
def test_invalid_messages_name_index_and_problem(messages, needles):
    with pytest.raises(InvalidRequestError) as info:
        keyed().prepare("openai:m", messages)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_invalid_request_error_is_a_value_error():
    with pytest.raises(ValueError):
        keyed().prepare("openai:m", [])


def test_messages_checked_before_any_request(server, client):
    with pytest.raises(InvalidRequestError):
        client.stream("openai:m", [{"role": "robot"}])
    assert server.requests == []


def test_str_parts_in_message_objects_are_text():
    req = request_of(keyed(), "openai:m", [Message("user", ["a", TextPart("b")])])
    assert req.json["messages"] == [{"role": "user", "content": "ab"}]


def test_tool_call_with_invalid_json_arguments_is_sent_back_unchanged():
    messages = [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a": '}}]}]
    req = request_of(keyed(), "openai:m", messages)
    assert req.json["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"a": '


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def test_unknown_parameter_names_it_and_points_at_extra_body():
    with pytest.raises(InvalidRequestError) as info:
        keyed().prepare("openai:m", HI, temprature=0.5)
    msg = str(info.value)
    assert "'temprature'" in msg and "extra_body" in msg and "temperature" in msg


def test_several_unknown_parameters_all_named():
    with pytest.raises(InvalidRequestError) as info:
        keyed().prepare("openai:m", HI, foo=1, bar=2)
    assert "'bar'" in str(info.value) and "'foo'" in str(info.value)


@pytest.mark.parametrize(
    "model,param,value",
    [
        ("mistral:m", "seed", 1),
        ("perplexity:m", "seed", 1),
        ("perplexity:m", "stop", ["x"]),
        ("openai:m", "thinking_budget", 1024),
        ("groq:m", "thinking_budget", 1024),
    ],
)
def test_unsupported_parameter_for_provider(model, param, value):
    with pytest.raises(UnsupportedParameterError) as info:
        Client(env={}).prepare(model, HI, **{param: value})  # raised before the key is even looked up
    e = info.value
    assert e.parameter == param and e.provider == model.split(":")[0]
    assert repr(param) in str(e) and "extra_body" in str(e)


def test_supported_parameters_pass_through():
    req = request_of(keyed(), "groq:m", HI, temperature=0, top_p=1, max_tokens=5, stop="x", seed=3, n=2, reasoning_effort="high")
    body = req.json
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"], body["seed"], body["n"], body["reasoning_effort"]) == (
        0, 1, 5, ["x"], 3, 2, "high")


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"temperature": True}, "temperature must be a number"),
        ({"top_p": [1]}, "top_p must be a number"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"n": "2"}, "n must be an integer"),
        ({"stop": 5}, "stop must be a string or a list of strings"),
        ({"stop": ["a", 1]}, "stop must be a string or a list of strings"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort must be one of"),
        ({"extra_body": "x"}, "extra_body must be a dict"),
        ({"extra_headers": [("a", "b")]}, "extra_headers must be a dict"),
    ],
)
def test_bad_parameter_types(params, needle):
    with pytest.raises(InvalidRequestError) as info:
        keyed().prepare("openai:m", HI, **params)
    assert needle in str(info.value)


def test_none_parameters_mean_not_set():
    body = request_of(keyed(), "openai:m", HI, temperature=None, max_tokens=None, stop=None).json
    assert not {"temperature", "max_completion_tokens", "stop"} & set(body)


def test_stop_tuple_becomes_list():
    assert request_of(keyed(), "openai:m", HI, stop=("a", "b")).json["stop"] == ["a", "b"]


# ---------------------------------------------------------------------------
# Custom providers
# ---------------------------------------------------------------------------


def test_custom_openai_compatible_service(server):
    myco = Provider("myco", "openai_chat", server.url + "/v1", ("MYCO_API_TOKEN",))
    c = Client(providers={"myco": myco}, env={"MYCO_API_TOKEN": "sekret"})
    try:
        server.enqueue(Reply.recording(TEXT_REPLY))
        r = c.complete("myco:my-model:latest", HI, max_tokens=10)
    finally:
        c.close()
    assert r.text == "1, 2, 3, 4, 5" and r.provider == "myco" and r.requested_model == "my-model:latest"
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sekret"
    assert req.json["model"] == "my-model:latest" and req.json["max_tokens"] == 10
    assert req.json["stream_options"] == {"include_usage": True}


def test_custom_provider_missing_key_and_generic_env_rules():
    myco = Provider("my-co", "openai_chat", "https://api.myco.test/v1", ("MYCO_API_TOKEN",))
    with pytest.raises(MissingAPIKeyError) as info:
        Client(providers={"my-co": myco}, env={}).prepare("my-co:m", HI)
    assert "MYCO_API_TOKEN" in str(info.value) and "'my-co'" in str(info.value)
    # <NAME>_BASE_URL / <NAME>_API_BASE apply to custom providers too
    env = {"MYCO_API_TOKEN": "t", "MY_CO_API_BASE": "http://override/v1"}
    assert call_of(Client(providers={"my-co": myco}, env=env), "my-co:m").base_url == "http://override/v1"


def test_custom_provider_without_key_env_uses_name_api_key():
    acme = Provider("acme", "openai_chat", "https://acme.test/v1")
    with pytest.raises(MissingAPIKeyError) as info:
        Client(providers={"acme": acme}, env={}).prepare("acme:m", HI)
    assert "ACME_API_KEY" in str(info.value)
    assert call_of(Client(providers={"acme": acme}, env={"ACME_API_KEY": "a"}), "acme:m").api_key == "a"


def test_custom_provider_can_replace_a_builtin(server):
    local_openai = PROVIDERS["openai"].with_base_url(server.url + "/v1")
    c = Client(providers={"openai": local_openai}, env={"OPENAI_API_KEY": "k"})
    try:
        server.enqueue(Reply.recording(TEXT_REPLY))
        assert c.complete("openai:gpt-4o", HI).text == "1, 2, 3, 4, 5"
    finally:
        c.close()


def test_custom_keyless_provider_sends_no_authorization(server):
    local = Provider("box", "openai_chat", server.url + "/v1", requires_key=False, stream_usage=False)
    c = Client(providers={"box": local}, env={})
    try:
        server.enqueue(Reply.recording(TEXT_REPLY))
        c.complete("box:m", HI)
    finally:
        c.close()
    req = server.requests[0]
    assert "authorization" not in req.headers and "stream_options" not in req.json


# ---------------------------------------------------------------------------
# Module-level functions
# ---------------------------------------------------------------------------


@pytest.fixture
def default_env(server, monkeypatch):
    """The process environment points OpenAI at the replay server; a fresh default client."""
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setattr(llmrelay.client, "_default", None)
    yield server


@pytest.fixture
def close_default():
    yield
    c = llmrelay.client._default
    if c is not None:
        c.close()


def test_module_complete_uses_env(default_env, close_default):
    default_env.enqueue(Reply.recording(TEXT_REPLY))
    r = llmrelay.complete("openai:gpt-3.5-turbo", "Count from 1 to 5", temperature=0)
    assert r.text == "1, 2, 3, 4, 5"
    req = default_env.requests[0]
    assert req.headers["authorization"] == "Bearer env-key"
    assert req.json["messages"] == [{"role": "user", "content": "Count from 1 to 5"}]
    assert llmrelay.default_client() is llmrelay.client._default


def test_module_stream_text_stream(default_env, close_default):
    default_env.enqueue(Reply.recording(TEXT_REPLY))
    assert "".join(llmrelay.stream("openai:gpt-4o", HI).text_stream) == "1, 2, 3, 4, 5"
    default_env.enqueue(Reply.recording(TEXT_REPLY))
    with llmrelay.stream("openai:gpt-4o", HI) as s:
        kinds = [type(e).__name__ for e in s]
    assert kinds[0] == "StreamStart" and kinds[-1] == "UsageEvent"


async def test_module_acomplete_and_astream(default_env):
    default_env.enqueue(Reply.recording(TEXT_REPLY), Reply.recording(TEXT_REPLY))
    try:
        r = await llmrelay.acomplete("openai:gpt-4o", HI)
        assert r.text == "1, 2, 3, 4, 5"
        pieces = [t async for t in llmrelay.astream("openai:gpt-4o", HI).text_stream]
        assert "".join(pieces) == "1, 2, 3, 4, 5"
    finally:
        await llmrelay.client._default.aclose()
    assert len(default_env.requests) == 2


def test_module_missing_key_from_env(monkeypatch):
    for var in PROVIDERS["groq"].key_env:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(llmrelay.client, "_default", None)
    with pytest.raises(MissingAPIKeyError) as info:
        llmrelay.stream("groq:llama", HI)
    assert "GROQ_API_KEY" in str(info.value)
