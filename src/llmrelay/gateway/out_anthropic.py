"""llmrelay events as Anthropic Messages stream events (and the non-streaming `message`)."""

from __future__ import annotations

import json
from typing import Any

from .. import events as ev
from .encode import Encoder, anthropic_usage, new_id, status_of

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal", "error": "end_turn"}


class AnthropicEncoder(Encoder):
    protocol = "anthropic"
    id_prefix = "msg"

    def __init__(self, model: str, include_usage: bool = False):
        super().__init__(model, include_usage)
        self.id = new_id("msg_")
        self.started = False
        self.index = -1  # the open block's index (-1: none)
        self.block: str | None = None  # its type
        self.stop: str | None = None
        self.tools: dict[int, int] = {}  # llmrelay tool index -> block index

    def observe(self, e: Any) -> None:
        if type(e) is ev.TextDelta and self.block == "text":
            return  # the relayed bulk: nothing to remember
        super().observe(e)

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self._sse({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": anthropic_usage(self.usage)}}, "message_start")

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return self._sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._start() + self._close()
        self.index += 1
        self.block = kind
        return out + self._sse({"type": "content_block_start", "index": self.index, "content_block": block},
                               "content_block_start")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._sse({"type": "content_block_delta", "index": self.index, "delta": delta}, "content_block_delta")

    def encode(self, e: Any) -> bytes:
        t = type(e)
        if t is ev.TextDelta:
            if e.choice:
                return b""
            out = b"" if self.block == "text" else self._open("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": e.text})
        if t is ev.ReasoningDelta:
            if e.choice:
                return b""
            if e.redacted is not None:
                out = self._open("redacted_thinking", {"type": "redacted_thinking", "data": e.redacted})
                return out + self._close()
            out = b"" if self.block == "thinking" else self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if e.text:
                out += self._delta({"type": "thinking_delta", "thinking": e.text})
            if e.signature:
                out += self._delta({"type": "signature_delta", "signature": e.signature}) + self._close()
            return out
        if t is ev.ToolCallStart:
            if e.choice:
                return b""
            out = self._open("tool_use", {"type": "tool_use", "id": e.id or new_id("toolu_"), "name": e.name, "input": {}})
            self.tools[e.index] = self.index
            return out
        if t is ev.ToolCallDelta:
            if e.choice or self.tools.get(e.index) != self.index or self.block != "tool_use":
                return b""
            return self._delta({"type": "input_json_delta", "partial_json": e.arguments})
        if t is ev.ToolCallEnd:
            return self._close() if self.tools.get(e.index) == self.index and self.block == "tool_use" else b""
        if t is ev.RefusalDelta:
            out = b"" if self.block == "text" else self._open("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": e.text})
        if t is ev.Finish:
            if e.choice == 0:
                self.stop = _STOP.get(e.reason, "end_turn")
            return b""
        return self._meta(e)

    def _end(self) -> bytes:
        out = self._start() + self._close()
        out += self._sse({"type": "message_delta", "delta": {"stop_reason": self.stop or "end_turn", "stop_sequence": None},
                          "usage": anthropic_usage(self.usage)}, "message_delta")
        return out + self._sse({"type": "message_stop"}, "message_stop")

    def error(self, exc: BaseException) -> bytes:
        self.ended = True
        status, kind, message, _ = status_of(exc)
        return self._sse(self.error_body(status, kind, message), "error")

    @staticmethod
    def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": kind, "message": message}}

    def body(self, r: Any) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for p in r.parts:
            kind = type(p).__name__
            if kind == "TextPart":
                content.append({"type": "text", "text": p.text})
            elif kind == "ReasoningPart":
                if p.redacted is not None:
                    content.append({"type": "redacted_thinking", "data": p.redacted})
                else:
                    content.append({"type": "thinking", "thinking": p.text, "signature": p.signature or ""})
            elif kind == "ToolCall":
                args = p.arguments if p.arguments is not None else _loose(p.raw_arguments)
                content.append({"type": "tool_use", "id": p.id or new_id("toolu_"), "name": p.name, "input": args})
        if r.refusal:
            content.append({"type": "text", "text": r.refusal})
        rid = r.id if r.id and r.id.startswith("msg") else self.id
        return {"id": rid, "type": "message", "role": "assistant", "model": r.model or self.model, "content": content,
                "stop_reason": _STOP.get(r.finish_reason or "stop", "end_turn"), "stop_sequence": None,
                "usage": anthropic_usage(r.usage)}


def _loose(raw: str) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}
