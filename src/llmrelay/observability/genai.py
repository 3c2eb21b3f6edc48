"""GenAI semantic-convention attributes for `tracing.py`: names, request and response
attributes of one inference (one HTTP request), content as the conventions' JSON.

Pure functions over llmrelay's own objects; nothing here imports opentelemetry.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: llmrelay provider -> `gen_ai.provider.name` (latest); other names pass through.
PROVIDER_NAMES = {
    "openai-responses": "openai", "gemini": "gcp.gemini", "cohere-v1": "cohere", "mistral": "mistral_ai", "xai": "x_ai",
}
#: llmrelay provider -> `gen_ai.system` (v1.36).
SYSTEM_NAMES = {"openai-responses": "openai", "gemini": "gcp.gemini", "cohere-v1": "cohere", "mistral": "mistral_ai"}
#: Usage field -> attribute. On inference (CLIENT) spans as `gen_ai.usage.*`; the call (INTERNAL)
#: span sums them under `llmrelay.call.usage.*` so a backend summing gen_ai.usage never counts twice.
USAGE = (
    ("input_tokens", "gen_ai.usage.input_tokens"), ("output_tokens", "gen_ai.usage.output_tokens"),
    ("cached_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
)
CALL_USAGE = tuple((name, "llmrelay.call.usage." + name) for name, _ in USAGE)


def provider_attr(provider: str, latest: bool) -> tuple[str, str]:
    if latest:
        return "gen_ai.provider.name", PROVIDER_NAMES.get(provider, provider)
    return "gen_ai.system", SYSTEM_NAMES.get(provider, provider)


def first_model(requested: Any) -> str:
    if hasattr(requested, "models"):
        requested = requested.models
    if isinstance(requested, (list, tuple)) and requested:
        requested = requested[0]
    return str(requested).partition(":")[2] or str(requested) if requested is not None else ""


def error_type(exc: BaseException | None) -> str:
    return type(exc).__qualname__ if exc is not None else "_OTHER"


def wire_streams(request: Any) -> bool:
    """Whether the HTTP request asked for a streamed response. Every llmrelay encoder streams
    (`stream: true`, `streamGenerateContent`, ...), also for `complete()`; an explicit
    `"stream": false` in the body (a caller's extra_body) says otherwise."""
    body = getattr(request, "json", None)
    return not (isinstance(body, dict) and body.get("stream") is False)


def request_attrs(call: Any, request: Any, latest: bool) -> dict[str, Any]:
    """The inference span's request attributes (also the metrics' base attributes)."""
    key, value = provider_attr(call.provider.name, latest)
    a: dict[str, Any] = {"gen_ai.operation.name": "chat", key: value, "gen_ai.request.model": call.model}
    p = call.params
    for name, attr in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                       ("seed", "seed"), ("stop", "stop_sequences")):
        v = getattr(p, name)
        if v is not None:
            a["gen_ai.request." + attr] = list(v) if name == "stop" else v
    if p.n is not None and p.n != 1:
        a["gen_ai.request.choice.count"] = p.n
    # reasoning settings: the effort level under the GenAI registry's name, the budget as ours
    if p.reasoning_effort is not None:
        a["gen_ai.request.reasoning.level"] = p.reasoning_effort
    if p.thinking_budget is not None:
        a["llmrelay.request.thinking_budget"] = p.thinking_budget
    try:
        url = urlsplit(request.url)
        if url.hostname:
            a["server.address"] = url.hostname
            a["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        pass
    return a


def response_attrs(r: Any) -> dict[str, Any]:
    """The inference span's response attributes: ids, finish reasons, usage, timings, cost."""
    a: dict[str, Any] = {"llmrelay.status": r.status}
    if r.id:
        a["gen_ai.response.id"] = r.id
    if r.model:
        a["gen_ai.response.model"] = r.model
    reasons = [c.finish_reason for c in r.choices if c.finish_reason]
    if reasons:
        a["gen_ai.response.finish_reasons"] = reasons
    for name, attr in USAGE:
        v = getattr(r.usage, name)
        if v is not None:
            a[attr] = v
    if r.usage.estimated:
        a["llmrelay.usage.estimated"] = True
    if r.request_id:
        a["llmrelay.response.request_id"] = r.request_id
    t = r.timings
    if t.time_to_first_token is not None:
        a["gen_ai.response.time_to_first_chunk"] = t.time_to_first_token
    if t.time_to_first_text is not None:
        a["llmrelay.response.time_to_first_text"] = t.time_to_first_text
    if t.time_per_output_chunk is not None:
        a["llmrelay.response.time_per_output_chunk"] = t.time_per_output_chunk
    cost = cost_of(r)
    if cost is not None:
        a["llmrelay.cost.usd"] = cost.total
        if cost.estimated:
            a["llmrelay.cost.estimated"] = True
    return a


def cost_of(r: Any) -> Any:
    """The response's `Cost` when it is known, else None (never raises: tracing must not break a call)."""
    try:
        cost = r.cost
    except Exception:  # noqa: BLE001
        return None
    return cost if cost.total is not None else None


def part(p: Any) -> dict[str, Any]:
    t = getattr(p, "type", None)
    if t == "text":
        return {"type": "text", "content": p.text}
    if t == "reasoning":
        return {"type": "reasoning", "content": p.text}
    if t == "tool_call":
        return {"type": "tool_call", "id": p.id, "name": p.name,
                "arguments": p.arguments if p.arguments is not None else p.raw_arguments}
    if t == "image":  # never the inline data
        if p.url and not p.url.startswith("data:"):
            return {"type": "uri", "modality": "image", "uri": p.url}
        return {"type": "blob", "modality": "image", "mime_type": p.media_type}
    return {"type": str(t)}


def messages_json(messages: Any) -> tuple[str, str | None]:
    """(gen_ai.input.messages, gen_ai.system_instructions) as JSON strings."""
    out: list[Any] = []
    system: list[Any] = []
    for m in messages:
        if m.role == "system":
            system.extend(part(p) for p in m.parts)
        elif m.role == "tool":
            out.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}]})
        else:
            out.append({"role": m.role, "parts": [part(p) for p in m.parts]})
    return dumps(out), (dumps(system) if system else None)


def output_json(r: Any) -> str:
    return dumps([{"role": "assistant", "parts": [part(p) for p in c.parts], "finish_reason": c.finish_reason or ""}
                  for c in r.choices])


def tool_definitions(tools: Any) -> str:
    return dumps([{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                  for t in tools if hasattr(t, "parameters")])


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
