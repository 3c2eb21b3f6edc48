"""Inbound requests: an OpenAI Chat, Anthropic Messages or OpenAI Responses body as llmrelay arguments.

`parse(protocol, body)` returns an `Inbound`: the model name the client asked
for, whether it streams, and the messages and keyword arguments for
`Client.astream`. Only the translation path needs the messages; the fast path
forwards the client's own body (see `relay.py`), so fields llmrelay does not
model still reach a provider of the same protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall, normalize_messages

__all__ = ["Inbound", "parse"]


@dataclass
class Inbound:
    protocol: str  # openai_chat | anthropic | openai_responses
    model: str
    stream: bool
    body: dict[str, Any]
    messages: list[Message] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    include_usage: bool = False  # OpenAI Chat: the client asked for the usage chunk


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidRequestError(message)


def parse(protocol: str, body: Any) -> Inbound:
    _need(isinstance(body, dict), "the request body must be a JSON object")
    model = body.get("model")
    _need(isinstance(model, str) and bool(model), "model is required (a string)")
    stream = body.get("stream", False)
    _need(isinstance(stream, bool), "stream must be a boolean")
    inbound = Inbound(protocol, model, stream, body)
    if protocol == "openai_chat":
        _openai_chat(body, inbound)
    elif protocol == "anthropic":
        _anthropic(body, inbound)
    else:
        _responses(body, inbound)
    return inbound


def _params(body: dict[str, Any], names: dict[str, str], kw: dict[str, Any]) -> None:
    for wire, ours in names.items():
        if body.get(wire) is not None:
            kw[ours] = body[wire]


def _tool_choice(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return {"any": "required"}.get(value, value) if isinstance(value, str) else None
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in ("auto", "none"):
            return kind
        if kind in ("any", "required"):
            return "required"
        name = value.get("name") or (value.get("function") or {}).get("name")
        if name:
            return name
    raise InvalidRequestError(f"tool_choice {value!r} is not understood")


def _tools(kw: dict[str, Any], body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        _need(isinstance(tools, list), "tools must be a list")
        kw["tools"] = [t for t in tools if not isinstance(t, dict) or t.get("type", "function") in ("function", "custom")
                       or "input_schema" in t]
        if not kw["tools"]:
            del kw["tools"]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and ("tools" in kw or choice in ("auto", "none")):
        kw["tool_choice"] = choice


# -- OpenAI Chat Completions ------------------------------------------------------------------
def _openai_chat(body: dict[str, Any], inbound: Inbound) -> None:
    msgs = body.get("messages")
    _need(isinstance(msgs, list) and bool(msgs), "messages must be a non-empty list")
    inbound.messages = normalize_messages(msgs)
    kw = inbound.kwargs
    _params(body, {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "n": "n",
                   "reasoning_effort": "reasoning_effort", "stop": "stop"}, kw)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        kw["max_tokens"] = limit
    _tools(kw, body)
    opts = body.get("stream_options")
    inbound.include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))


# -- Anthropic Messages -----------------------------------------------------------------------
def _anthropic(body: dict[str, Any], inbound: Inbound) -> None:
    msgs = body.get("messages")
    _need(isinstance(msgs, list) and bool(msgs), "messages: field required (a non-empty list)")
    out: list[Message] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system if isinstance(b, dict))
        out.append(Message.system(text))
    for i, m in enumerate(msgs):
        _need(isinstance(m, dict), f"messages.{i}: must be an object")
        role = m.get("role")
        _need(role in ("user", "assistant"), f"messages.{i}.role: must be user or assistant")
        content = m.get("content")
        if isinstance(content, str):
            out.append(Message(role, [TextPart(content)]))
            continue
        _need(isinstance(content, list), f"messages.{i}.content: must be a string or a list of blocks")
        parts: list[Any] = []
        for j, b in enumerate(content):
            _need(isinstance(b, dict), f"messages.{i}.content.{j}: must be an object")
            kind = b.get("type")
            if kind == "text":
                parts.append(TextPart(b.get("text", "")))
            elif kind == "image":
                src = b.get("source") or {}
                parts.append(ImagePart(data=src.get("data"), media_type=src.get("media_type"))
                             if src.get("type") == "base64" else ImagePart(url=src.get("url")))
            elif kind == "thinking":
                parts.append(ReasoningPart(b.get("thinking", ""), signature=b.get("signature")))
            elif kind == "redacted_thinking":
                parts.append(ReasoningPart("", redacted=b.get("data")))
            elif kind == "tool_use":
                args = b.get("input") or {}
                parts.append(ToolCall(b.get("id"), b.get("name", ""), args, json.dumps(args, ensure_ascii=False)))
            elif kind == "tool_result":
                if parts:
                    out.append(Message(role, parts))
                    parts = []
                result = b.get("content")
                if isinstance(result, list):
                    result = "".join(x.get("text", "") for x in result if isinstance(x, dict))
                out.append(Message.tool(b.get("tool_use_id", ""), result or "", is_error=bool(b.get("is_error"))))
            else:
                raise InvalidRequestError(f"messages.{i}.content.{j}.type: {kind!r} is not supported by this gateway")
        if parts:
            out.append(Message(role, parts))
    inbound.messages = out
    kw = inbound.kwargs
    _params(body, {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens",
                   "stop_sequences": "stop"}, kw)
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and thinking.get("budget_tokens"):
        kw["thinking_budget"] = thinking["budget_tokens"]
    _tools(kw, body)


# -- OpenAI Responses -------------------------------------------------------------------------
def _responses(body: dict[str, Any], inbound: Inbound) -> None:
    items = body.get("input")
    _need(isinstance(items, (str, list)) and bool(items), "input must be a string or a non-empty list")
    out: list[Message] = []
    if body.get("instructions"):
        out.append(Message.system(str(body["instructions"])))
    if isinstance(items, str):
        out.append(Message.user(items))
    else:
        for i, item in enumerate(items):
            _need(isinstance(item, dict), f"input[{i}] must be an object")
            kind = item.get("type", "message")
            if kind == "message":
                role = item.get("role")
                role = "system" if role == "developer" else role
                _need(role in ("system", "user", "assistant"), f"input[{i}].role must be system, developer, user or assistant")
                out.append(normalize_messages([{"role": role, "content": item.get("content")}])[0])
            elif kind == "function_call":
                raw = item.get("arguments") or ""
                try:
                    args = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    args = None
                call = ToolCall(item.get("call_id"), item.get("name", ""), args if isinstance(args, dict) else None, raw)
                if out and out[-1].role == "assistant":
                    out[-1].parts.append(call)
                else:
                    out.append(Message("assistant", [call]))
            elif kind == "function_call_output":
                output = item.get("output")
                if not isinstance(output, str):
                    output = json.dumps(output, ensure_ascii=False)
                out.append(Message.tool(item.get("call_id", ""), output))
            elif kind == "reasoning":
                text = "".join(s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict))
                part = ReasoningPart(text, signature=item.get("encrypted_content"))
                if out and out[-1].role == "assistant":
                    out[-1].parts.append(part)
                else:
                    out.append(Message("assistant", [part]))
            else:
                raise InvalidRequestError(f"input[{i}].type {kind!r} is not supported by this gateway")
    inbound.messages = out
    kw = inbound.kwargs
    _params(body, {"temperature": "temperature", "top_p": "top_p", "max_output_tokens": "max_tokens"}, kw)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        kw["reasoning_effort"] = reasoning["effort"]
    _tools(kw, body)
