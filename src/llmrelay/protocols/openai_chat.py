"""OpenAI Chat Completions (and every OpenAI-compatible service): `POST {base}/chat/completions`."""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..errors import UnsupportedParameterError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage, output_with_reasoning
from ..wire import SSEParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, shaped, copy_params
from .think import PLAIN, UNDECIDED, ThinkTags

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "reasoning_effort", "n"})

FINISH: dict[str, ev.FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "model_length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
    "insufficient_system_resource": "error",
}


def encode_messages(messages: list[Message], reasoning_echo: str | None = None) -> list[dict[str, Any]]:
    """Chat messages. `reasoning_echo`: the field that sends a tool-call turn's reasoning back (DeepSeek)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
            continue
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.text or None}
            calls = [p for p in m.parts if isinstance(p, ToolCall)]
            if calls:
                msg["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                    for c in calls
                ]
                if reasoning_echo:
                    reasoning = "".join(p.text for p in m.parts if isinstance(p, ReasoningPart))
                    if reasoning:
                        msg[reasoning_echo] = reasoning
            elif msg["content"] is None:
                msg["content"] = ""
            out.append(msg)
            continue
        content = [p for p in m.parts if not isinstance(p, ReasoningPart)]
        if all(isinstance(p, TextPart) for p in content):
            msg = {"role": m.role, "content": "".join(p.text for p in content)}  # type: ignore[union-attr]
        else:
            msg = {"role": m.role, "content": [_part(p) for p in content]}
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


def _part(p: Any) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ImagePart):
        image: dict[str, Any] = {"url": p.data_url}
        if p.detail:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    raise UnsupportedParameterError("openai_chat", type(p).__name__, "This part type cannot be sent in a chat message.")


#: `encode` takes a body given as is (the `wire_body` option; see `engine.prepare.encode`).
WIRE_BODY = True


def encode(call: Call, body: dict[str, Any] | None = None) -> HTTPRequest:
    headers = {"authorization": f"Bearer {call.api_key}"} if call.api_key else {}
    if body is not None:
        return build_request(call, "/chat/completions", body, headers, given=True)
    call, native = shaped(call)  # structured output (llmrelay.structured)
    p = call.params
    body = {"model": call.model, "messages": encode_messages(call.messages, call.provider.reasoning_echo), "stream": True}
    if call.provider.stream_usage:
        body["stream_options"] = {"include_usage": True}
    copy_params(p, body, {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": call.provider.max_tokens_field,
        "stop": "stop",
        "seed": "seed",
        "n": "n",
        "reasoning_effort": "reasoning_effort",
    })
    if call.tools:
        body["tools"] = [encode_tool(t) for t in call.tools]
    if call.tool_choice is not None:
        body["tool_choice"] = encode_tool_choice(call.tool_choice)
    if native == "json_schema":
        schema, strict = call.output.openai()
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": call.output.name, "schema": schema, "strict": strict}}
    elif native == "json_object":
        body["response_format"] = {"type": "json_object"}
    return build_request(call, "/chat/completions", body, headers)


def encode_tool(tool: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    if tool.strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def encode_tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _count(value: Any) -> int | None:
    """A token count, or None: a provider's odd value never reaches arithmetic."""
    return value if type(value) is int else None


def chat_usage(u: dict[str, Any]) -> Usage:
    prompt_details = u.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    cached = _count(prompt_details.get("cached_tokens"))
    if cached is None:
        cached = _count(u.get("prompt_cache_hit_tokens"))  # DeepSeek
    if cached is None:
        cached = _count(u.get("cached_tokens"))  # Together (top level)
    completion_details = u.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    cost = u.get("cost")
    prompt = _count(u.get("prompt_tokens"))
    reasoning = _count(completion_details.get("reasoning_tokens"))
    return Usage(
        input_tokens=prompt,
        # xAI counts reasoning outside completion_tokens: the total tells (llmrelay.usage)
        output_tokens=output_with_reasoning(_count(u.get("completion_tokens")), reasoning, prompt, _count(u.get("total_tokens"))),
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
        provider_cost=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        raw=u,
    )


def _stream_error(err: Any, out: list) -> None:
    if isinstance(err, dict):
        code = err.get("code")
        status = err.get("status_code")
        if status is None and isinstance(code, int):
            status = code
        message = err.get("message") or str(err)
        out.append(ev.StreamError(str(message), code=code if code is not None else err.get("type"), status=status, data=err))
    else:
        out.append(ev.StreamError(str(err), data=err))


class Decoder(_Decoder):
    framing = SSEParser
    __slots__ = ("_started", "_named", "_tools", "_finished", "_think0", "_think")

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._named = False
        self._tools: ToolCalls | None = None  # made by the first tool call
        self._finished: dict[int, str] | None = None  # made by the first finish_reason
        # choice 0's (the shared UNDECIDED until its first text, then its own, or the shared PLAIN once
        # its text started without <think>); other choices' once they have content (an int-keyed dict
        # is 224 bytes)
        self._think0 = UNDECIDED
        self._think: dict[int, ThinkTags] | None = None

    def _done(self, out: list) -> None:
        self.complete = True

    def _on(self, name: str | None, obj: Any, out: list) -> None:  # a wrong shape: see Decoder._frames
        if not self._named:
            # Azure's first chunk names no model (`model: ""`, `choices: []`): the served model
            # is the one the chunks name once they name one
            model = obj.get("model")
            if model or not self._started:
                self._started = True
                self._named = bool(model)
                out.append(ev.StreamStart(obj.get("id") or None, model or None))
        if name == "error":
            usage = obj.get("usage")
            if usage:
                out.append(ev.UsageEvent(chat_usage(usage)))
            _stream_error(obj.get("error", obj), out)
            return
        choices = obj.get("choices")
        if choices:
            for position, choice in enumerate(choices):
                self._choice(choice, position, out)
        else:
            prompt_filter = obj.get("prompt_filter_results")  # Azure: the prompt's filter categories
            if prompt_filter:
                out.append(ev.ProviderEvent("prompt_filter_results", prompt_filter))
        usage = obj.get("usage")
        if usage is None:
            x_groq = obj.get("x_groq")
            usage = x_groq.get("usage") if x_groq else None
        if usage:
            out.append(ev.UsageEvent(chat_usage(usage)))
        err = obj.get("error")
        if err:
            _stream_error(err, out)

    def _choice(self, choice: dict[str, Any], position: int, out: list) -> None:
        idx = choice.get("index", position)
        if type(idx) is not int:
            idx = position
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                if type(content) is str:
                    think = self._think0 if idx == 0 else self._thinker(idx)
                    if think.state == 2:
                        out.append(ev.TextDelta(content, idx))
                    else:
                        if think is UNDECIDED:
                            think = self._think0 = ThinkTags()
                        think.feed(content, idx, out)
                        if idx == 0 and think.state == 2:
                            self._think0 = PLAIN
                else:
                    self._content_parts(content, idx, out)
            if len(delta) > 1 or not content:  # the bulk of a stream is {"content": ...} alone: no more lookups
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning and type(reasoning) is str:
                    out.append(ev.ReasoningDelta(reasoning, idx))
                refusal = delta.get("refusal")
                if refusal and type(refusal) is str:
                    out.append(ev.RefusalDelta(refusal, idx))
                calls = delta.get("tool_calls")
                if calls:
                    self._tool_calls(calls, idx, out)
        reason = choice.get("finish_reason")
        filters = choice.get("content_filter_results")  # Azure: kept when a category filtered something
        if filters and (reason == "content_filter" or _filtered(filters)):
            out.append(ev.ProviderEvent("content_filter_results", filters, idx))
        if reason and (self._finished is None or self._finished.get(idx) != reason):
            if self._finished is None:
                self._finished = {}
            self._finished[idx] = reason
            ended = self._think0 if idx == 0 else (self._think or {}).get(idx)
            if ended is not None:
                ended.flush(idx, out)
            if self._tools is not None:
                self._tools.end_all(out, choice=idx)
            out.append(ev.Finish(FINISH.get(reason, "stop"), reason, idx))
            self.complete = True

    def _tool_calls(self, calls: list[dict[str, Any]], idx: int, out: list) -> None:
        tools = self._tools
        if tools is None:
            tools = self._tools = ToolCalls()
        for position, tc in enumerate(calls):
            key = (idx, tc.get("index", position))
            fn = tc.get("function") or {}
            if key not in tools:
                id_, name = tc.get("id"), fn.get("name")
                tools.start(key, id_ if type(id_) is str else None, name if type(name) is str else "", out, idx)
            args = fn.get("arguments")
            if args:
                tools.delta(key, args if type(args) is str else _json(args), out)

    @staticmethod
    def _content_parts(parts: list[Any], idx: int, out: list) -> None:
        """Mistral: content as a list of typed parts (`text`, `thinking`)."""
        for part in parts:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            text = part.get("text")
            if kind == "text" and text and type(text) is str:
                out.append(ev.TextDelta(text, idx))
            elif kind == "thinking":
                inner = part.get("thinking")
                if isinstance(inner, str):
                    out.append(ev.ReasoningDelta(inner, idx))
                elif isinstance(inner, list):
                    for piece in inner:
                        if isinstance(piece, dict) and piece.get("text") and type(piece["text"]) is str:
                            out.append(ev.ReasoningDelta(piece["text"], idx))

    def _thinker(self, idx: int) -> ThinkTags:
        if self._think is None:
            self._think = {}
        think = self._think.get(idx)
        if think is None:
            think = self._think[idx] = ThinkTags()
        return think

    def _at_end(self, out: list) -> None:
        self._think0.flush(0, out)
        for idx, think in (self._think or {}).items():
            think.flush(idx, out)
        if self.complete and self._tools is not None:
            # some services (OpenRouter upstreams) never send finish_reason "tool_calls"
            self._tools.end_all(out)


def _filtered(results: Any) -> bool:
    return isinstance(results, dict) and any(
        isinstance(v, dict) and (v.get("filtered") is True or v.get("detected") is True and "filtered" not in v)
        for v in results.values())


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
