"""Turning a caller's arguments into a validated `Call` (pure: no I/O).

Everything a caller can get wrong is checked here, before anything is sent,
and reported as a typed error naming what was wrong.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from ..errors import InvalidRequestError, UnknownProviderError, UnsupportedParameterError
from ..limits import DEFAULT_LIMITS, Limits
from ..timeouts import Timeouts
from ..messages import Message, normalize_messages
from ..call import Call, Params
from ..providers import Provider, parse_model, resolve_api_key, resolve_base_url, resolve_headers

PARAM_NAMES = tuple(Params.__slots__)
#: Per-call options that shape the request (besides the generation params).
CALL_OPTIONS = (
    "extra_body", "extra_headers", "timeout", "api_key", "base_url", "provider", "tools", "tool_choice", "options",
)
#: Per-call options of the control flow around requests.
FLOW_OPTIONS = (
    "max_tool_rounds", "run_tools", "tool_errors", "retry", "middleware", "fallback_mode", "resume_prompt",
    "hooks", "tags", "on_length", "correlation_id", "conversation_id", "text_reset", "wire_body",
)
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


_MODULES: dict[str, Any] = {}


def protocol_module(name: str) -> Any:
    module = _MODULES.get(name)  # called a few times per request: a dict lookup, not the import machinery
    if module is None:
        module = _MODULES[name] = importlib.import_module(f"llmrelay.protocols.{name}")
    return module


def encode(call: Call, wire_body: Any = None) -> Any:
    """The HTTP request of one turn. `wire_body` (the per-call option): a callable `(call) -> dict | None`
    giving, request by request, a JSON body to send as is in place of llmrelay's encoding; the protocol
    still adds the URL, headers and auth. Only protocols with `WIRE_BODY = True` take one (the gateway
    forwards a client's own body to a provider of the same protocol this way)."""
    module = protocol_module(call.provider.protocol)
    if wire_body is not None and getattr(module, "WIRE_BODY", False):
        body = wire_body(call)
        if body is not None:
            return module.encode(call, body)
    return module.encode(call)


@dataclass(slots=True)
class Settings:
    """What a `Client` knows that resolving a model needs (providers, keys, URLs, env)."""

    providers: Mapping[str, Provider]
    aliases: Mapping[str, Any]
    api_keys: Mapping[str, Any]
    base_urls: Mapping[str, str]
    env: Mapping[str, str] | None = None
    #: For model strings that name no provider (`gpt-4o`): a provider name, "auto" (by the id's
    #: family) or None (`LLMRELAY_DEFAULT_PROVIDER` decides; unset: such a string is an error).
    default_provider: str | None = None


_PARAM_SET = frozenset(PARAM_NAMES)


def check_params(raw: dict[str, Any]) -> Params:
    if not raw:
        return Params()  # nothing to check (a call with no generation parameter)
    unknown = sorted(set(raw) - _PARAM_SET)
    if unknown:
        raise InvalidRequestError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))}. Known: {', '.join(PARAM_NAMES)}; "
            "pass provider-specific fields with extra_body={...}."
        )
    p = Params(**raw)
    for name in ("temperature", "top_p"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise InvalidRequestError(f"{name} must be a number (finite, >= 0), got {v!r}")
    for name in ("max_tokens", "seed", "thinking_budget", "n"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise InvalidRequestError(f"{name} must be an integer, got {v!r}")
    for name in ("max_tokens", "n"):
        v = getattr(p, name)
        if v is not None and v < 1:
            raise InvalidRequestError(f"{name} must be at least 1, got {v}")
    if p.thinking_budget is not None and p.thinking_budget < 0:
        raise InvalidRequestError(f"thinking_budget must be >= 0, got {p.thinking_budget}")
    if isinstance(p.stop, str):
        p.stop = [p.stop]
    elif p.stop is not None:
        if not isinstance(p.stop, (list, tuple)) or not all(isinstance(s, str) for s in p.stop):
            raise InvalidRequestError(f"stop must be a string or a list of strings, got {p.stop!r}")
        p.stop = list(p.stop)
    if p.reasoning_effort is not None and p.reasoning_effort not in EFFORTS:
        raise InvalidRequestError(f"reasoning_effort must be one of {', '.join(EFFORTS)}; got {p.reasoning_effort!r}")
    return p


def check_timeouts(value: Any, name: str = "timeout") -> Timeouts:
    """`timeout=`: a `Timeouts` or seconds; every phase None or a finite number >= 0."""
    try:
        t = Timeouts.of(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a Timeouts or a number of seconds, got {value!r}") from None
    for f in fields(t):
        v = getattr(t, f.name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise InvalidRequestError(f"{name}.{f.name} must be None or a finite number of seconds >= 0, got {v!r}")
    return t


def check_limits(value: Any) -> Limits:
    """`limits=`: a `Limits` whose sizes are positive byte counts (None turns max_line / max_body off)."""
    if value is None:
        return DEFAULT_LIMITS
    if not isinstance(value, Limits):
        raise InvalidRequestError(f"limits must be a llmrelay.Limits, got {type(value).__name__}")
    for f in fields(value):
        v = getattr(value, f.name)
        if v is None and f.name != "max_error_body":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidRequestError(f"limits.{f.name} must be a positive number of bytes, got {v!r}")
    return value


def _check_header(opt: str, name: Any, value: Any) -> None:
    if not isinstance(name, str) or not name or any(c in name for c in "\r\n\0:") or name != name.strip():
        raise InvalidRequestError(f"{opt}: header name {name!r} must be a non-empty string without ':', spaces or line breaks")
    if not isinstance(value, str):
        raise InvalidRequestError(f"{opt}[{name!r}] must be a string, got {type(value).__name__}")
    if any(c in value for c in "\r\n\0"):
        raise InvalidRequestError(f"{opt}[{name!r}] contains a line break or NUL (header injection)")


def check_options(options: dict[str, Any]) -> tuple[list[Any] | None, str | None]:
    """Validate request options; returns (tools, tool_choice)."""
    if not options:
        return None, None
    for opt in ("extra_body", "extra_headers", "options"):
        if options.get(opt) is not None and not isinstance(options[opt], dict):
            raise InvalidRequestError(f"{opt} must be a dict, got {type(options[opt]).__name__}")
    if options.get("extra_body"):
        try:
            json.dumps(options["extra_body"], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"extra_body must be strict JSON (no NaN/Infinity, only JSON types): {exc}") from None
    for name, value in (options.get("extra_headers") or {}).items():
        _check_header("extra_headers", name, value)
    for opt in ("api_key", "base_url", "provider"):
        value = options.get(opt)
        if opt == "api_key" and value is not None and not isinstance(value, str):
            continue  # a cloud provider's credentials object (checked where it is resolved)
        if value is not None and (not isinstance(value, str) or any(c in value for c in "\r\n\0")):
            raise InvalidRequestError(f"{opt} must be a string without line breaks, got {type(value).__name__}")
    if "timeout" in options:
        check_timeouts(options["timeout"])
    tools: dict[str, Any] = {}
    if options.get("tools"):
        from ..tools.tool import as_tools  # lazy: pydantic and inspect load only for tool users

        tools = as_tools(options["tools"])
    tool_choice = options.get("tool_choice")
    if tool_choice is not None:
        if not isinstance(tool_choice, str):
            raise InvalidRequestError(
                f"tool_choice must be a string ('auto', 'none', 'required' or a tool name), got {type(tool_choice).__name__}"
            )
        if tool_choice not in ("auto", "none") and not tools:
            raise InvalidRequestError(f"tool_choice={tool_choice!r} needs tools=[...]")
        if tool_choice not in ("auto", "none", "required") and tool_choice not in tools:
            raise InvalidRequestError(
                f"tool_choice must be 'auto', 'none', 'required' or the name of a given tool; got {tool_choice!r}"
            )
    return list(tools.values()) or None, tool_choice


def resolve_model(settings: Settings, model: str, provider: str | None = None) -> tuple[Provider, str]:
    if provider:
        if provider not in settings.providers:
            raise UnknownProviderError(model, list(settings.providers), reason=f"Unknown provider {provider!r}")
        return settings.providers[provider], model
    if isinstance(model, str):  # "provider:model" naming a known provider (parse_model's first rule): no env read
        head, found, rest = model.partition(":")
        if found and rest and head in settings.providers:
            return settings.providers[head], rest
    default = settings.default_provider
    if default is None:
        default = (os.environ if settings.env is None else settings.env).get("LLMRELAY_DEFAULT_PROVIDER") or None
    name, model_id = parse_model(model, settings.providers, default)
    return settings.providers[name], model_id


def build_call(
    settings: Settings,
    model: str,
    messages: list[Message],
    params: Params,
    options: dict[str, Any],
    tools: list[Any] | None,
    tool_choice: str | None,
) -> Call:
    """One target: provider resolved, params checked against it, key and base URL found."""
    provider, model_id = resolve_model(settings, model, options.get("provider"))
    provider = provider.for_model(model_id)
    module = protocol_module(provider.protocol)
    unsupported = [f for f in params.set_fields() if f not in module.PARAMS or f in provider.unsupported]
    if unsupported:
        raise UnsupportedParameterError(
            provider.name, unsupported[0], "Drop it, or pass a provider-specific field with extra_body={...}."
        )
    runtime = options.get("options")
    if runtime and not getattr(module, "RUNTIME_OPTIONS", False):
        raise UnsupportedParameterError(
            provider.name, "options", "options= carries Ollama's runtime options; use extra_body={...} for other providers."
        )
    env = os.environ if settings.env is None else settings.env
    auth = None
    if provider.cloud:
        from ..cloud import resolve  # botocore / google-auth / azure-identity load only for cloud calls

        base_url, auth = resolve(provider, model_id, options.get("api_key") or settings.api_keys.get(provider.name),
                                 options.get("base_url") or settings.base_urls.get(provider.name), env)
        api_key = None
    else:
        base_url = resolve_base_url(provider, options.get("base_url") or settings.base_urls.get(provider.name), env)
        api_key = resolve_api_key(provider, options.get("api_key") or settings.api_keys.get(provider.name), env)
    if api_key is not None and (not isinstance(api_key, str) or any(c in api_key for c in "\r\n\0")):
        raise InvalidRequestError(f"the API key for {provider.name!r} must be a string without line breaks "
                                  "(a key read from a file often ends in a newline)")
    if provider.env_headers or provider.token_env:
        env_headers = resolve_headers(provider, env)
        if env_headers:  # below the protocol's own headers and extra_headers (see protocols.base)
            provider = replace(provider, headers={**provider.headers, **env_headers})
    return Call(
        provider=provider,
        model=model_id,
        base_url=base_url,
        api_key=api_key,
        messages=messages,
        params=params,
        extra_body=options.get("extra_body"),
        extra_headers=options.get("extra_headers"),
        tools=tools,
        tool_choice=tool_choice,
        auth=auth,
        options=runtime or None,
    )


def retarget(settings: Settings, call: Call, model: str) -> Call:
    """The same turn (messages, params, tools) for another model (fallback).

    `extra_body`, `extra_headers`, `options`, `api_key` and `base_url` given for the first
    model are provider-specific, so they follow only to the same provider.
    """
    provider, _ = resolve_model(settings, model)
    same = provider.name == call.provider.name
    options = {"extra_body": call.extra_body, "extra_headers": call.extra_headers, "options": call.options} if same else {}
    new = build_call(settings, model, call.messages, call.params, options, call.tools, call.tool_choice)
    new.timeouts = call.timeouts
    new.output = call.output
    return new


def normalize(messages: Any) -> list[Message]:
    return normalize_messages(messages)
