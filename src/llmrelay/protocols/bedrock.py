"""AWS Bedrock Converse: `POST {base}/model/{modelId}/converse-stream` (one wire format for
Anthropic, Amazon Nova, Meta Llama, Mistral, Cohere, AI21, OpenAI gpt-oss... on Bedrock).

The response is binary `application/vnd.amazon.eventstream` (`llmrelay.wire.eventstream`);
each event message's `:event-type` names a Converse event and its payload is JSON.

Encoding decisions:

- `system` messages go to the top-level `system` list of `{text}` blocks.
- Content blocks: `{text}`, `{image: {format, source: {bytes}}}` (base64 data; a URL
  image is refused before sending: Converse takes bytes or S3 only), `{toolUse}`,
  `{toolResult}` (tool results merge into one user turn), and assistant reasoning as
  `{reasoningContent: {reasoningText: {text, signature}}}` or `{redactedContent}`;
  reasoning without a signature (another provider's) is dropped. Empty text is dropped.
- `inferenceConfig`: `maxTokens`, `temperature`, `topP`, `stopSequences`.
- Thinking: `thinking_budget` / `reasoning_effort` become Anthropic's
  `additionalModelRequestFields.thinking` for Claude models, `reasoning_effort` for
  OpenAI models on Bedrock, and `reasoningConfig` for Nova; other families get
  UnsupportedParameterError before sending.
- Tools: `toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}`;
  `tool_choice` auto / required / a name -> `{auto}` / `{any}` / `{tool: {name}}`;
  "none" sends no `toolChoice` and no tools when the conversation has no tool turns.
- The model id goes in the URL path, percent-encoded (`:` -> `%3A`), as the SDKs send it.

Decoding: `contentBlockDelta` routes text, `reasoningContent` (text, `signature`,
`redactedContent`) and `toolUse.input` fragments by `contentBlockIndex`;
`contentBlockStart` opens tool calls (a server-run tool, `type: server_tool_use`,
and its `toolResult` become `ProviderEvent`s). `messageStop.stopReason` is the
finish reason, announced after the `metadata` event that follows it (usage,
`metrics.latencyMs`), or at the end of the stream. In-band exception messages
(`throttlingException`, `modelStreamErrorException`, ...) become errors with the
HTTP status they stand for. A bad CRC or impossible frame is a malformed stream;
a stream cut inside a frame is an interrupted stream.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .. import events as ev
from ..errors import InvalidRequestError, UnsupportedParameterError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage
from ..wire.eventstream import EventStreamError, EventStreamParser
from . import anthropic
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, copy_params, dumps, merged_turns, shaped

#: Converse's reasoning is Claude's extended thinking: the same parameters and effort budgets as Anthropic's API.
PARAMS = anthropic.PARAMS
EFFORT_BUDGET = anthropic.EFFORT_BUDGET

FINISH: dict[str, ev.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

#: In-band exception (`:exception-type`) -> the HTTP status it stands for.
ERROR_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "modelStreamErrorException": 424,
    "modelNotReadyException": 429,
    "throttlingException": 429,
    "serviceQuotaExceededException": 429,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}

TOOL_CHOICE: dict[str, dict[str, Any]] = {"auto": {"auto": {}}, "required": {"any": {}}}
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_CUT = "incomplete: the tool input was cut off (stopReason {!r})"


# -- encoding ---------------------------------------------------------------
def _image(p: ImagePart) -> dict[str, Any]:
    data, media = p.data, p.media_type
    if data is None and p.url and p.url.startswith("data:"):
        head, _, data = p.url.partition(",")
        media = head[5:].split(";")[0]
    if data is None:
        raise UnsupportedParameterError("bedrock", "image URL", "Converse takes image bytes: pass the image data (ImagePart.from_bytes/data URL).")
    return {"image": {"format": _FORMATS.get(media or "image/png", (media or "png").rsplit("/", 1)[-1]), "source": {"bytes": data}}}


def _blocks(m: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, ImagePart):
            out.append(_image(p))
        elif isinstance(p, ReasoningPart):
            if m.role != "assistant":
                continue
            if p.redacted is not None:
                out.append({"reasoningContent": {"redactedContent": p.redacted}})
            elif p.signature is not None:
                out.append({"reasoningContent": {"reasoningText": {"text": p.text, "signature": p.signature}}})
        elif isinstance(p, ToolCall):
            if m.role != "assistant":
                raise InvalidRequestError(f"bedrock: a tool call can only appear in an assistant message, not {m.role!r}")
            out.append({"toolUse": {"toolUseId": p.id, "name": p.name, "input": p.arguments if p.arguments is not None else {}}})
    return out


def _tool_result(m: Message) -> dict[str, Any]:
    result: dict[str, Any] = {"toolUseId": m.tool_call_id, "content": [{"text": m.text}]}
    if m.is_error:
        result["status"] = "error"
    return {"toolResult": result}


def encode_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, Converse messages with same-role turns merged)."""
    return merged_turns(messages, _blocks, _tool_result, lambda text: {"text": text})


def _family(model: str) -> str:
    """`us.anthropic.claude-...` -> "anthropic"; an ARN or an unknown id -> its vendor segment."""
    tail = model.rsplit("/", 1)[-1]
    parts = tail.split(".")
    if len(parts) > 2 and len(parts[0]) <= 4 and parts[0] in ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"):
        parts = parts[1:]
    return parts[0] if len(parts) > 1 else ""


def _reasoning(call: Call, body: dict[str, Any]) -> None:
    p = call.params
    if p.thinking_budget is None and p.reasoning_effort in (None, "none"):
        return
    family = _family(call.model)
    extra = body.setdefault("additionalModelRequestFields", {})
    if family == "anthropic":
        budget = p.thinking_budget if p.thinking_budget is not None else EFFORT_BUDGET[p.reasoning_effort]  # type: ignore[index]
        extra["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if p.max_tokens is None:  # maxTokens must exceed the budget: leave the answer 4096 tokens
            body.setdefault("inferenceConfig", {})["maxTokens"] = budget + 4096
    elif family == "openai" and p.thinking_budget is None:
        extra["reasoning_effort"] = p.reasoning_effort
    elif family == "amazon" and p.thinking_budget is None:
        effort = {"minimal": "low", "xhigh": "high"}.get(p.reasoning_effort, p.reasoning_effort)  # type: ignore[arg-type]
        extra["reasoningConfig"] = {"type": "enabled", "maxReasoningEffort": effort}
    else:
        name = "thinking_budget" if p.thinking_budget is not None else "reasoning_effort"
        raise UnsupportedParameterError("bedrock", name, f"Model {call.model!r} takes no reasoning setting through Converse.")


def encode(call: Call) -> HTTPRequest:
    call, _ = shaped(call)  # structured output: an output tool (llmrelay.structured)
    p = call.params
    system, messages = encode_messages(call.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config = copy_params(p, {}, {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP", "stop": "stopSequences"})
    if config:
        body["inferenceConfig"] = config
    _reasoning(call, body)
    tools = call.tools
    has_tool_turns = any(m.role == "tool" for m in call.messages)
    if tools and (call.tool_choice != "none" or has_tool_turns):
        cfg: dict[str, Any] = {"tools": [{"toolSpec": {"name": t.name, "description": t.description or t.name,
                                                       "inputSchema": {"json": t.parameters}}} for t in tools]}
        choice = call.tool_choice
        if choice not in (None, "none"):
            cfg["toolChoice"] = TOOL_CHOICE.get(choice) or {"tool": {"name": choice}}
        body["toolConfig"] = cfg
    path = f"/model/{quote(call.model, safe='')}/converse-stream"
    headers = {"accept": "application/vnd.amazon.eventstream"}
    return build_request(call, path, body, headers)


# -- decoding ---------------------------------------------------------------
def bedrock_usage(u: dict[str, Any]) -> Usage:
    """Converse usage: `inputTokens` excludes cache reads/writes; ours include them."""
    inp = u.get("inputTokens")
    read = u.get("cacheReadInputTokens")
    write = u.get("cacheWriteInputTokens")
    if isinstance(inp, int):
        inp += (read or 0) + (write or 0)
    return Usage(input_tokens=inp, output_tokens=u.get("outputTokens"), cached_input_tokens=read,
                 cache_write_tokens=write, raw=dict(u))


class Decoder(_Decoder):
    framing = EventStreamParser

    def __init__(self) -> None:
        super().__init__()
        self._tools = ToolCalls()
        self._server: dict[Any, list[Any]] = {}  # block index -> [kind, data, input pieces]
        self._stop: str | None = None
        self._finished = False
        self._broken = False
        self._handlers = {
            "contentBlockDelta": self._delta,
            "contentBlockStart": self._block_start,
            "contentBlockStop": self._block_stop,
            "messageStart": self._message_start,
            "messageStop": self._message_stop,
            "metadata": self._metadata,
        }

    # the framing is binary: each message becomes (event name, JSON payload) for the base class
    def feed(self, data: bytes) -> list:
        out: list = []
        if self._broken:
            return out
        parser = self._parser
        try:
            messages = parser.feed(data)
        except EventStreamError as exc:
            self._broken = True
            out.append(_malformed(exc))
            return out
        self._frames([_frame(h, p) for h, p in messages], out, final=False)
        if parser.error is not None:  # good messages, then a bad one, in the same read
            self._broken = True
            out.append(_malformed(parser.error))
        return out

    def end(self) -> list:
        out: list = []
        if not self._broken:
            try:
                self._parser.close()
            except EventStreamError:
                self.cut = True
        self._at_end(out)
        return out

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        handler = self._handlers.get(name)  # type: ignore[arg-type]
        if handler is not None:
            handler(obj, out)
        elif name and name.startswith("!"):
            self._exception(name[1:], obj, out)
        else:
            out.append(ev.ProviderEvent(name or "unknown", obj))

    def _message_start(self, obj: dict[str, Any], out: list) -> None:
        out.append(ev.StreamStart(None, None))

    def _delta(self, obj: dict[str, Any], out: list) -> None:
        d = obj["delta"]
        idx = obj.get("contentBlockIndex")
        text = d.get("text")
        if text is not None:
            if text:
                out.append(ev.TextDelta(text))
            return
        reasoning = d.get("reasoningContent")
        if reasoning is not None:
            if reasoning.get("text"):
                out.append(ev.ReasoningDelta(reasoning["text"]))
            if reasoning.get("signature"):
                out.append(ev.ReasoningDelta("", signature=reasoning["signature"]))
            if reasoning.get("redactedContent") is not None:
                out.append(ev.ReasoningDelta("", redacted=reasoning["redactedContent"]))
            return
        tool = d.get("toolUse")
        if tool is not None:
            server = self._server.get(idx)
            if server is not None:
                server[2].append(tool.get("input") or "")
            else:
                self._tools.delta(idx, tool.get("input") or "", out)
            return
        if "toolResult" in d:
            out.append(ev.ProviderEvent("toolResult", {"index": idx, "content": d["toolResult"]}))
            return
        kind = next(iter(d), "contentBlockDelta")
        out.append(ev.ProviderEvent(kind, d))

    def _block_start(self, obj: dict[str, Any], out: list) -> None:
        start = obj["start"]
        idx = obj.get("contentBlockIndex")
        tool = start.get("toolUse")
        if tool is not None:
            if tool.get("type") == "server_tool_use":
                self._server[idx] = ["server_tool_use", dict(tool), []]
            else:
                self._tools.start(idx, tool.get("toolUseId"), tool.get("name") or "", out)
            return
        out.append(ev.ProviderEvent(next(iter(start), "contentBlockStart"), start))

    def _block_stop(self, obj: dict[str, Any], out: list) -> None:
        idx = obj.get("contentBlockIndex")
        if idx in self._tools:
            self._tools.end(idx, out)
            return
        server = self._server.pop(idx, None)
        if server is not None:
            kind, data, pieces = server
            data["input"] = "".join(pieces)
            out.append(ev.ProviderEvent(kind, data))

    def _message_stop(self, obj: dict[str, Any], out: list) -> None:
        reason = obj.get("stopReason") or "end_turn"
        self._tools.end_all(out, error=_CUT.format(reason) if reason != "tool_use" else None)
        self._stop = reason
        fields = obj.get("additionalModelResponseFields")
        if fields:
            out.append(ev.ProviderEvent("additionalModelResponseFields", fields))
        self.complete = True

    def _metadata(self, obj: dict[str, Any], out: list) -> None:
        usage = obj.get("usage")
        if usage:
            out.append(ev.UsageEvent(bedrock_usage(usage)))
        rest = {k: v for k, v in obj.items() if k not in ("usage", "p")}
        if rest:
            out.append(ev.ProviderEvent("metadata", rest))  # metrics.latencyMs, trace
        self._finish(out)

    def _finish(self, out: list) -> None:
        if self._stop is not None and not self._finished:
            self._finished = True
            out.append(ev.Finish(FINISH.get(self._stop, "stop"), self._stop))

    def _exception(self, kind: str, obj: Any, out: list) -> None:
        message = obj.get("message") or obj.get("Message") if isinstance(obj, dict) else None
        status = ERROR_STATUS.get(kind)
        if isinstance(obj, dict) and isinstance(obj.get("originalStatusCode"), int):
            status = obj["originalStatusCode"]
        out.append(ev.StreamError(str(message or kind), code=kind, status=status, data=obj))

    def _at_end(self, out: list) -> None:
        self._finish(out)


def _malformed(exc: EventStreamError) -> ev.StreamError:
    return ev.StreamError(f"malformed event stream: {exc}", code="malformed_event_stream", kind="malformed")


def _frame(headers: dict, payload: bytes) -> tuple[str, bytes]:
    """(event name, JSON payload); an exception or error message becomes ("!" + its type, payload)."""
    kind = headers.get(":message-type")
    if kind == "event":
        return headers.get(":event-type", ""), payload
    if kind == "exception":
        return "!" + str(headers.get(":exception-type", "exception")), payload or b"{}"
    # ":message-type: error": the code and message ride in headers
    return "!" + str(headers.get(":error-code", "error")), dumps({"message": headers.get(":error-message", "")})
