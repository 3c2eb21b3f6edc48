"""Provider profiles: data, not code.

A provider is a wire protocol plus a base URL, the env vars it reads and a few
quirk flags. An OpenAI-compatible service is one `Provider(...)` entry here (or
one `Client(providers={...})` entry in user code).

Settings resolve in this order: explicit argument, then the env vars listed
(first set wins), then `<NAME>_BASE_URL` / `<NAME>_API_BASE`, then the default.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import MissingAPIKeyError, UnknownProviderError

PROTOCOLS = ("openai_chat", "openai_responses", "anthropic", "gemini", "ollama", "cohere", "cohere_v1", "bedrock", "bedrock_invoke")


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    protocol: str
    base_url: str
    key_env: tuple[str, ...] = ()
    base_url_env: tuple[str, ...] = ()
    #: False for local servers (Ollama, LM Studio, vLLM): a key is sent only if given.
    requires_key: bool = True
    #: Send `stream_options: {include_usage: true}` (OpenAI Chat-compatible only).
    stream_usage: bool = True
    #: The provider continues a trailing assistant message (used by fallback `prefill`).
    supports_prefill: bool = False
    #: Chat field for the output limit: "max_tokens" or "max_completion_tokens".
    max_tokens_field: str = "max_tokens"
    #: Chat field that must carry an assistant tool-call turn's reasoning back to
    #: the service (DeepSeek thinking mode: "reasoning_content"), or None.
    reasoning_echo: str | None = None
    #: Parameters this service rejects although its protocol has them.
    unsupported: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Headers read from env vars, as the provider's official SDK does: (header, env var);
    #: sent when the variable is set (OpenAI's `OPENAI_ORG_ID` -> `openai-organization`).
    env_headers: tuple[tuple[str, str], ...] = ()
    #: Env vars holding a bearer token (first set wins), sent as `authorization: Bearer ...`;
    #: with one set, no API key is required (Anthropic's `ANTHROPIC_AUTH_TOKEN`).
    token_env: tuple[str, ...] = ()
    description: str = ""
    #: How structured output (`output=`) is asked for (see `llmrelay.structured`):
    #: "json_schema" (the protocol's native schema-constrained output), "json_object" (JSON
    #: mode + the schema in a system message), "tool" (a forced call of an output tool) or
    #: "prompt" (the schema in a system message only). A mechanism the protocol lacks
    #: falls back along json_schema -> json_object -> tool -> prompt.
    structured: str = "json_schema"
    #: A cloud whose URL form and auth apply ("azure", "aws", "google"; see `llmrelay.cloud`),
    #: or None for a plain base URL + API key.
    cloud: str | None = None
    #: Model-name prefix -> the protocol (and structured mode) that serves it, when a cloud
    #: hosts several API families under one provider (Vertex: "claude" -> anthropic).
    #: Each entry: (model prefix, protocol, structured mode, supports_prefill).
    model_protocols: tuple[tuple[str, str, str, bool], ...] = ()

    def for_model(self, model: str) -> Provider:
        """The profile that serves `model` (itself unless a `model_protocols` prefix matches)."""
        for prefix, protocol, structured, prefill in self.model_protocols:
            if model.startswith(prefix):
                return replace(self, protocol=protocol, structured=structured, supports_prefill=prefill, model_protocols=())
        return self

    def with_base_url(self, base_url: str) -> Provider:
        return replace(self, base_url=base_url)


def _compat(name: str, base_url: str, key_env: tuple[str, ...], **kw: Any) -> Provider:
    return Provider(name, "openai_chat", base_url, key_env, **kw)


#: The openai SDK sends these when the variables are set.
_OPENAI_HEADERS = (("openai-organization", "OPENAI_ORG_ID"), ("openai-project", "OPENAI_PROJECT_ID"))

_BUILTIN: tuple[Provider, ...] = (
    Provider(
        "openai", "openai_chat", "https://api.openai.com/v1", ("OPENAI_API_KEY",),
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"), max_tokens_field="max_completion_tokens",
        env_headers=_OPENAI_HEADERS, description="OpenAI Chat Completions",
    ),
    Provider(
        "openai-responses", "openai_responses", "https://api.openai.com/v1", ("OPENAI_API_KEY",),
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"), env_headers=_OPENAI_HEADERS, description="OpenAI Responses API",
    ),
    Provider(
        "anthropic", "anthropic", "https://api.anthropic.com", ("ANTHROPIC_API_KEY",),
        ("ANTHROPIC_BASE_URL",), supports_prefill=True, token_env=("ANTHROPIC_AUTH_TOKEN",),
        description="Anthropic Messages", structured="tool",
    ),
    # google-genai: with both set, GOOGLE_API_KEY wins
    Provider(
        "gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta",
        ("GOOGLE_API_KEY", "GEMINI_API_KEY"), ("GOOGLE_GEMINI_BASE_URL",),
        description="Google Gemini (streamGenerateContent, SSE)",
    ),
    Provider(
        "ollama", "ollama", "http://localhost:11434", ("OLLAMA_API_KEY",),
        ("OLLAMA_HOST", "OLLAMA_API_BASE", "OLLAMA_BASE_URL", "OLLAMA_API_URL"),
        requires_key=False, supports_prefill=True, description="Ollama /api/chat (NDJSON)",
    ),
    Provider(
        "cohere", "cohere", "https://api.cohere.com", ("CO_API_KEY", "COHERE_API_KEY"),
        ("CO_API_URL", "CO_BASE_URL", "COHERE_BASE_URL"), description="Cohere v2 /v2/chat",
    ),
    Provider(
        "cohere-v1", "cohere_v1", "https://api.cohere.com", ("CO_API_KEY", "COHERE_API_KEY"),
        ("CO_API_URL", "CO_BASE_URL", "COHERE_BASE_URL"), description="Cohere v1 /v1/chat (legacy NDJSON)",
    ),
    # Groq: json_schema only on some models (400 elsewhere); JSON mode works on all
    _compat("groq", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), base_url_env=("GROQ_BASE_URL",),
            structured="json_object", description="Groq (OpenAI-compatible)"),
    _compat("deepseek", "https://api.deepseek.com", ("DEEPSEEK_API_KEY",), base_url_env=("DEEPSEEK_API_BASE",),
            supports_prefill=False, reasoning_echo="reasoning_content", structured="json_object",
            description="DeepSeek (OpenAI-compatible)"),
    _compat("mistral", "https://api.mistral.ai/v1", ("MISTRAL_API_KEY",), base_url_env=("MISTRAL_API_BASE",),
            supports_prefill=True, unsupported=frozenset({"seed"}),
            # Mistral rejects stream_options (422 extra_forbidden) and always sends usage in its last chunk
            stream_usage=False, description="Mistral (OpenAI-compatible)"),
    _compat("openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), supports_prefill=True,
            description="OpenRouter (OpenAI-compatible)"),
    _compat("together", "https://api.together.xyz/v1", ("TOGETHER_API_KEY",),
            description="Together AI (OpenAI-compatible)"),
    _compat("fireworks", "https://api.fireworks.ai/inference/v1", ("FIREWORKS_API_KEY",),
            description="Fireworks AI (OpenAI-compatible)"),
    _compat("xai", "https://api.x.ai/v1", ("XAI_API_KEY",), description="xAI Grok (OpenAI-compatible)"),
    _compat("perplexity", "https://api.perplexity.ai", ("PERPLEXITY_API_KEY", "PPLX_API_KEY"),
            stream_usage=False, unsupported=frozenset({"seed", "stop"}), description="Perplexity (OpenAI-compatible)"),
    _compat("cerebras", "https://api.cerebras.ai/v1", ("CEREBRAS_API_KEY",), description="Cerebras (OpenAI-compatible)"),
    _compat("huggingface", "https://router.huggingface.co/v1", ("HF_TOKEN", "HUGGINGFACE_API_KEY"),
            description="Hugging Face router (OpenAI-compatible)"),
    _compat("lmstudio", "http://localhost:1234/v1", ("LMSTUDIO_API_KEY",), base_url_env=("LMSTUDIO_BASE_URL", "LM_STUDIO_BASE_URL"),
            requires_key=False, description="LM Studio local server (OpenAI-compatible)"),
    _compat("vllm", "http://localhost:8000/v1", ("VLLM_API_KEY",), requires_key=False,
            description="vLLM server (OpenAI-compatible)"),
    # -- clouds (llmrelay.cloud: URL forms and auth) --
    Provider(
        "azure", "openai_chat", "", ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"), ("AZURE_OPENAI_ENDPOINT",), cloud="azure",
        description="Azure OpenAI / AI Foundry Chat Completions (model = deployment name)",
    ),
    Provider(
        "azure-responses", "openai_responses", "", ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"), ("AZURE_OPENAI_ENDPOINT",), cloud="azure",
        description="Azure OpenAI Responses API",
    ),
    Provider(
        "bedrock", "bedrock", "", ("AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"), ("BEDROCK_BASE_URL",), cloud="aws",
        structured="tool", description="AWS Bedrock Converse (ConverseStream, AWS event stream)",
    ),
    Provider(
        "bedrock-invoke", "bedrock_invoke", "", ("AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"), ("BEDROCK_BASE_URL",),
        cloud="aws", structured="tool",
        description="AWS Bedrock InvokeModelWithResponseStream (Anthropic Messages / Nova native bodies)",
    ),
    Provider(
        "vertex", "gemini", "", ("GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"), ("VERTEX_BASE_URL",), cloud="google",
        model_protocols=(("claude", "anthropic", "tool", True),),
        description="Google Vertex AI: Gemini (streamGenerateContent) and Claude (streamRawPredict)",
    ),
    _compat("openai-compatible", "", ("OPENAI_COMPATIBLE_API_KEY",), requires_key=False,
            description="Any OpenAI-compatible server: give base_url"),
)

PROVIDERS: dict[str, Provider] = {p.name: p for p in _BUILTIN}


def env_names(provider: Provider, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    return _env_names(provider.name, suffixes)


@functools.lru_cache(maxsize=512)  # asked on every call that has no explicit base URL or key
def _env_names(name: str, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    prefix = name.upper().replace("-", "_")
    return tuple(prefix + s for s in suffixes)


#: Model-string prefixes of the libraries users come from, mapped to llmrelay's provider names.
#: LiteLLM writes `together_ai/...`, pydantic-ai `google-gla:...`, any-llm `vertexai:...`; their
#: prefixes that already are llmrelay names (`openai/`, `anthropic:`, `gemini/`, `groq:`...) need
#: no entry. A provider of your own (`Client(providers=...)`) of the same name wins over an alias.
PREFIX_ALIASES: dict[str, str] = {
    # the cloud platforms under their own names (LiteLLM's `azure/`, `bedrock/`), so that a build
    # without them says which provider is missing
    "azure": "azure",
    "bedrock": "bedrock",
    "vertex": "vertex",
    # LiteLLM
    "together_ai": "together",
    "ollama_chat": "ollama",
    "cohere_chat": "cohere",
    "fireworks_ai": "fireworks",
    "lm_studio": "lmstudio",
    "hosted_vllm": "vllm",
    "vertex_ai": "vertex",
    # pydantic-ai
    "google-gla": "gemini",
    "google-vertex": "vertex",
    "grok": "xai",
    # any-llm
    "vertexai": "vertex",
    "azureopenai": "azure",
    "google": "gemini",
}

#: Model-id families and the providers that serve such ids as they are: what a bare id
#: (`gpt-4o`) is matched against, for the error's hint and for `default_provider="auto"`.
MODEL_FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("gpt-", "o1", "o3", "o4-", "chatgpt-"), ("openai", "openai-responses", "azure")),
    (("claude-",), ("anthropic", "vertex")),
    (("gemini-",), ("gemini", "vertex")),
    (("gemma",), ("ollama", "gemini")),
    (("command-", "c4ai-"), ("cohere",)),
    (("mistral-", "ministral-", "magistral-", "codestral-", "devstral-", "pixtral-", "open-mistral-"), ("mistral",)),
    (("deepseek-",), ("deepseek",)),
    (("grok-",), ("xai",)),
    (("sonar",), ("perplexity",)),
)


def serving(model_id: str, known: Mapping[str, Provider]) -> list[str]:
    """The known providers that serve a bare model id as it is, by its family (`MODEL_FAMILIES`)."""
    for prefixes, names in MODEL_FAMILIES:
        if model_id.startswith(prefixes):
            return [name for name in names if name in known]
    return []


def parse_model(model: str, known: Mapping[str, Provider], default_provider: str | None = None) -> tuple[str, str]:
    """Split a model string into (provider name, model id).

    `provider:model` (at the first colon) or `provider/model` with a known provider; then the
    prefixes of other libraries (`PREFIX_ALIASES`: `together_ai/...`, `google-gla:...`); then
    `default_provider` for a string that names no provider ("auto": by the id's family).
    """
    if not isinstance(model, str) or not model.strip():
        raise UnknownProviderError(repr(model), list(known), reason="The model must be a non-empty 'provider:model' string")
    for sep in ":/":
        head, found, rest = model.partition(sep)
        if found and head in known:
            if not rest:
                raise UnknownProviderError(model, list(known), reason=f"No model name after {head!r}")
            return head, rest
    for sep in ":/":
        head, found, rest = model.partition(sep)
        target = PREFIX_ALIASES.get(head) if found and rest else None
        if target is not None:
            if target not in known:
                raise UnknownProviderError(
                    model, list(known),
                    reason=f"{head!r} in model {model!r} stands for provider {target!r}, which this llmrelay does "
                    f"not have; add it with Client(providers={{{target!r}: Provider(...)}})",
                )
            return target, rest
    if default_provider:
        if default_provider == "auto":
            candidates = serving(model, known)
            if candidates:
                return candidates[0], model
        elif default_provider in known:
            return default_provider, model
        else:
            raise UnknownProviderError(model, list(known), reason=f"Unknown default provider {default_provider!r}")
    head = model.split(":", 1)[0]
    if ":" in model and "/" not in head:
        reason = f"Unknown provider {head!r} in model {model!r}"
    else:
        reason = f"No known provider prefix in model {model!r}"
    candidates = serving(model, known)
    if candidates:
        reason = (f"Model {model!r} names no provider; {', '.join(candidates)} serve such models: write "
                  f"'{candidates[0]}:{model}', or set a default provider (Client(default_provider=...) or "
                  "LLMRELAY_DEFAULT_PROVIDER)")
    raise UnknownProviderError(model, list(known), reason=reason, candidates=candidates)


def normalize_base_url(provider: Provider, url: str) -> str:
    url = url.strip().rstrip("/")
    if provider.protocol == "ollama" and "://" not in url:
        # OLLAMA_HOST may be "0.0.0.0", "localhost:11434", "myhost", ":11434", "[::1]", "::1"
        hostport, slash, path = url.partition("/")
        if hostport.startswith("["):  # [ipv6] or [ipv6]:port
            end = hostport.find("]") + 1 or len(hostport)
            host, rest = hostport[:end], hostport[end:]
            port = rest[1:] if rest.startswith(":") else ""
        elif hostport.count(":") > 1:  # a bare IPv6 address
            host, port = f"[{hostport}]", ""
        else:
            host, _, port = hostport.partition(":")
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "[::]":
            host = "[::1]"
        url = f"http://{host}:{port or '11434'}" + (slash + path if path else "")
    return url


def resolve_base_url(provider: Provider, explicit: str | None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if explicit:
        return normalize_base_url(provider, explicit)
    for name in provider.base_url_env + env_names(provider, ("_BASE_URL", "_API_BASE")):
        if env.get(name):
            return normalize_base_url(provider, env[name])
    if not provider.base_url:
        raise UnknownProviderError(
            provider.name, [], reason=f"Provider {provider.name!r} has no default base URL: pass base_url=..."
        )
    return provider.base_url


def resolve_api_key(provider: Provider, explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if explicit:
        return explicit
    names = provider.key_env or env_names(provider, ("_API_KEY",))
    for name in names:
        if env.get(name):
            return env[name]
    if provider.requires_key and not any(env.get(name) for name in provider.token_env):
        raise MissingAPIKeyError(provider.name, names + provider.token_env)
    return None


def resolve_headers(provider: Provider, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers the provider's env vars ask for (`env_headers`, a `token_env` bearer token)."""
    env = os.environ if env is None else env
    headers = {header: env[name] for header, name in provider.env_headers if env.get(name)}
    token = next((env[name] for name in provider.token_env if env.get(name)), None)
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers
