"""OpenAI Responses API (and the DeepSeek / OpenRouter Responses endpoints): `POST {base}/responses`.

Encoding (`Message` -> `input` items):

- system messages -> `instructions` (joined with a blank line);
- user -> `{"role": "user", "content": str}` when it is all text, otherwise a
  list of `input_text` / `input_image` parts (`image_url` is a URL or data URL);
- assistant -> its parts in order: text -> a `message` item with
  `output_text`; `ToolCall` -> a `function_call` item (`call_id` = the call id,
  `arguments` = JSON text); a `ReasoningPart` whose signature this module made
  -> a `reasoning` item (see below); other reasoning is dropped (Responses has
  no way to send raw reasoning text back);
- tool -> `{"type": "function_call_output", "call_id", "output"}`.

Tools go out flat, `{"type": "function", "name", "description", "parameters",
"strict"}` (no `function` wrapper as in Chat). `strict` is always sent: the
Responses API treats a missing `strict` as true, which rejects any schema that
is not strict-compatible (optional parameters, no `additionalProperties:
false`), so a tool is strict only when it asks to be. `tool_choice` "auto" /
"none" / "required" go as they are; a tool name becomes `{"type": "function",
"name": ...}`.

Reasoning round trip. A Responses reasoning item is `{id, summary,
encrypted_content}`; the encrypted content is what lets a stateless
(`store: false`) conversation keep the model's reasoning across turns. When a
reasoning item finishes (`response.output_item.done`) with `encrypted_content`,
the decoder closes the reasoning part with
`signature = '{"id":…,"encrypted_content":…}'` (compact JSON; the final
`encrypted_content`, not the partial one `output_item.added` carries). The
encoder turns such a part back into `{"type": "reasoning", "id", "summary":
[{"type": "summary_text", "text"}] or [], "encrypted_content"}`. Setting
`reasoning_effort` sends `reasoning: {effort, summary: "auto"}` and `include:
["reasoning.encrypted_content"]`; without it, pass `extra_body={"include": [...]}`.

Decoding dispatches on the payload's `type` (OpenRouter sends `data:` only).
Summary parts (`summary_index`) and separate reasoning items that arrive without
a signature between them are joined with a blank line, so they stay apart in
one reasoning part. Built-in tools (`web_search_call`, `file_search_call`,
`code_interpreter_call`, MCP, …) become `ProviderEvent`s, never tool calls;
annotations (citations) become `ProviderEvent("annotation", …)`.
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..errors import UnsupportedParameterError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage, output_with_reasoning
from ..wire import SSEParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, dumps, loads, shaped, copy_params

#: `stop`, `seed`, `n` and `thinking_budget` do not exist in the Responses API.
PARAMS = frozenset({"temperature", "max_tokens", "top_p", "reasoning_effort"})

#: `incomplete_details.reason` -> normalized finish reason.
INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

#: Output items run by the provider (their `response.<kind>.*` events become ProviderEvents).
BUILTIN = (
    "web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
    "computer_call", "local_shell_call", "shell_call", "apply_patch_call", "mcp_",
)

_SEP = "\n\n"


# -- encoding -------------------------------------------------------------------
def encode_input(messages: list[Message]) -> tuple[list[dict[str, Any]], str | None]:
    """`(input items, instructions)` for a conversation."""
    items: list[dict[str, Any]] = []
    system: list[str] = []
    for m in messages:
        role = m.role
        if role == "system":
            system.append(m.text)
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
        elif role == "assistant":
            _assistant(m, items)
        else:
            parts = [p for p in m.parts if not isinstance(p, ReasoningPart)]
            if all(isinstance(p, TextPart) for p in parts):
                items.append({"role": role, "content": "".join(p.text for p in parts)})  # type: ignore[union-attr]
            else:
                items.append({"role": role, "content": [_input_part(p) for p in parts]})
    return items, (_SEP.join(system) if system else None)


def _input_part(p: Any) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "input_text", "text": p.text}
    if isinstance(p, ImagePart):
        part: dict[str, Any] = {"type": "input_image", "image_url": p.data_url}
        if p.detail:
            part["detail"] = p.detail
        return part
    raise UnsupportedParameterError("openai_responses", type(p).__name__, "This part type cannot be sent in a user message.")


def _assistant(m: Message, items: list[dict[str, Any]]) -> None:
    text: list[str] = []

    def flush() -> None:
        if text:
            items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "".join(text)}]})
            text.clear()

    for p in m.parts:
        if isinstance(p, TextPart):
            if p.text:
                text.append(p.text)
        elif isinstance(p, ToolCall):
            flush()
            items.append({"type": "function_call", "call_id": p.id, "name": p.name, "arguments": p.arguments_json})
        elif isinstance(p, ReasoningPart):
            item = reasoning_item(p)
            if item is not None:
                flush()
                items.append(item)
    flush()


def reasoning_item(p: ReasoningPart) -> dict[str, Any] | None:
    """The `reasoning` input item for a part this module's decoder signed, else None."""
    sig = p.signature
    if not sig or sig[:1] != "{":
        return None
    try:
        data = loads(sig)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("encrypted_content"):
        return None
    item: dict[str, Any] = {"type": "reasoning"}
    if data.get("id"):
        item["id"] = data["id"]
    item["summary"] = [{"type": "summary_text", "text": p.text}] if p.text else []
    item["encrypted_content"] = data["encrypted_content"]
    return item


def reasoning_signature(item: dict[str, Any]) -> str | None:
    enc = item.get("encrypted_content")
    if not enc:
        return None
    return dumps({"id": item.get("id"), "encrypted_content": enc}).decode("utf-8")


#: `encode` takes a body given as is (the `wire_body` option; see `engine.prepare.encode`).
WIRE_BODY = True


def encode(call: Call, body: dict[str, Any] | None = None) -> HTTPRequest:
    headers = {"authorization": f"Bearer {call.api_key}"} if call.api_key else {}
    if body is not None:
        return build_request(call, "/responses", body, headers, given=True)
    call, native = shaped(call)  # structured output (llmrelay.structured)
    p = call.params
    items, instructions = encode_input(call.messages)
    body = {"model": call.model}
    if instructions is not None:
        body["instructions"] = instructions
    body["input"] = items
    body["stream"] = True
    copy_params(p, body, {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_output_tokens",
    })
    if p.reasoning_effort is not None:
        body["reasoning"] = {"effort": p.reasoning_effort, "summary": "auto"}
        body["include"] = ["reasoning.encrypted_content"]
    if call.tools:
        body["tools"] = [encode_tool(t) for t in call.tools]
    if call.tool_choice is not None:
        body["tool_choice"] = encode_tool_choice(call.tool_choice)
    if native == "json_schema":
        schema, strict = call.output.openai()
        body["text"] = {"format": {"type": "json_schema", "name": call.output.name, "schema": schema, "strict": strict}}
    elif native == "json_object":
        body["text"] = {"format": {"type": "json_object"}}
    return build_request(call, "/responses", body, headers)


def encode_tool(tool: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    out["strict"] = bool(tool.strict)
    return out


def encode_tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}


# -- decoding -------------------------------------------------------------------
def responses_usage(u: dict[str, Any]) -> Usage:
    itd = u.get("input_tokens_details") or {}
    otd = u.get("output_tokens_details") or {}
    cost = u.get("cost")  # OpenRouter
    prompt, reasoning = u.get("input_tokens"), otd.get("reasoning_tokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=output_with_reasoning(u.get("output_tokens"), reasoning, prompt, u.get("total_tokens")),
        cached_input_tokens=itd.get("cached_tokens"),
        reasoning_tokens=reasoning,
        provider_cost=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        raw=u,
    )


def _error(err: Any, out: list, default: str) -> None:
    if isinstance(err, dict):
        code = err.get("code")
        if code is None:
            code = err.get("type")
        out.append(ev.StreamError(str(err.get("message") or default), code=code, data=err))
    else:
        out.append(ev.StreamError(str(err) if err else default, data=err))


class Decoder(_Decoder):
    framing = SSEParser

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._tools = ToolCalls()
        self._calls = 0
        #: output_index -> function-call item id (argument events may lack `item_id`).
        self._by_index: dict[Any, str] = {}
        #: function-call keys whose arguments were streamed as deltas.
        self._args: set[Any] = set()
        #: (kind, item_id, index) of text/refusal/reasoning that arrived as deltas.
        self._seen: set[tuple[Any, ...]] = set()
        #: key of the reasoning piece last emitted, None once anything else came in between.
        self._rkey: tuple[Any, ...] | None = None

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        if type(obj) is not dict:
            return
        t = obj.get("type")
        handler = _HANDLERS.get(t)  # type: ignore[arg-type]
        if handler is not None:
            handler(self, obj, out)
        elif type(t) is str and t.startswith("response.") and t[9:].startswith(BUILTIN):
            out.append(ev.ProviderEvent(t[9:], obj))

    # -- lifecycle --------------------------------------------------------------
    def _start(self, obj: dict[str, Any], out: list) -> None:
        if not self._started:
            self._started = True
            r = obj.get("response") or {}
            out.append(ev.StreamStart(r.get("id"), r.get("model")))

    def _usage(self, r: dict[str, Any], out: list) -> None:
        u = r.get("usage")
        if u:
            out.append(ev.UsageEvent(responses_usage(u)))

    def _completed(self, obj: dict[str, Any], out: list) -> None:
        self._start(obj, out)
        r = obj.get("response") or {}
        self._tools.end_all(out)
        self._usage(r, out)
        out.append(ev.Finish("tool_calls" if self._calls else "stop", r.get("status") or "completed"))
        self.complete = True

    def _incomplete(self, obj: dict[str, Any], out: list) -> None:
        self._start(obj, out)
        r = obj.get("response") or {}
        self._tools.end_all(out)
        self._usage(r, out)
        reason = (r.get("incomplete_details") or {}).get("reason") or "incomplete"
        out.append(ev.Finish(INCOMPLETE.get(reason, "length"), reason))  # type: ignore[arg-type]
        self.complete = True

    def _failed(self, obj: dict[str, Any], out: list) -> None:
        self._start(obj, out)
        r = obj.get("response") or {}
        self._usage(r, out)
        _error(r.get("error"), out, "the response failed")

    def _error_event(self, obj: dict[str, Any], out: list) -> None:
        err = obj.get("error")
        if not isinstance(err, dict):  # the event itself: {"type": "error", "code", "message", "param"}
            err = {k: v for k, v in obj.items() if k != "type"}
        _error(err, out, "error event")

    # -- content ----------------------------------------------------------------
    def _text(self, obj: dict[str, Any], out: list) -> None:
        d = obj.get("delta")
        if d:
            self._rkey = None
            self._seen.add(("t", obj.get("item_id"), obj.get("content_index")))
            out.append(ev.TextDelta(d))

    def _text_done(self, obj: dict[str, Any], out: list) -> None:
        if ("t", obj.get("item_id"), obj.get("content_index")) not in self._seen:
            self._text({**obj, "delta": obj.get("text")}, out)

    def _refusal(self, obj: dict[str, Any], out: list) -> None:
        d = obj.get("delta")
        if d:
            self._seen.add(("r", obj.get("item_id"), obj.get("content_index")))
            out.append(ev.RefusalDelta(d))

    def _refusal_done(self, obj: dict[str, Any], out: list) -> None:
        if ("r", obj.get("item_id"), obj.get("content_index")) not in self._seen:
            self._refusal({**obj, "delta": obj.get("refusal")}, out)

    def _reason(self, key: tuple[Any, ...], text: Any, out: list) -> None:
        if not text:
            return
        self._seen.add(key)
        if self._rkey is not None and self._rkey != key:
            text = _SEP + text
        self._rkey = key
        out.append(ev.ReasoningDelta(text))

    def _summary(self, obj: dict[str, Any], out: list) -> None:
        self._reason(("s", obj.get("item_id"), obj.get("summary_index")), obj.get("delta"), out)

    def _summary_done(self, obj: dict[str, Any], out: list) -> None:
        key = ("s", obj.get("item_id"), obj.get("summary_index"))
        if key not in self._seen:
            self._reason(key, obj.get("text"), out)

    def _reasoning(self, obj: dict[str, Any], out: list) -> None:
        self._reason(("c", obj.get("item_id"), obj.get("content_index")), obj.get("delta"), out)

    def _reasoning_done(self, obj: dict[str, Any], out: list) -> None:
        key = ("c", obj.get("item_id"), obj.get("content_index"))
        if key not in self._seen:
            self._reason(key, obj.get("text"), out)

    def _annotation(self, obj: dict[str, Any], out: list) -> None:
        out.append(ev.ProviderEvent("annotation", obj.get("annotation", obj)))

    # -- output items and function calls ----------------------------------------
    def _item_added(self, obj: dict[str, Any], out: list) -> None:
        item = obj.get("item") or {}
        if item.get("type") == "function_call":
            key: Any = item.get("id") or obj.get("output_index")
            self._by_index[obj.get("output_index")] = key
            if key not in self._tools:
                self._rkey = None
                self._calls += 1
                self._tools.start(key, item.get("call_id"), item.get("name") or "", out)

    def _item_done(self, obj: dict[str, Any], out: list) -> None:
        item = obj.get("item") or {}
        kind = item.get("type")
        if kind == "function_call":
            key = item.get("id") or self._by_index.get(obj.get("output_index"))
            if key not in self._tools:
                if key in self._args:
                    return  # already ended by `function_call_arguments.done`
                self._item_added(obj, out)  # `added` never came (a resumed stream): the call arrives whole
                key = item.get("id") or obj.get("output_index")
            self._finish_call(key, item.get("arguments"), out)
        elif kind == "reasoning":
            sig = reasoning_signature(item)
            if sig is not None:
                self._rkey = None
                out.append(ev.ReasoningDelta("", signature=sig))
        elif kind != "message" and kind:
            out.append(ev.ProviderEvent(kind, item))

    def _key(self, obj: dict[str, Any]) -> Any:
        key = obj.get("item_id")
        if key is None or key not in self._tools:
            key = self._by_index.get(obj.get("output_index"), key)
        return key

    def _args_delta(self, obj: dict[str, Any], out: list) -> None:
        d = obj.get("delta")
        if d:
            key = self._key(obj)
            self._args.add(key)
            self._tools.delta(key, d, out)

    def _args_done(self, obj: dict[str, Any], out: list) -> None:
        self._finish_call(self._key(obj), obj.get("arguments"), out)

    def _finish_call(self, key: Any, arguments: Any, out: list) -> None:
        if key not in self._tools:
            return
        if key not in self._args:
            self._args.add(key)
            if arguments:
                self._tools.delta(key, arguments if type(arguments) is str else dumps(arguments).decode("utf-8"), out)
        self._tools.end(key, out)


_D = Decoder
_HANDLERS: dict[str, Any] = {
    "response.output_text.delta": _D._text,
    "response.output_text.done": _D._text_done,
    "response.function_call_arguments.delta": _D._args_delta,
    "response.function_call_arguments.done": _D._args_done,
    "response.reasoning_summary_text.delta": _D._summary,
    "response.reasoning_summary_text.done": _D._summary_done,
    "response.reasoning_text.delta": _D._reasoning,
    "response.reasoning_text.done": _D._reasoning_done,
    "response.refusal.delta": _D._refusal,
    "response.refusal.done": _D._refusal_done,
    "response.output_item.added": _D._item_added,
    "response.output_item.done": _D._item_done,
    "response.output_text.annotation.added": _D._annotation,
    "response.created": _D._start,
    "response.queued": _D._start,
    "response.in_progress": _D._start,
    "response.completed": _D._completed,
    "response.incomplete": _D._incomplete,
    "response.failed": _D._failed,
    "error": _D._error_event,
}
