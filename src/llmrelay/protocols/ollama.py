"""Ollama: `POST {base}/api/chat`, NDJSON (one JSON object per line).

Request (`encode`):

- `"stream": true` is always sent: Ollama streams when the key is missing, but
  a server (or proxy) default must never decide the body format.
- A bearer header only when a key is given (a local server needs none).
- Images travel base64 in the message's `images` list. Ollama cannot fetch
  URLs, so an image URL raises `UnsupportedParameterError` (download it and
  pass `ImagePart(data=...)`).
- Assistant tool calls carry `arguments` as a JSON *object*; reasoning goes back
  in `thinking`. Tool results are `role: "tool"` with `tool_name` when known
  (the tool message's `name`, else the name of the call with that id).
- Params -> `options`: temperature, num_predict (`max_tokens`), top_p, stop,
  seed. The caller's `options={...}` (Ollama's runtime options: num_ctx,
  top_k, repeat_penalty, num_predict, ...) merge into the same object, the
  caller winning on a clash; `keep_alive` (a top-level field in Ollama's API)
  is accepted there too and moved to the top level. Thinking -> top-level `think`: `reasoning_effort` "none" -> false,
  "minimal"/"low" -> "low", "medium" -> "medium", "high"/"xhigh" -> "high"
  (level strings are what gpt-oss takes; other thinking models treat them as
  on); `thinking_budget` -> true (false for 0): Ollama has no token budget.
- Tools -> `tools[{type: function, function: {name, description,
  parameters}}]`. Ollama has no tool_choice: "none" leaves the tools out,
  "auto" is the default, "required" or a tool name raise
  `UnsupportedParameterError`.

Response (`Decoder`): `message.content` -> text (inline `<think>…</think>` at
the start of the content, from models run without `think`, becomes
reasoning), `message.thinking` -> reasoning, `message.tool_calls` (whole,
arguments an object) -> tool calls. `/api/generate` bodies (`response` and
`thinking` at top level) decode too. The final `done: true` object gives the
finish (`done_reason`; stop becomes tool_calls when calls were emitted) and
the usage (`prompt_eval_count` in, `eval_count` out; `raw` keeps counts and
durations, never the `context` token array of /api/generate). An
`{"error": "..."}` line is a `StreamError`.
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..errors import UnsupportedParameterError
from ..messages import ImagePart, Message, ReasoningPart, ToolCall
from ..usage import Usage
from ..wire import NDJSONParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, parse_arguments, shaped, copy_params
from .think import ThinkTags

#: `options=` is accepted (Ollama's runtime options).
RUNTIME_OPTIONS = True
#: Fields of `options=` that Ollama takes at the top level of the body.
_TOP_LEVEL = frozenset({"keep_alive"})

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "reasoning_effort", "thinking_budget"})

FINISH: dict[str, ev.FinishReason] = {"stop": "stop", "length": "length"}

_THINK = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}

#: Keys of the final object that are content or bulk, not usage (`context` is a token array).
_NOT_USAGE = frozenset({"model", "created_at", "message", "response", "thinking", "context", "done"})


def _images(m: Message, i: int) -> list[str]:
    out: list[str] = []
    for p in m.parts:
        if isinstance(p, ImagePart):
            if p.data is None or p.url:
                raise UnsupportedParameterError(
                    "ollama", f"messages[{i}] image URL",
                    "Ollama takes images as base64 data only: download it and pass ImagePart(data=..., media_type=...).",
                )
            out.append(p.data)
    return out


def _arguments(c: ToolCall) -> dict[str, Any]:
    if c.arguments is not None:
        return c.arguments
    args, _ = parse_arguments(c.raw_arguments)
    return args or {}


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.role == "tool":
            msg: dict[str, Any] = {"role": "tool", "content": m.text}
            name = m.name or names.get(m.tool_call_id or "")
            if name:
                msg["tool_name"] = name
            out.append(msg)
            continue
        msg = {"role": m.role, "content": m.text}
        images = _images(m, i)
        if images:
            msg["images"] = images
        if m.role == "assistant":
            thinking = "".join(p.text for p in m.parts if isinstance(p, ReasoningPart))
            if thinking:
                msg["thinking"] = thinking
            calls = [p for p in m.parts if isinstance(p, ToolCall)]
            if calls:
                msg["tool_calls"] = [{"function": {"name": c.name, "arguments": _arguments(c)}} for c in calls]
                for c in calls:
                    if c.id:
                        names[c.id] = c.name
        out.append(msg)
    return out


def encode(call: Call) -> HTTPRequest:
    call, native = shaped(call)  # structured output (llmrelay.structured)
    p = call.params
    body: dict[str, Any] = {"model": call.model, "messages": encode_messages(call.messages), "stream": True}
    options: dict[str, Any] = {}
    copy_params(p, options, {
        "temperature": "temperature",
        "max_tokens": "num_predict",
        "top_p": "top_p",
        "stop": "stop",
        "seed": "seed",
    })
    for key, value in (call.options or {}).items():
        if key in _TOP_LEVEL:
            body[key] = value
        else:
            options[key] = value
    if options:
        body["options"] = options
    if p.reasoning_effort is not None:
        body["think"] = _THINK[p.reasoning_effort]
    elif p.thinking_budget is not None:
        body["think"] = p.thinking_budget != 0
    tools = getattr(call, "tools", None)
    choice = getattr(call, "tool_choice", None)
    if choice is not None and choice not in ("auto", "none"):
        raise UnsupportedParameterError(
            "ollama", f"tool_choice={choice!r}", "Ollama only decides by itself: use 'auto' or 'none'.")
    if tools and choice != "none":
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}} for t in tools]
    if native is not None:
        body["format"] = call.output.schema if native == "json_schema" else "json"
    headers = {"accept": "application/x-ndjson"}
    if call.api_key:
        headers["authorization"] = f"Bearer {call.api_key}"
    return build_request(call, "/api/chat", body, headers)


def ollama_usage(obj: dict[str, Any]) -> Usage:
    raw = {k: v for k, v in obj.items() if k not in _NOT_USAGE}
    return Usage(input_tokens=obj.get("prompt_eval_count"), output_tokens=obj.get("eval_count"), raw=raw)


class Decoder(_Decoder):
    framing = NDJSONParser

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._tools = ToolCalls()
        self._calls = 0
        self._think = ThinkTags()

    def _on(self, name: str | None, obj: Any, out: list) -> None:  # a wrong shape: see Decoder._frames
        err = obj.get("error")
        if err is not None:
            if isinstance(err, dict):
                out.append(ev.StreamError(str(err.get("message") or err), code=err.get("code"), data=err))
            else:
                out.append(ev.StreamError(str(err), data=obj))
            return
        if not self._started:
            self._started = True
            out.append(ev.StreamStart(None, obj.get("model")))
        msg = obj.get("message")
        if msg is None:  # /api/generate
            msg = obj
            content = obj.get("response")
        else:
            content = msg.get("content")
        thinking = msg.get("thinking")
        if thinking:
            out.append(ev.ReasoningDelta(thinking))
        if content:
            think = self._think
            if think.state == 2:
                out.append(ev.TextDelta(content))
            else:
                think.feed(content, 0, out)
        calls = msg.get("tool_calls")
        if calls:
            self._tool_calls(calls, out)
        if obj.get("done"):
            self._think.flush(0, out)
            raw = obj.get("done_reason")
            reason = FINISH.get(raw, "stop") if raw else "stop"
            if reason == "stop" and self._calls:
                reason = "tool_calls"
            out.append(ev.Finish(reason, raw))
            out.append(ev.UsageEvent(ollama_usage(obj)))
            self.complete = True

    def _tool_calls(self, calls: list[Any], out: list) -> None:
        for tc in calls:
            if not isinstance(tc, dict):
                continue
            fn = tc.get("function") or {}
            n = self._calls
            self._calls = n + 1
            self._tools.whole(n, tc.get("id") or f"call_{n}", fn.get("name") or "", fn.get("arguments"), out)

    def _at_end(self, out: list) -> None:
        self._think.flush(0, out)
