"""Cohere v2 chat: `POST {base}/v2/chat` (SSE, every event named except `data: [DONE]`).

Decisions:

- **Tool plan -> `ReasoningDelta`.** `tool-plan-delta` is the model's own
  reasoning about which tools to call ("I will use the Person tool to…"). It
  is not answer text, so it never reaches `text` / `text_stream`; and it has to
  round-trip: Cohere expects the plan back as `tool_plan` beside the
  `tool_calls` of that assistant turn. A `ReasoningPart` survives
  `Response.to_message()`, a `ProviderEvent` would not; so the plan is
  reasoning, and the encoder sends an assistant turn's reasoning text back as
  its `tool_plan` when that turn has tool calls (reasoning of a turn without
  tool calls is not sent: Cohere has no field for it).
- **Usage.** `message-end.usage` carries `billed_units` (what Cohere charges
  for) and `tokens` (what the model actually processed, prompt template
  included). `tokens` feeds `input_tokens` / `output_tokens` — it is the count
  our convention asks for (all prompt tokens) and the one `cached_tokens` is a
  subset of; `billed_units` is used only when `tokens` is absent. Both stay in
  `Usage.raw` untouched: a cost calculation should read
  `raw["billed_units"]`.
- `finish_reason` "ERROR" gives `Finish("error")`; when the `message-end`
  also carries an error (`error`, `error_type`), a `StreamError` follows so
  the call raises `ProviderStreamError` with the partial response; its `code`
  is Cohere's error type (e.g. INVALID_TOOL_GENERATION), falling back to the
  raw finish reason only when Cohere gives none.
- Params: temperature, max_tokens, top_p -> `p`, stop -> `stop_sequences`,
  seed, thinking_budget -> `thinking: {type: enabled, token_budget}`.
  `reasoning_effort` and `n` have no Cohere equivalent (not in `PARAMS`).
- Tools go out as `{type: function, function: {name, description, parameters}}`.
  `tool_choice` "required" / "none" -> "REQUIRED" / "NONE"; "auto" is Cohere's
  default (no field); a tool name (which Cohere cannot express) sends only
  that tool, with "REQUIRED".
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage
from ..wire import SSEParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, shaped, copy_params

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "thinking_budget"})

FINISH: dict[str, ev.FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
    "TIMEOUT": "error",
}


# -- encoding ---------------------------------------------------------------
def _content(parts: list[Any]) -> str | list[dict[str, Any]]:
    parts = [p for p in parts if isinstance(p, (TextPart, ImagePart))]
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    return [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image_url", "image_url": {"url": p.data_url}}
        for p in parts
    ]


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": _content(m.parts)})
        elif m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant"}
            calls = [p for p in m.parts if isinstance(p, ToolCall)]
            text = m.text
            if text or not calls:
                msg["content"] = text
            if calls:
                plan = "".join(p.text for p in m.parts if isinstance(p, ReasoningPart))
                if plan:
                    msg["tool_plan"] = plan
                msg["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                    for c in calls
                ]
            out.append(msg)
        else:
            out.append({"role": m.role, "content": _content(m.parts)})
    return out


def encode(call: Call) -> HTTPRequest:
    call, native = shaped(call)  # structured output (llmrelay.structured)
    p = call.params
    body: dict[str, Any] = {"model": call.model, "messages": encode_messages(call.messages), "stream": True}
    copy_params(p, body, {
        "temperature": "temperature",
        "max_tokens": "max_tokens",
        "top_p": "p",
        "stop": "stop_sequences",
        "seed": "seed",
    })
    if p.thinking_budget is not None:
        body["thinking"] = {"type": "enabled", "token_budget": p.thinking_budget}
    tools = getattr(call, "tools", None) or []
    choice = getattr(call, "tool_choice", None)
    if choice not in (None, "auto", "none", "required"):
        # Cohere cannot name a tool: offer only that one, and require a call
        tools, choice = [t for t in tools if t.name == choice], "required"
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools
        ]
    if choice in ("none", "required"):
        body["tool_choice"] = choice.upper()
    if native == "json_schema":
        body["response_format"] = {"type": "json_object", "json_schema": call.output.schema}
    elif native == "json_object":
        body["response_format"] = {"type": "json_object"}
    headers = {"authorization": f"Bearer {call.api_key}"} if call.api_key else {}
    return build_request(call, "/v2/chat", body, headers)


# -- decoding ---------------------------------------------------------------
def cohere_usage(u: dict[str, Any], cached: int | None = None) -> Usage:
    """`tokens` feeds the counts (`billed_units` when `tokens` is missing); both stay in `raw`."""
    counts = u.get("tokens") or u.get("billed_units") or {}
    if cached is None:
        cached = u.get("cached_tokens")
    return Usage(
        input_tokens=counts.get("input_tokens"),
        output_tokens=counts.get("output_tokens"),
        cached_input_tokens=cached,
        raw=u,
    )


def _message(obj: dict[str, Any]) -> dict[str, Any]:
    delta = obj.get("delta")
    return (delta.get("message") or {}) if delta else {}


class Decoder(_Decoder):
    framing = SSEParser

    def __init__(self) -> None:
        super().__init__()
        self._tools = ToolCalls()
        self._handlers: dict[Any, Any] = {
            "content-delta": self._content_delta,
            "tool-plan-delta": self._plan_delta,
            "tool-call-delta": self._call_delta,
            "tool-call-start": self._call_start,
            "tool-call-end": self._call_end,
            "content-start": self._content_delta,  # may carry initial text
            "content-end": None,
            "message-start": self._start,
            "message-end": self._end,
            "citation-start": self._citation,
            "citation-end": None,
            "debug": None,
        }

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        if type(obj) is not dict:
            out.append(ev.ProviderEvent(name or "unknown", obj))
            return
        kind = obj.get("type") or name
        handler = self._handlers.get(kind, _unknown)
        if handler is not None:
            handler(obj, out)

    def _content_delta(self, obj: dict[str, Any], out: list) -> None:
        content = _message(obj).get("content")
        if not content:
            return
        text = content.get("text")
        if text:
            out.append(ev.TextDelta(text))
            return
        thinking = content.get("thinking")
        if thinking:
            out.append(ev.ReasoningDelta(thinking))

    def _plan_delta(self, obj: dict[str, Any], out: list) -> None:
        plan = _message(obj).get("tool_plan")
        if plan:
            out.append(ev.ReasoningDelta(plan))

    def _call_start(self, obj: dict[str, Any], out: list) -> None:
        tc = _message(obj).get("tool_calls") or {}
        fn = tc.get("function") or {}
        idx = obj.get("index", 0)
        self._tools.start(idx, tc.get("id"), fn.get("name") or "", out)
        if fn.get("arguments"):
            self._tools.delta(idx, fn["arguments"], out)

    def _call_delta(self, obj: dict[str, Any], out: list) -> None:
        tc = _message(obj).get("tool_calls") or {}
        args = (tc.get("function") or {}).get("arguments")
        if args:
            self._tools.delta(obj.get("index", 0), args, out)

    def _call_end(self, obj: dict[str, Any], out: list) -> None:
        self._tools.end(obj.get("index", 0), out)

    def _start(self, obj: dict[str, Any], out: list) -> None:
        out.append(ev.StreamStart(obj.get("id"), None))

    def _citation(self, obj: dict[str, Any], out: list) -> None:
        out.append(ev.ProviderEvent("citation", _message(obj).get("citations") or obj))

    def _end(self, obj: dict[str, Any], out: list) -> None:
        delta = obj.get("delta") or {}
        reason = delta.get("finish_reason")
        normalized = FINISH.get(reason, "stop") if reason else "stop"
        # a call without its tool-call-end was cut off: never executable
        self._tools.end_all(out, error=f"incomplete: the tool call was cut off (finish_reason {reason!r})")
        usage = delta.get("usage")
        if usage:
            out.append(ev.UsageEvent(cohere_usage(usage)))
        out.append(ev.Finish(normalized, reason))
        self.complete = True
        error = delta.get("error")
        if error or delta.get("error_type"):
            # the provider's error type is the code; the finish reason stays on the response
            detail = error if isinstance(error, dict) else {}
            code = delta.get("error_type") or detail.get("type") or detail.get("code") or reason
            message = detail.get("message") if detail else error
            out.append(ev.StreamError(str(message or code), code=code, data=obj))


def _unknown(obj: dict[str, Any], out: list) -> None:
    out.append(ev.ProviderEvent(obj.get("type") or "unknown", obj))
