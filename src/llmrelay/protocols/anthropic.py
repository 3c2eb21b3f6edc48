"""Anthropic Messages: `POST {base}/v1/messages` (base URL without `/v1`).

Encoding decisions:

- `system` messages (wherever they appear) go to the top-level `system`: a
  string for one, a list of text blocks for several.
- Content is always sent as a list of blocks; consecutive messages of the same
  role are merged into one (tool results become `tool_result` blocks in a user
  message, so consecutive tool results and a following user turn share one).
- Assistant `ReasoningPart`s go back as `thinking` (with their signature) or
  `redacted_thinking` (with their data). A ReasoningPart with neither (reasoning
  from another provider) is dropped: Anthropic rejects unsigned thinking.
  Empty text parts are dropped (Anthropic rejects empty text blocks).
- A `ToolCall` whose arguments never parsed (a call cut by `max_tokens`) goes
  back with `input: {}`.
- `max_tokens` is required by Anthropic. When unset it defaults to
  `DEFAULT_MAX_TOKENS` (4096); with thinking on, to `budget + 4096` so the
  answer keeps 4096 tokens of room after the thinking budget.
- `reasoning_effort` maps to a thinking budget (`EFFORT_BUDGET`): minimal 1024
  (the API minimum), low 2048, medium 8192, high 16384, xhigh 24576; "none"
  sends no `thinking`. An explicit `thinking_budget` wins over the effort.
- `seed` and `n` do not exist in the Messages API (not in `PARAMS`).
- Tools go out as `{name, description, input_schema}`; `tool_choice` "auto" /
  "required" / "none" / a name -> `auto` / `any` / `none` / `{type: tool, name}`.

Decoding: every delta is routed by its content-block `index`. Usage is
merged field by field over the stream (last value wins, never summed) and
normalized: `input_tokens` = `input_tokens` + `cache_read_input_tokens` +
`cache_creation_input_tokens`. Server tools (`server_tool_use`, `*_tool_result`)
and `citations_delta` become `ProviderEvent`s, never caller tool calls. A
`tool_use` still open when `message_delta` brings the stop reason (cut by
`max_tokens`) ends with `arguments=None` and an error: never executable. A
final event without its blank line is flushed at EOF (lenient on purpose:
`tool_use_max_tokens_incomplete_json.sse` ends that way).
"""

from __future__ import annotations

import json
from typing import Any

from .. import events as ev
from ..errors import UnsupportedParameterError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage
from ..wire import SSEParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, merged_turns, parse_arguments, shaped, copy_params

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "reasoning_effort", "thinking_budget"})

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576}

FINISH: dict[str, ev.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: `error.type` of an in-stream `error` event -> the HTTP status it stands for.
ERROR_STATUS: dict[Any, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

#: `tool_choice` -> Anthropic's; a tool name becomes `{"type": "tool", "name": ...}`.
TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}

_CUT = "incomplete: the tool input was cut off (stop_reason {!r})"


# -- encoding ---------------------------------------------------------------
def _image(p: ImagePart) -> dict[str, Any]:
    if p.data is not None:
        source: dict[str, Any] = {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data}
    elif p.url and p.url.startswith("data:"):
        head, _, data = p.url.partition(",")
        source = {"type": "base64", "media_type": head[5:].split(";")[0] or "image/png", "data": data}
    else:
        source = {"type": "url", "url": p.url}
    return {"type": "image", "source": source}


def _blocks(m: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            out.append(_image(p))
        elif isinstance(p, ReasoningPart):
            if m.role != "assistant":
                continue
            if p.redacted is not None:
                out.append({"type": "redacted_thinking", "data": p.redacted})
            elif p.signature is not None:
                out.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
        elif isinstance(p, ToolCall):
            if m.role != "assistant":
                raise UnsupportedParameterError("anthropic", "tool call", f"A tool call can only appear in an assistant message, not {m.role!r}.")
            out.append({"type": "tool_use", "id": p.id, "name": p.name, "input": p.arguments if p.arguments is not None else {}})
    return out


def _tool_result(m: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    if all(isinstance(p, TextPart) for p in m.parts):
        block["content"] = m.text
    else:
        block["content"] = _blocks(Message("user", m.parts))
    if m.is_error:
        block["is_error"] = True
    return block


def encode_messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages with same-role turns merged)."""
    return merged_turns(messages, _blocks, _tool_result, str)


#: `encode` takes a body given as is (the `wire_body` option; see `engine.prepare.encode`).
WIRE_BODY = True


def encode(call: Call, body: dict[str, Any] | None = None) -> HTTPRequest:
    headers = {"anthropic-version": API_VERSION}
    if call.api_key:
        headers["x-api-key"] = call.api_key
    if body is not None:
        return build_request(call, "/v1/messages", body, headers, given=True)
    call, _ = shaped(call)  # structured output: an output tool (llmrelay.structured)
    p = call.params
    system, messages = encode_messages(call.messages)
    budget = p.thinking_budget
    if budget is None and p.reasoning_effort is not None:
        budget = EFFORT_BUDGET.get(p.reasoning_effort)
    max_tokens = p.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS + (budget or 0)
    body = {"model": call.model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    if system:
        body["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]
    copy_params(p, body, {
        "temperature": "temperature",
        "top_p": "top_p",
        "stop": "stop_sequences",
    })
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    tools = getattr(call, "tools", None)
    if tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
    choice = getattr(call, "tool_choice", None)
    if choice is not None:
        body["tool_choice"] = TOOL_CHOICE.get(choice) or {"type": "tool", "name": choice}
    return build_request(call, "/v1/messages", body, headers)


# -- decoding ---------------------------------------------------------------
def anthropic_usage(u: dict[str, Any]) -> Usage:
    """Normalize a (merged) Anthropic usage object: cache reads and writes are added to input."""
    inp = u.get("input_tokens")
    read = u.get("cache_read_input_tokens")
    write = u.get("cache_creation_input_tokens")
    if inp is not None:
        inp += (read or 0) + (write or 0)
    details = u.get("output_tokens_details")
    return Usage(
        input_tokens=inp,
        output_tokens=u.get("output_tokens"),
        cached_input_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=details.get("thinking_tokens") if details else None,
        raw=dict(u),
    )


class Decoder(_Decoder):
    framing = SSEParser

    def __init__(self) -> None:
        super().__init__()
        self._tools = ToolCalls()
        #: block index -> [kind, id, name, input pieces] for server-run tools
        self._server: dict[Any, list[Any]] = {}
        self._usage: dict[str, Any] = {}
        self._finished = False
        self._handlers: dict[Any, Any] = {
            "content_block_delta": self._delta,
            "content_block_start": self._block_start,
            "content_block_stop": self._block_stop,
            "message_start": self._message_start,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "ping": None,
            "error": self._error,
        }

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        kind = obj.get("type") or name if type(obj) is dict else None
        handler = self._handlers.get(kind, _unknown)
        if handler is not None:
            handler(obj, out)

    def _delta(self, obj: dict[str, Any], out: list) -> None:
        d = obj.get("delta") or {}
        kind = d.get("type")
        if kind == "text_delta":
            if d.get("text"):
                out.append(ev.TextDelta(d["text"]))
        elif kind == "input_json_delta":
            idx = obj.get("index")
            server = self._server.get(idx)
            if server is not None:
                server[3].append(d.get("partial_json") or "")
            else:
                self._tools.delta(idx, d.get("partial_json") or "", out)
        elif kind == "thinking_delta":
            if d.get("thinking"):
                out.append(ev.ReasoningDelta(d["thinking"]))
        elif kind == "signature_delta":
            out.append(ev.ReasoningDelta("", signature=d.get("signature")))
        elif kind == "citations_delta":
            out.append(ev.ProviderEvent("citation", d.get("citation")))
        else:
            out.append(ev.ProviderEvent(kind or "content_block_delta", d))

    def _block_start(self, obj: dict[str, Any], out: list) -> None:
        block = obj.get("content_block") or {}
        kind = block.get("type")
        idx = obj.get("index")
        if kind == "text":
            if block.get("text"):
                out.append(ev.TextDelta(block["text"]))
            if block.get("citations"):
                for c in block["citations"]:
                    out.append(ev.ProviderEvent("citation", c))
        elif kind == "thinking":
            if block.get("thinking"):
                out.append(ev.ReasoningDelta(block["thinking"]))
            if block.get("signature"):
                out.append(ev.ReasoningDelta("", signature=block["signature"]))
        elif kind == "redacted_thinking":
            out.append(ev.ReasoningDelta("", redacted=block.get("data", "")))
        elif kind == "tool_use":
            self._tools.start(idx, block.get("id"), block.get("name") or "", out)
            if block.get("input"):
                self._tools.delta(idx, _json(block["input"]), out)
        elif kind in ("server_tool_use", "mcp_tool_use"):
            given = block.get("input")
            self._server[idx] = [kind, block.get("id"), block.get("name"), [_json(given)] if given else []]
        else:  # web_search_tool_result and other server-side results: delivered whole
            out.append(ev.ProviderEvent(kind or "content_block", block))

    def _block_stop(self, obj: dict[str, Any], out: list) -> None:
        idx = obj.get("index")
        if idx in self._tools:
            self._tools.end(idx, out)
            return
        server = self._server.pop(idx, None)
        if server is not None:
            kind, id, name, pieces = server
            raw = "".join(pieces)
            arguments, error = parse_arguments(raw)
            data = {"id": id, "name": name, "input": arguments if arguments is not None else raw}
            if error:
                data["error"] = error
            out.append(ev.ProviderEvent(kind, data))

    def _message_start(self, obj: dict[str, Any], out: list) -> None:
        msg = obj.get("message") or {}
        out.append(ev.StreamStart(msg.get("id"), msg.get("model")))
        usage = msg.get("usage")
        if usage:
            self._usage.update(usage)
            out.append(ev.UsageEvent(anthropic_usage(self._usage)))

    def _message_delta(self, obj: dict[str, Any], out: list) -> None:
        reason = (obj.get("delta") or {}).get("stop_reason")
        if reason:
            # a tool_use block still open here was cut off (max_tokens): never executable
            self._tools.end_all(out, error=_CUT.format(reason))
        usage = obj.get("usage")
        if usage:
            self._usage.update(usage)
            out.append(ev.UsageEvent(anthropic_usage(self._usage)))
        if reason:
            self._finished = True
            out.append(ev.Finish(FINISH.get(reason, "stop"), reason))

    def _message_stop(self, obj: dict[str, Any], out: list) -> None:
        if not self._finished:
            self._tools.end_all(out, error=_CUT.format(None))
            self._finished = True
            out.append(ev.Finish("stop", None))
        self.complete = True

    def _error(self, obj: dict[str, Any], out: list) -> None:
        err = obj.get("error") or obj
        code = err.get("type") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        out.append(ev.StreamError(str(message or err), code=code, status=ERROR_STATUS.get(code), data=obj))


def _unknown(obj: Any, out: list) -> None:
    """An event type this module does not know: kept, never dropped silently."""
    out.append(ev.ProviderEvent(obj.get("type", "unknown") if type(obj) is dict else "unknown", obj))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
