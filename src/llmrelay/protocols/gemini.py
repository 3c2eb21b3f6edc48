"""Google Gemini: `POST {base}/models/{model}:streamGenerateContent?alt=sse`.

Request (`encode`):

- system messages -> `systemInstruction.parts`; user / assistant (role `model`)
  messages -> `contents`. Images: base64 -> `inlineData`, URLs -> `fileData`
  (`fileUri`; the MIME type is the part's or guessed from the URL).
- Opaque `thoughtSignature`s go back on the part they came with: a signed
  `TextPart`, a `ToolCall` (`functionCall` part) and a signed `ReasoningPart`
  (`{text, thought: true, thoughtSignature}`). Unsigned reasoning is dropped
  (Gemini never needs thought summaries back).
- Tool results -> `functionResponse {name, response: {result: text}}` in a
  user-role content; consecutive tool messages share one content (parallel
  calls). The name is the tool message's `name`, else the one of the call with
  that id earlier in the conversation.
- Call ids: Gemini may omit `functionCall.id`. The decoder then makes one up
  (`SYNTHETIC_ID_PREFIX` + n) so tool results can refer to the call; such ids
  are never sent back to Gemini, real ones are (`functionCall.id`,
  `functionResponse.id`).
- Params -> `generationConfig`: temperature, maxOutputTokens, topP,
  stopSequences, seed, candidateCount (`n`). `thinking_budget` ->
  `thinkingConfig {thinkingBudget, includeThoughts}` (includeThoughts unless the
  budget is 0). `reasoning_effort` -> `thinkingConfig.thinkingLevel` (Gemini 3):
  minimal/low/medium/high as is, xhigh -> high, includeThoughts true; "none" ->
  `thinkingBudget: 0` (Gemini 2.5's off switch). Both at once is an error (Gemini
  rejects thinkingLevel together with thinkingBudget).
- Tools -> `tools[{functionDeclarations: [{name, description,
  parametersJsonSchema}]}]` (full JSON Schema, not the OpenAPI subset of
  `parameters`); tool_choice auto/none/required -> `toolConfig` mode
  AUTO/NONE/ANY, a tool name -> ANY + `allowedFunctionNames`.

Response (`Decoder`): the body format is sniffed from its first non-blank byte:
`[` -> JSON array (no `alt=sse`; `JSONArrayParser`), `{` -> a bare JSON object
(e.g. a non-streamed reply or an error object; read as an array of one),
anything else -> SSE (CRLF). Every chunk is a whole GenerateContentResponse.

- `finishReason` may be a string or, with `enum-encoding=int`, an integer of
  `google.ai.generativelanguage.v1beta.Candidate.FinishReason` (`_FINISH_ENUM`;
  Vertex's aiplatform enum numbers differ, but Vertex sends strings). The raw
  reason is always reported as the enum *name*. STOP -> stop (tool_calls when
  the candidate emitted function calls), MAX_TOKENS -> length, safety / policy
  reasons -> content_filter, anything else (malformed or unexpected tool calls,
  OTHER, unknown values) -> error.
- `usageMetadata` rides on every chunk; the last one wins (never max or sum).
  input = promptTokenCount + toolUsePromptTokenCount (code execution / search
  tool prompts are billed as input), output = candidatesTokenCount +
  thoughtsTokenCount, so input + output == totalTokenCount.
- Vertex streamed function-call arguments (`functionCall.willContinue` +
  `partialArgs[{jsonPath, stringValue|numberValue|boolValue|nullValue,
  willContinue}]`) are assembled into the arguments object; the call closes at
  the next `functionCall` without `willContinue` (or at the finish), and its
  arguments JSON is then sent as one delta.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from .. import events as ev
from ..errors import InvalidRequestError
from ..messages import ImagePart, Message, ReasoningPart, TextPart, ToolCall
from ..usage import Usage, output_with_reasoning
from ..wire import JSONArrayParser, SSEParser
from .base import Call, Decoder as _Decoder, HTTPRequest, ToolCalls, build_request, dumps, malformed, parse_arguments, shaped, copy_params

PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "reasoning_effort", "thinking_budget", "n"})

SYNTHETIC_ID_PREFIX = "gemini-call-"

#: google.ai.generativelanguage.v1beta Candidate.FinishReason (enum-encoding=int).
_FINISH_ENUM = {
    0: "FINISH_REASON_UNSPECIFIED", 1: "STOP", 2: "MAX_TOKENS", 3: "SAFETY", 4: "RECITATION", 5: "OTHER",
    6: "LANGUAGE", 7: "BLOCKLIST", 8: "PROHIBITED_CONTENT", 9: "SPII", 10: "MALFORMED_FUNCTION_CALL",
    11: "IMAGE_SAFETY", 12: "UNEXPECTED_TOOL_CALL", 13: "TOO_MANY_TOOL_CALLS", 14: "IMAGE_PROHIBITED_CONTENT",
    15: "IMAGE_OTHER", 16: "NO_IMAGE",
}
#: google.ai.generativelanguage.v1beta PromptFeedback.BlockReason.
_BLOCK_ENUM = {0: "BLOCK_REASON_UNSPECIFIED", 1: "SAFETY", 2: "OTHER", 3: "BLOCKLIST", 4: "PROHIBITED_CONTENT", 5: "IMAGE_SAFETY"}

FINISH: dict[str, ev.FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
         "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"),
        "content_filter",
    ),
}

_EFFORT = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_SKIP_KEYS = ("thoughtSignature", "thought")
_TOOL_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


# -- request -------------------------------------------------------------------
def _image(p: ImagePart) -> dict[str, Any]:
    if p.data is not None and not p.url:
        return {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
    ref: dict[str, Any] = {"fileUri": p.url}
    mime = p.media_type or mimetypes.guess_type(p.url or "")[0]
    if mime:
        ref["mimeType"] = mime
    return {"fileData": ref}


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature:
        part["thoughtSignature"] = signature
    return part


def _call_args(c: ToolCall) -> dict[str, Any]:
    if c.arguments is not None:
        return c.arguments
    args, _ = parse_arguments(c.raw_arguments)
    return args or {}


def _model_parts(m: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, TextPart):
            if p.text or p.signature:
                parts.append(_signed({"text": p.text}, p.signature))
        elif isinstance(p, ToolCall):
            fc: dict[str, Any] = {"name": p.name, "args": _call_args(p)}
            if p.id and not p.id.startswith(SYNTHETIC_ID_PREFIX):
                fc["id"] = p.id
            parts.append(_signed({"functionCall": fc}, p.signature))
        elif isinstance(p, ReasoningPart):
            if p.signature:
                parts.append({"text": p.text, "thought": True, "thoughtSignature": p.signature})
        elif isinstance(p, ImagePart):
            parts.append(_image(p))
    return parts


def encode_contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call id -> function name, as seen so far
    responses: list[dict[str, Any]] | None = None  # the open tool-results content
    for i, m in enumerate(messages):
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "")
            if not name:
                raise InvalidRequestError(
                    f"messages[{i}]: Gemini needs the function name of a tool result; give the tool message a "
                    f"'name' or keep the assistant message with tool call {m.tool_call_id!r} in the conversation"
                )
            # Gemini reads an "error" key as the function's error details
            fr: dict[str, Any] = {"name": name, "response": {"error" if m.is_error else "result": m.text}}
            if m.tool_call_id and not m.tool_call_id.startswith(SYNTHETIC_ID_PREFIX):
                fr["id"] = m.tool_call_id
            if responses is None:
                responses = []
                contents.append({"role": "user", "parts": responses})
            responses.append({"functionResponse": fr})
            continue
        responses = None
        if m.role == "system":
            system.extend({"text": p.text} for p in m.parts if isinstance(p, TextPart))
        elif m.role == "assistant":
            for c in m.parts:
                if isinstance(c, ToolCall) and c.id:
                    names[c.id] = c.name
            parts = _model_parts(m)
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:
            parts = [{"text": p.text} if isinstance(p, TextPart) else _image(p) for p in m.parts
                     if isinstance(p, (TextPart, ImagePart))]
            if parts:
                contents.append({"role": "user", "parts": parts})
    return system, contents


def generation_config(call: Call) -> dict[str, Any]:
    p = call.params
    cfg: dict[str, Any] = {}
    copy_params(p, cfg, {
        "temperature": "temperature",
        "max_tokens": "maxOutputTokens",
        "top_p": "topP",
        "stop": "stopSequences",
        "seed": "seed",
        "n": "candidateCount",
    })
    if p.thinking_budget is not None and p.reasoning_effort is not None:
        raise InvalidRequestError("Gemini takes either thinking_budget or reasoning_effort, not both")
    if p.thinking_budget is not None:
        cfg["thinkingConfig"] = {"thinkingBudget": p.thinking_budget, "includeThoughts": p.thinking_budget != 0}
    elif p.reasoning_effort == "none":
        cfg["thinkingConfig"] = {"thinkingBudget": 0}
    elif p.reasoning_effort is not None:
        cfg["thinkingConfig"] = {"thinkingLevel": _EFFORT[p.reasoning_effort], "includeThoughts": True}
    return cfg


def encode(call: Call) -> HTTPRequest:
    call, native = shaped(call)  # structured output (llmrelay.structured)
    system, contents = encode_contents(call.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    cfg = generation_config(call)
    if native is not None:
        cfg["responseMimeType"] = "application/json"
        if native == "json_schema":
            cfg["responseJsonSchema"] = call.output.schema
    if cfg:
        body["generationConfig"] = cfg
    tools = getattr(call, "tools", None)
    if tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters} for t in tools]}]
    choice = getattr(call, "tool_choice", None)
    if choice is not None:
        mode = _TOOL_MODE.get(choice)
        fcc = {"mode": mode} if mode else {"mode": "ANY", "allowedFunctionNames": [choice]}
        body["toolConfig"] = {"functionCallingConfig": fcc}
    model = call.model if "/" in call.model else f"models/{call.model}"
    headers = {"x-goog-api-key": call.api_key} if call.api_key else {}
    return build_request(call, f"/{model}:streamGenerateContent?alt=sse", body, headers)


# -- response ------------------------------------------------------------------
def gemini_usage(u: dict[str, Any]) -> Usage:
    prompt = u.get("promptTokenCount")
    tool_prompt = u.get("toolUsePromptTokenCount")
    if tool_prompt is not None:
        prompt = (prompt or 0) + tool_prompt
    candidates = u.get("candidatesTokenCount")
    thoughts = u.get("thoughtsTokenCount")
    output = output_with_reasoning(candidates, thoughts, prompt, u.get("totalTokenCount"), outside=True)
    return Usage(prompt, output, u.get("cachedContentTokenCount"), None, thoughts, raw=u)


def _enum_name(value: Any, table: dict[int, str]) -> str:
    if type(value) is int:
        return table.get(value, str(value))
    return str(value)


def _path(path: str) -> list[Any]:
    """`$.a.b[0]['c']` -> ["a", "b", 0, "c"] (partialArgs jsonPath)."""
    keys = path.replace("[", ".").replace("]", "").split(".")
    if keys[0] == "$":
        del keys[0]
    return [int(k) if k.isdigit() else k.strip("'\"") for k in keys if k]


def _set_path(node: Any, keys: list[Any], value: Any, append: bool) -> None:
    for i, k in enumerate(keys):
        if type(k) is int:
            node.extend([None] * (k + 1 - len(node)))
            old = node[k]
        else:
            old = node.get(k)
        if i == len(keys) - 1:
            node[k] = old + value if append and isinstance(old, str) and isinstance(value, str) else value
        elif isinstance(old, (dict, list)):
            node = old
        else:
            node[k] = node = [] if type(keys[i + 1]) is int else {}


class _Partial:
    __slots__ = ("key", "args", "cont")

    def __init__(self, key: Any):
        self.key = key
        self.args: dict[str, Any] = {}
        self.cont: str | None = None  # jsonPath whose string value continues

    def apply(self, partial_args: list[Any]) -> None:
        for pa in partial_args:
            path = pa.get("jsonPath") if isinstance(pa, dict) else None
            keys = _path(path) if path else None
            if not keys:
                continue
            value = next((pa[k] for k in ("stringValue", "numberValue", "boolValue") if k in pa), None)
            try:
                _set_path(self.args, keys, value, "stringValue" in pa and self.cont == path)
            except (AttributeError, TypeError):
                continue  # a path that contradicts earlier ones: keep what we have
            self.cont = path if pa.get("willContinue") else None


class Decoder(_Decoder):
    def __init__(self) -> None:  # the framing is chosen from the first bytes
        self._parser: Any = None
        self.complete = False
        self.cut = False
        self._started = False
        self._tools = ToolCalls()
        self._calls: dict[int, int] = {}  # candidate -> function calls emitted
        self._partial: dict[int, _Partial] = {}
        self._finished: dict[int, str] = {}
        self._usage: Any = None

    def feed(self, data: bytes) -> list:
        if self._parser is None:
            head = data.lstrip()
            if not head:
                return []
            if head[:1] == b"[":
                self._parser = JSONArrayParser(self.max_line)
            elif head[:1] == b"{":
                self._parser = JSONArrayParser(self.max_line)
                self._parser.feed(b"[")
            else:
                self._parser = SSEParser(self.max_line)
            data = head
        try:
            return super().feed(data)
        except ValueError as exc:  # JSONArrayParser: bytes that are not a JSON array
            return [malformed(data, exc)]

    def end(self) -> list:
        if self._parser is None:
            self._parser = SSEParser(self.max_line)
        return super().end()

    def _on(self, name: str | None, obj: Any, out: list) -> None:  # a wrong shape: see Decoder._frames
        err = obj.get("error")
        if err is not None:
            self._error(err, out)
            return
        if not self._started:
            self._started = True
            out.append(ev.StreamStart(obj.get("responseId"), obj.get("modelVersion")))
        candidates = obj.get("candidates")
        if candidates:
            for position, cand in enumerate(candidates):
                self._candidate(cand, position, out)
        feedback = obj.get("promptFeedback")
        if feedback and feedback.get("blockReason") is not None and 0 not in self._finished:
            raw = _enum_name(feedback["blockReason"], _BLOCK_ENUM)
            self._finished[0] = raw
            out.append(ev.ProviderEvent("prompt_feedback", feedback))
            out.append(ev.Finish("content_filter", raw, 0))
            self.complete = True
        usage = obj.get("usageMetadata")
        if usage and usage != self._usage:
            self._usage = usage
            out.append(ev.UsageEvent(gemini_usage(usage)))

    def _candidate(self, cand: dict[str, Any], position: int, out: list) -> None:
        idx = cand.get("index", position)
        content = cand.get("content")
        parts = content.get("parts") if content else None
        if parts:
            for part in parts:
                if "text" in part:
                    text = part["text"]
                    sig = part.get("thoughtSignature")
                    if text or sig:
                        if part.get("thought"):
                            out.append(ev.ReasoningDelta(text, idx, sig))
                        else:
                            out.append(ev.TextDelta(text, idx, sig))
                elif "functionCall" in part:
                    self._function_call(part["functionCall"], part.get("thoughtSignature"), idx, out)
                else:
                    kind = next((k for k in part if k not in _SKIP_KEYS), None)
                    if kind is None:  # a bare signature closes the current part
                        sig = part.get("thoughtSignature")
                        if sig:
                            delta = ev.ReasoningDelta if part.get("thought") else ev.TextDelta
                            out.append(delta("", idx, sig))
                    else:
                        out.append(ev.ProviderEvent(kind, part, idx))
        for meta in ("groundingMetadata", "citationMetadata", "urlContextMetadata"):
            if meta in cand:
                out.append(ev.ProviderEvent(meta, cand[meta], idx))
        reason = cand.get("finishReason")
        if reason is not None:
            raw = _enum_name(reason, _FINISH_ENUM)
            if self._finished.get(idx) != raw:
                self._finished[idx] = raw
                self._close_partial(idx, out)
                norm = FINISH.get(raw, "error")
                if norm == "stop" and self._calls.get(idx):
                    norm = "tool_calls"
                out.append(ev.Finish(norm, raw, idx))
                self.complete = True

    def _function_call(self, fc: Any, sig: str | None, idx: int, out: list) -> None:
        if type(fc) is not dict:
            return
        name = fc.get("name")
        partial = self._partial.get(idx)
        if name:
            if partial is not None:
                self._close_partial(idx, out)
            n = self._calls.get(idx, 0)
            self._calls[idx] = n + 1
            call_id = fc.get("id") or (f"{SYNTHETIC_ID_PREFIX}{n}" if idx == 0 else f"{SYNTHETIC_ID_PREFIX}{idx}-{n}")
            key = (idx, n)
            if not fc.get("willContinue"):
                self._tools.whole(key, call_id, name, fc.get("args"), out, idx, sig)
                return
            self._tools.start(key, call_id, name, out, idx, sig)
            partial = self._partial[idx] = _Partial(key)
        if partial is None:
            return
        if fc.get("partialArgs"):
            partial.apply(fc["partialArgs"])
        if not fc.get("willContinue"):
            self._close_partial(idx, out)

    def _close_partial(self, idx: int, out: list) -> None:
        partial = self._partial.pop(idx, None)
        if partial is not None:
            self._tools.delta(partial.key, dumps(partial.args).decode("utf-8"), out)
            self._tools.end(partial.key, out)

    @staticmethod
    def _error(err: Any, out: list) -> None:
        if isinstance(err, dict):
            code = err.get("code")
            out.append(ev.StreamError(
                str(err.get("message") or err),
                code=err.get("status") or code,
                status=code if type(code) is int else None,
                data=err,
            ))
        else:
            out.append(ev.StreamError(str(err), data=err))

    def _at_end(self, out: list) -> None:
        if self.complete:
            for idx in list(self._partial):
                self._close_partial(idx, out)
