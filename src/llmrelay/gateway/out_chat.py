"""llmrelay events as OpenAI Chat Completions chunks (and the non-streaming `chat.completion`)."""

from __future__ import annotations

from typing import Any

from .. import events as ev
from .encode import Encoder, chat_usage, new_id, status_of

_BULK = frozenset((ev.TextDelta, ev.ReasoningDelta, ev.RefusalDelta))
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter", "error": "stop"}


class ChatEncoder(Encoder):
    protocol = "openai_chat"

    def __init__(self, model: str, include_usage: bool = False):
        super().__init__(model, include_usage)
        self.id = new_id("chatcmpl-")
        self.started: set[int] = set()
        self.tools: dict[tuple[int, int], int] = {}  # (choice, llmrelay index) -> wire index
        self.with_args: set[tuple[int, int]] = set()

    def observe(self, e: Any) -> None:
        if type(e) in _BULK and e.choice in self.started:
            return  # the relayed bulk: nothing to remember
        super().observe(e)

    def _chunk(self, choice: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self.quiet:
            return b""
        return self._sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                          "choices": [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    def _role(self, choice: int) -> bytes:
        if choice in self.started:
            return b""
        self.started.add(choice)
        return self._chunk(choice, {"role": "assistant", "content": ""})

    def encode(self, e: Any) -> bytes:
        t = type(e)
        if t is ev.TextDelta:
            return self._role(e.choice) + self._chunk(e.choice, {"content": e.text})
        if t is ev.ReasoningDelta:
            if not e.text:
                return b""
            return self._role(e.choice) + self._chunk(e.choice, {"reasoning_content": e.text})
        if t is ev.ToolCallStart:
            index = self.tools[(e.choice, e.index)] = len([k for k in self.tools if k[0] == e.choice])
            call = {"index": index, "id": e.id or new_id("call_"), "type": "function",
                    "function": {"name": e.name, "arguments": ""}}
            return self._role(e.choice) + self._chunk(e.choice, {"tool_calls": [call]})
        if t is ev.ToolCallDelta:
            index = self.tools.get((e.choice, e.index), e.index)
            self.with_args.add((e.choice, e.index))
            return self._chunk(e.choice, {"tool_calls": [{"index": index, "function": {"arguments": e.arguments}}]})
        if t is ev.ToolCallEnd:
            if (e.choice, e.index) in self.with_args:
                return b""
            index = self.tools.get((e.choice, e.index), e.index)  # no arguments at all: "{}", as OpenAI sends
            return self._chunk(e.choice, {"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]})
        if t is ev.RefusalDelta:
            return self._role(e.choice) + self._chunk(e.choice, {"refusal": e.text})
        if t is ev.Finish:
            return self._role(e.choice) + self._chunk(e.choice, {}, _FINISH.get(e.reason, "stop"))
        return self._meta(e)

    def _end(self) -> bytes:
        out = b""
        if self.include_usage:
            out = self._sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "choices": [], "usage": chat_usage(self.usage)})
        return out + b"data: [DONE]\n\n"

    def error(self, exc: BaseException) -> bytes:
        self.ended = True
        status, kind, message, _ = status_of(exc)
        return self._sse(self.error_body(status, kind, message))

    def body(self, r: Any) -> dict[str, Any]:
        choices = []
        for c in r.choices:
            msg: dict[str, Any] = {"role": "assistant", "content": c.text or (None if c.tool_calls else ""),
                                   "refusal": c.refusal}
            if c.reasoning:
                msg["reasoning_content"] = c.reasoning
            if c.tool_calls:
                msg["tool_calls"] = [{"id": tc.id or new_id("call_"), "type": "function",
                                      "function": {"name": tc.name, "arguments": tc.arguments_json}} for tc in c.tool_calls]
            choices.append({"index": c.index, "message": msg, "logprobs": None,
                            "finish_reason": _FINISH.get(c.finish_reason or "stop", "stop")})
        return {"id": r.id or self.id, "object": "chat.completion", "created": self.created,
                "model": r.model or self.model, "choices": choices, "usage": chat_usage(r.usage)}
