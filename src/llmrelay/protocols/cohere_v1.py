"""Legacy Cohere v1 chat: `POST {base}/v1/chat`, NDJSON (`application/stream+json`).

Each line has `event_type` and `is_finished`. Decoding:

- `text-generation` -> `TextDelta`.
- `tool-calls-chunk` -> its `text` is the tool plan, a `ReasoningDelta` (as in
  Cohere v2, see `llmrelay.protocols.cohere`); its `tool_call_delta`
  (`index`, `name`, `parameters` fragments) -> tool-call start / delta.
- `tool-calls-generation` closes the streamed calls (or delivers them whole
  when none were streamed); its `text` repeats the plan and is not re-emitted.
- `stream-end` repeats the whole response: its text is never appended again.
  It gives the finish reason and usage (`response.meta`: `tokens` feeds the
  counts, `billed_units` stays in `raw`, as in v2). v1 reports "COMPLETE"
  for a turn that ends in tool calls: normalized to "tool_calls" then (the raw
  reason stays "COMPLETE").

The encoder is minimal: the last user message is `message`, earlier turns are
`chat_history` (USER / CHATBOT / SYSTEM, assistant tool calls kept), system
messages join into `preamble`. Tool definitions, tool results and images
need Cohere v2 (the `cohere` provider): they raise `UnsupportedParameterError`
(pass v1 `tools` through `extra_body` if you must).
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..errors import InvalidRequestError, UnsupportedParameterError
from ..messages import ImagePart, Message
from ..wire import NDJSONParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, shaped, copy_params
from .cohere import cohere_usage

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed"})

FINISH: dict[str, ev.FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "USER_CANCEL": "stop",
    "MAX_TOKENS": "length",
    "ERROR_LIMIT": "length",
    "ERROR_TOXIC": "content_filter",
    "ERROR": "error",
}

_ROLES = {"user": "USER", "assistant": "CHATBOT", "system": "SYSTEM"}


def _check(m: Message) -> None:
    if m.role == "tool":
        raise UnsupportedParameterError("cohere-v1", "tool messages", "Send tool results with the 'cohere' (v2) provider.")
    if any(isinstance(p, ImagePart) for p in m.parts):
        raise UnsupportedParameterError("cohere-v1", "images", "Send images with the 'cohere' (v2) provider.")


def encode(call: Call) -> HTTPRequest:
    call, native = shaped(call)  # structured output (llmrelay.structured)
    if getattr(call, "tools", None):
        raise UnsupportedParameterError("cohere-v1", "tools", "Use the 'cohere' (v2) provider for tools.")
    messages = call.messages
    for m in messages:
        _check(m)
    system = [m.text for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":
        raise InvalidRequestError("Cohere v1 needs the conversation to end with a user message")
    history: list[dict[str, Any]] = []
    for m in turns[:-1]:
        entry: dict[str, Any] = {"role": _ROLES[m.role], "message": m.text}
        calls = m.tool_calls
        if calls:
            entry["tool_calls"] = [{"name": c.name, "parameters": c.arguments or {}} for c in calls]
        history.append(entry)
    body: dict[str, Any] = {"model": call.model, "message": turns[-1].text, "chat_history": history, "stream": True}
    if system:
        body["preamble"] = "\n\n".join(system)
    p = call.params
    copy_params(p, body, {
        "temperature": "temperature",
        "max_tokens": "max_tokens",
        "top_p": "p",
        "stop": "stop_sequences",
        "seed": "seed",
    })
    if native == "json_schema":
        body["response_format"] = {"type": "json_object", "schema": call.output.schema}
    elif native == "json_object":
        body["response_format"] = {"type": "json_object"}
    headers = {"accept": "application/stream+json"}
    if call.api_key:
        headers["authorization"] = f"Bearer {call.api_key}"
    return build_request(call, "/v1/chat", body, headers)


class Decoder(_Decoder):
    framing = NDJSONParser

    def __init__(self) -> None:
        super().__init__()
        self._tools = ToolCalls()
        self._seen: set[int] = set()
        self._handlers: dict[Any, Any] = {
            "text-generation": self._text,
            "tool-calls-chunk": self._chunk,
            "tool-calls-generation": self._generation,
            "stream-start": self._start,
            "stream-end": self._end,
        }

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        if type(obj) is not dict:
            out.append(ev.ProviderEvent("unknown", obj))
            return
        kind = obj.get("event_type")
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(obj, out)
        else:  # search-queries-generation, search-results, citation-generation…
            out.append(ev.ProviderEvent(kind or "unknown", obj))

    def _text(self, obj: dict[str, Any], out: list) -> None:
        if obj.get("text"):
            out.append(ev.TextDelta(obj["text"]))

    def _chunk(self, obj: dict[str, Any], out: list) -> None:
        delta = obj.get("tool_call_delta")
        if delta:
            idx = delta.get("index", 0)
            if idx not in self._seen:
                self._seen.add(idx)
                self._tools.start(idx, None, delta.get("name") or "", out)
            if delta.get("parameters"):
                self._tools.delta(idx, delta["parameters"], out)
        elif obj.get("text"):
            out.append(ev.ReasoningDelta(obj["text"]))

    def _generation(self, obj: dict[str, Any], out: list) -> None:
        for i, tc in enumerate(obj.get("tool_calls") or ()):
            if i in self._tools:
                self._tools.end(i, out)
            elif i not in self._seen:
                self._seen.add(i)
                self._tools.whole(i, None, tc.get("name") or "", tc.get("parameters"), out)

    def _start(self, obj: dict[str, Any], out: list) -> None:
        out.append(ev.StreamStart(obj.get("generation_id"), None))

    def _end(self, obj: dict[str, Any], out: list) -> None:
        response = obj.get("response") or {}
        reason = obj.get("finish_reason") or response.get("finish_reason")
        self._tools.end_all(out, error=f"incomplete: the tool call was cut off (finish_reason {reason!r})")
        meta = response.get("meta")
        if meta and (meta.get("tokens") or meta.get("billed_units")):
            out.append(ev.UsageEvent(cohere_usage(meta)))
        normalized = FINISH.get(reason, "stop") if reason else "stop"
        if normalized == "stop" and self._seen:
            normalized = "tool_calls"
        out.append(ev.Finish(normalized, reason))
        self.complete = True
