"""llmrelay events as OpenAI Responses stream events (and the non-streaming `response` object)."""

from __future__ import annotations

from typing import Any

from .. import events as ev
from .encode import Encoder, new_id, responses_usage, status_of


class ResponsesEncoder(Encoder):
    protocol = "openai_responses"
    id_prefix = "resp"

    def __init__(self, model: str, include_usage: bool = False):
        super().__init__(model, include_usage)
        self.id = new_id("resp_")
        self.seq = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # finished items
        self.item: dict[str, Any] | None = None  # the open item
        self.tool_items: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None

    def _ev(self, kind: str, **fields: Any) -> bytes:
        self.seq += 1
        if self.quiet:
            return b""
        return self._sse({"type": kind, "sequence_number": self.seq, **fields}, kind)

    def _response(self, status: str, output: list[dict[str, Any]] | None = None, usage: Any = None) -> dict[str, Any]:
        r: dict[str, Any] = {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                             "model": self.model, "output": output or [], "parallel_tool_calls": True,
                             "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None}
        if usage is not None:
            r["usage"] = responses_usage(usage)
        return r

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        r = self._response("in_progress")
        return self._ev("response.created", response=r) + self._ev("response.in_progress", response=r)

    def _close(self) -> bytes:
        item, self.item = self.item, None
        if item is None:
            return b""
        index = len(self.output)
        out = b""
        kind = item["type"]
        if kind == "message":
            part = item["content"][0]
            if part["type"] == "output_text":
                out += self._ev("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                                text=part["text"], logprobs=[])
            else:
                out += self._ev("response.refusal.done", item_id=item["id"], output_index=index, content_index=0,
                                refusal=part["refusal"])
            out += self._ev("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part)
        elif kind == "reasoning":
            if item["summary"]:
                text = item["summary"][0]["text"]
                out += self._ev("response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                                summary_index=0, text=text)
                out += self._ev("response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                                summary_index=0, part={"type": "summary_text", "text": text})
        elif kind == "function_call":
            out += self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                            name=item["name"], arguments=item["arguments"])
        item["status"] = "completed"
        self.output.append(item)
        return out + self._ev("response.output_item.done", output_index=index, item=item)

    def _open(self, item: dict[str, Any]) -> bytes:
        out = self._start() + self._close()
        self.item = item
        added = {**item, "status": "in_progress"}
        if item["type"] == "message":
            added["content"] = []
        elif item["type"] == "reasoning":
            added["summary"] = []
        elif item["type"] == "function_call":
            added["arguments"] = ""
        return out + self._ev("response.output_item.added", output_index=len(self.output), item=added)

    def _message(self, part_type: str) -> bytes:
        if self.item is not None and self.item["type"] == "message" and self.item["content"][0]["type"] == part_type:
            return b""
        part = {"type": "output_text", "text": "", "annotations": []} if part_type == "output_text" else \
            {"type": "refusal", "refusal": ""}
        item = {"id": new_id("msg_"), "type": "message", "status": "in_progress", "role": "assistant", "content": [part]}
        out = self._open(item)
        return out + self._ev("response.content_part.added", item_id=item["id"], output_index=len(self.output),
                              content_index=0, part=dict(part))

    def encode(self, e: Any) -> bytes:
        t = type(e)
        if t is ev.TextDelta:
            if e.choice:
                return b""
            out = self._message("output_text")
            self.item["content"][0]["text"] += e.text  # type: ignore[index]
            return out + self._ev("response.output_text.delta", item_id=self.item["id"], output_index=len(self.output),  # type: ignore[index]
                                  content_index=0, delta=e.text, logprobs=[])
        if t is ev.ReasoningDelta:
            if e.choice or not e.text:
                return b""
            out = b""
            if self.item is None or self.item["type"] != "reasoning":
                item = {"id": new_id("rs_"), "type": "reasoning", "summary": [{"type": "summary_text", "text": ""}]}
                out = self._open(item)
                out += self._ev("response.reasoning_summary_part.added", item_id=item["id"], output_index=len(self.output),
                                summary_index=0, part={"type": "summary_text", "text": ""})
            self.item["summary"][0]["text"] += e.text  # type: ignore[index]
            return out + self._ev("response.reasoning_summary_text.delta", item_id=self.item["id"],  # type: ignore[index]
                                  output_index=len(self.output), summary_index=0, delta=e.text)
        if t is ev.ToolCallStart:
            if e.choice:
                return b""
            item = {"id": new_id("fc_"), "type": "function_call", "status": "in_progress", "call_id": e.id or new_id("call_"),
                    "name": e.name, "arguments": ""}
            self.tool_items[e.index] = item
            return self._open(item)
        if t is ev.ToolCallDelta:
            item = self.tool_items.get(e.index)
            if e.choice or item is None or item is not self.item:
                return b""
            item["arguments"] += e.arguments
            return self._ev("response.function_call_arguments.delta", item_id=item["id"], output_index=len(self.output),
                            delta=e.arguments)
        if t is ev.ToolCallEnd:
            return self._close() if self.tool_items.get(e.index) is self.item and self.item is not None else b""
        if t is ev.RefusalDelta:
            if e.choice:
                return b""
            out = self._message("refusal")
            self.item["content"][0]["refusal"] += e.text  # type: ignore[index]
            return out + self._ev("response.refusal.delta", item_id=self.item["id"], output_index=len(self.output),  # type: ignore[index]
                                  content_index=0, delta=e.text)
        if t is ev.Finish:
            if e.choice == 0:
                self.finish = e.reason
            return b""
        return self._meta(e)

    def _end(self) -> bytes:
        out = self._start() + self._close()
        if self.finish == "length":
            r = self._response("incomplete", self.output, self.usage)
            r["incomplete_details"] = {"reason": "max_output_tokens"}
            return out + self._ev("response.incomplete", response=r)
        return out + self._ev("response.completed", response=self._response("completed", self.output, self.usage))

    def error(self, exc: BaseException) -> bytes:
        self.ended = True
        status, kind, message, _ = status_of(exc)
        code = {429: "rate_limit_exceeded", 504: "timeout"}.get(status, "server_error" if status >= 500 else "invalid_request")
        # the Responses API's own error event, plus the `error` object the openai SDK raises on
        return self._ev("error", code=code, message=message, param=None,
                        error={"type": kind, "code": code, "message": message})

    def body(self, r: Any) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if r.reasoning:
            output.append({"id": new_id("rs_"), "type": "reasoning", "status": "completed",
                           "summary": [{"type": "summary_text", "text": r.reasoning}]})
        if r.text or not r.tool_calls:
            output.append({"id": new_id("msg_"), "type": "message", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": r.text, "annotations": []}]})
        if r.refusal:
            output.append({"id": new_id("msg_"), "type": "message", "status": "completed", "role": "assistant",
                           "content": [{"type": "refusal", "refusal": r.refusal}]})
        for tc in r.tool_calls:
            output.append({"id": new_id("fc_"), "type": "function_call", "status": "completed",
                           "call_id": tc.id or new_id("call_"), "name": tc.name, "arguments": tc.arguments_json})
        if r.model:
            self.model = r.model
        if r.id and r.id.startswith("resp"):
            self.id = r.id
        body = self._response("incomplete" if r.finish_reason == "length" else "completed", output, r.usage)
        if r.finish_reason == "length":
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        return body
