"""AWS Bedrock InvokeModelWithResponseStream: `POST {base}/model/{modelId}/invoke-with-response-stream`
with the model family's native body (provider `bedrock-invoke`).

Encoding: Anthropic's Messages body (`anthropic_version: bedrock-2023-05-31`, no
`model`, no `stream`) for every model but Amazon Nova, which gets its native
`messages-v1` body (the Converse message shapes). Other families' native bodies
(Titan, Llama, Cohere...) are not encoded: use the `bedrock` provider (Converse) for them.

Decoding: the same AWS event stream as Converse; each `chunk` event carries the
model's native JSON event, base64-encoded, in `bytes`. Anthropic Messages events go
through the Anthropic decoder, Nova events through the Converse one, and the
single-field formats (Titan `outputText`, Llama `generation`, Cohere `text` by
`index`, legacy Claude `completion`) are read here. The last chunk's
`amazon-bedrock-invocationMetrics` gives the usage (and ends the stream) when the
family reports none of its own.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from .. import events as ev
from ..usage import Usage
from . import anthropic, bedrock
from .base import Call, HTTPRequest, build_request, loads

PARAMS = anthropic.PARAMS
ANTHROPIC_VERSION = "bedrock-2023-05-31"

FINISH: dict[str, ev.FinishReason] = {
    "stop": "stop", "stop_sequence": "stop", "end_turn": "stop", "FINISH": "stop", "COMPLETE": "stop",
    "length": "length", "max_tokens": "length", "LENGTH": "length", "MAX_TOKENS": "length",
    "CONTENT_FILTERED": "content_filter", "ERROR": "error", "ERROR_TOXIC": "content_filter",
}


def encode(call: Call) -> HTTPRequest:
    path = f"/model/{quote(call.model, safe='')}/invoke-with-response-stream"
    headers = {"accept": "application/vnd.amazon.eventstream"}
    if bedrock._family(call.model) == "amazon":
        converse = bedrock.encode(call)
        body = dict(converse.json)
        body["schemaVersion"] = "messages-v1"
        return build_request(call, path, body, headers)
    request = anthropic.encode(call)
    body = {k: v for k, v in request.json.items() if k not in ("model", "stream")}
    body["anthropic_version"] = ANTHROPIC_VERSION
    return build_request(call, path, body, headers)


def metrics_usage(m: dict[str, Any]) -> Usage:
    read, write = m.get("cacheReadInputTokenCount"), m.get("cacheWriteInputTokenCount")
    inp = m.get("inputTokenCount")
    if isinstance(inp, int):
        inp += (read or 0) + (write or 0)
    return Usage(input_tokens=inp, output_tokens=m.get("outputTokenCount"), cached_input_tokens=read,
                 cache_write_tokens=write, raw=dict(m))


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Decoder(bedrock.Decoder):
    def __init__(self) -> None:
        super().__init__()
        self._anthropic = anthropic.Decoder()
        self._family: str | None = None
        self._reasons: dict[int, str] = {}
        self._usage: dict[str, int | None] = {}
        self._guardrail: str | None = None
        self._seen: set[int] = set()

    def _on(self, name: str | None, obj: Any, out: list) -> None:
        if name != "chunk":
            super()._on(name, obj, out)  # in-band exceptions, unknown events
            return
        inner = loads(base64.b64decode(obj["bytes"]))
        if type(inner) is not dict:
            raise TypeError(f"chunk payload is {type(inner).__name__}, not an object")
        metrics = inner.get("amazon-bedrock-invocationMetrics")
        if "type" in inner:  # Anthropic Messages event
            self._anthropic._on(None, inner, out)
            self.complete = self._anthropic.complete
        elif any(k in inner for k in self._handlers):  # Amazon Nova native: {"contentBlockDelta": {...}}
            for key, value in inner.items():
                handler = self._handlers.get(key)
                if handler is not None:
                    handler(value, out)
        else:
            self._single_field(inner, out)
        action = inner.get("amazon-bedrock-guardrailAction")
        if action is not None and action != self._guardrail:  # repeated on every chunk: kept when it changes
            self._guardrail = action
            out.append(ev.ProviderEvent("guardrailAction", action))
        if metrics is not None:
            if not self._anthropic_or_nova_usage(inner):
                out.append(ev.UsageEvent(metrics_usage(metrics)))
            out.append(ev.ProviderEvent("invocationMetrics", metrics))
            self._end_single(out)
            self.complete = True

    def _anthropic_or_nova_usage(self, inner: dict[str, Any]) -> bool:
        return "type" in inner or "metadata" in inner

    def _single_field(self, c: dict[str, Any], out: list) -> None:
        """Titan / Llama / Cohere (legacy generate) / Claude Text Completions chunks."""
        index = int(c["index"]) if _count(c.get("index")) is not None else 0  # Titan sends 0.0
        self._seen.add(index)
        for key in ("outputText", "generation", "completion", "text"):
            text = c.get(key)
            if isinstance(text, str):
                if text:
                    out.append(ev.TextDelta(text, index))
                break
        reason = c.get("completionReason") or c.get("stop_reason") or c.get("finish_reason")
        if isinstance(reason, str):
            # Cohere's last chunk has no index: its finish reason is every generation's
            for i in ([index] if "index" in c else sorted(self._seen)):
                self._reasons[i] = reason
        usage = self._usage
        for ours, keys in (("input", ("inputTextTokenCount", "prompt_token_count")),
                           ("output", ("totalOutputTextTokenCount", "generation_token_count"))):
            for k in keys:
                if _count(c.get(k)) is not None:
                    usage[ours] = _count(c.get(k))

    def _end_single(self, out: list) -> None:
        if self._anthropic.complete or self._finished:
            return
        if self._stop is not None:  # Nova: messageStop came before
            self._finish(out)
            return
        for index, reason in sorted(self._reasons.items()):
            out.append(ev.Finish(FINISH.get(reason, "stop"), reason, index))
        self._reasons.clear()
        self._finished = True

    def _at_end(self, out: list) -> None:
        if self._usage and not self.complete:
            out.append(ev.UsageEvent(Usage(input_tokens=self._usage.get("input"), output_tokens=self._usage.get("output"))))
        super()._at_end(out)
