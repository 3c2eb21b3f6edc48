"""From what the hook captured (references, no work) to database rows and JSON files.

Everything here runs in the writer thread: JSON serialization, cost,
redaction and file writing never run on the stream's thread.
"""

from __future__ import annotations

import datetime
import functools
import json
import operator
import os
import re
import time
from typing import Any

from .migrations import BOOL_COLUMNS, COLUMNS
from .redact import Scrubber, header_secrets, redact_headers, redact_url

OK_STATUSES = ("ok", "truncated")


class TurnRecord:
    """One model request as the hook saw it: references only, serialized later."""

    __slots__ = ("correlation_id", "turn", "started_at", "ended_at", "call", "request", "response",
                 "call_info", "tool_results", "attempts", "output")

    def __init__(self, correlation_id: str, turn: int, started_at: float, ended_at: float,
                 call: Any, request: Any, response: Any, call_info: Any):
        self.correlation_id = correlation_id
        self.turn = turn
        self.started_at = started_at
        self.ended_at = ended_at
        self.call = call
        self.request = request
        self.response = response
        #: Shared by every turn of the call: (tags, requested, stream).
        self.call_info = call_info
        self.tool_results: list[Any] | None = None
        #: Set on the row that answered (or the last row of a failed round): Attempt objects or dicts.
        self.attempts: list[Any] | None = None
        #: Structured output: the validated object of the call, on the row that produced it.
        self.output: Any = None

    @property
    def status(self) -> str:
        return getattr(self.response, "status", None) or "error"


# -- small serializers ---------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return error_text(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k, None) for k in value.__dataclass_fields__}
    return repr(value)


#: One encoder for every row (json.dumps with options builds a new one per call).
dumps = json.JSONEncoder(ensure_ascii=False, default=_default, separators=(",", ":")).encode


def error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return f"{type(error).__name__}: {error}"


def part_dict(part: Any) -> dict[str, Any]:
    kind = getattr(part, "type", None)
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "reasoning":
        out: dict[str, Any] = {"type": "reasoning", "text": part.text}
        if part.redacted:
            out["redacted"] = True
        return out
    if kind == "tool_call":
        return tool_call_dict(part)
    if kind == "image":
        if part.url:
            return {"type": "image", "url": part.url}
        return {"type": "image", "media_type": part.media_type, "base64_chars": len(part.data or "")}
    return {"type": str(kind), "value": repr(part)}


def tool_call_dict(tc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": tc.id, "name": tc.name, "arguments": tc.arguments}
    if tc.arguments is None:
        out["raw_arguments"] = tc.raw_arguments
    if tc.error:
        out["error"] = tc.error
    return out


def message_dict(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    parts = m.parts
    if all(getattr(p, "type", None) == "text" for p in parts):
        out["content"] = "".join(p.text for p in parts)
    else:
        out["content"] = [part_dict(p) for p in parts if getattr(p, "type", None) != "tool_call"]
        calls = [tool_call_dict(p) for p in parts if getattr(p, "type", None) == "tool_call"]
        if calls:
            out["tool_calls"] = calls
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    if m.is_error:
        out["is_error"] = True
    return out


def tool_result_dict(r: Any) -> dict[str, Any]:
    return {"call_id": r.call_id, "name": r.name, "content": r.content, "error": r.error,
            "duration": round(r.duration, 6) if r.duration is not None else None}


def attempt_dict(a: Any) -> dict[str, Any]:
    if isinstance(a, dict):
        return a
    if isinstance(a, TurnRecord):  # a retried request: its own row describes it
        r = a.response
        return {"model": f"{r.provider or a.call.provider.name}:{a.call.model}", "ok": a.status in OK_STATUSES,
                "status": a.status, "error": error_text(r.error), "turn": a.turn}
    response = getattr(a, "response", None)
    error = getattr(a, "error", None)
    status = getattr(response, "status", None) if response is not None else ("skipped" if error is not None else None)
    return {"model": a.model, "ok": error is None, "status": status, "error": error_text(error)}


def request_text(messages: Any) -> str:
    return "\n".join(m.text for m in messages or () if m.text)


def cost_of(response: Any) -> tuple[float | None, str | None]:
    """`response.cost` (`llmrelay.cost`), else the provider-reported cost; never raises."""
    try:
        cost = getattr(response, "cost", None)
    except Exception as exc:  # a pricing bug must not lose the row
        return None, f"cost failed: {type(exc).__name__}: {exc}"
    total = getattr(cost, "total", None) if cost is not None else None
    reason = getattr(cost, "reason", None) if cost is not None else None
    if total is not None:
        if reason is None:  # priced: say from where
            source, priced_as = getattr(cost, "source", None), getattr(cost, "priced_as", None)
            reason = " ".join(x for x in (source, f"({priced_as})" if priced_as else None) if x) or None
        return float(total), reason
    provider_cost = response.usage.provider_cost
    if provider_cost is not None:
        return float(provider_cost), "reported by the provider"
    return None, reason


# -- the row ---------------------------------------------------------------------------


def scrubber_for(rec: TurnRecord) -> Scrubber:
    request = rec.request
    secrets = [getattr(rec.call, "api_key", None)]
    if request is not None:
        secrets.extend(header_secrets(request.headers))
    secrets.extend(header_secrets(getattr(rec.call, "extra_headers", None)))
    return _scrubber(tuple(s for s in secrets if isinstance(s, str)))


@functools.lru_cache(maxsize=256)
def _scrubber(secrets: tuple[str, ...]) -> Scrubber:
    """Rows of one key share a Scrubber (building one JSON-escapes and sorts every secret)."""
    return Scrubber(secrets)


def build_row(rec: TurnRecord, scrub: Scrubber) -> dict[str, Any]:
    """Column values for one turn (JSON columns as JSON text, booleans as bool), secrets scrubbed."""
    r = rec.response
    call = rec.call
    tags, requested, stream, conversation_id = rec.call_info
    usage = r.usage
    timings = r.timings
    cost_usd, cost_reason = cost_of(r)
    error = r.error
    tool_calls = r.tool_calls
    if not isinstance(requested, str) and requested is not None:
        models = getattr(requested, "models", requested)  # a Router
        requested = dumps(list(models)) if isinstance(models, (list, tuple)) else repr(requested)
    row: dict[str, Any] = {
        "correlation_id": rec.correlation_id,
        "turn": rec.turn,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "provider": r.provider or call.provider.name,
        "requested": requested,
        "requested_model": r.requested_model or call.model,
        "model": r.model or call.model,
        "status": rec.status,
        "finish_reason": r.finish_reason,
        "error_type": type(error).__name__ if error is not None else None,
        "error": error_text(error),
        "request_id": r.request_id,
        "response_id": r.id,
        "stream": bool(stream),
        "request_messages": dumps([message_dict(m) for m in call.messages]),
        "text": r.text,
        "reasoning": r.reasoning or None,
        "refusal": r.refusal,
        "tool_calls": dumps([tool_call_dict(tc) for tc in tool_calls]) if tool_calls else None,
        "tool_results": dumps([tool_result_dict(t) for t in rec.tool_results]) if rec.tool_results else None,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_estimated": bool(usage.estimated),
        "cost_usd": cost_usd,
        "cost_reason": cost_reason,
        "ttft": timings.time_to_first_token,
        "duration": timings.total,
        "attempts": dumps([attempt_dict(a) for a in rec.attempts]) if rec.attempts else None,
        "tags": dumps(tags) if tags else None,
        "output": dumps(output_value(rec.output)) if rec.output is not None else None,
        "conversation_id": conversation_id,
        "params": dumps(params) if (params := request_params(call)) else None,
        "base_url": base_url(call.base_url),
        "started_at_iso": iso(rec.started_at),
        "ended_at_iso": iso(rec.ended_at),
        "time_to_first_text": timings.time_to_first_text,
    }
    # one search over all the text columns; scrubbed column by column only when something is there
    # (joined with NUL, which no key pattern matches: a hit in the joined text can only be a false alarm)
    if scrub.finds("\0".join([value for value in row.values() if isinstance(value, str)])):
        for name, value in row.items():
            if isinstance(value, str) and name not in _NOT_SCRUBBED:
                row[name] = scrub.text(value)
    return row


_NOT_SCRUBBED = frozenset({"correlation_id", "conversation_id", "status", "started_at_iso", "ended_at_iso"})


def iso(epoch: float | None) -> str | None:
    """Seconds since the epoch -> ISO-8601 UTC, microseconds kept (`2026-12-06T17:05:01.123456+00:00`)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=256)  # a handful of base URLs, one per row
def base_url(url: str | None) -> str | None:
    """The base URL without credentials: no user or password, secret query values masked."""
    if url and "@" in url:
        from urllib.parse import urlsplit, urlunsplit

        try:
            parts = urlsplit(url)
            url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))
        except ValueError:
            pass
    return redact_url(url)


def request_params(call: Any) -> dict[str, Any] | None:
    """The request's parameters: the generation params set, tool_choice, runtime options, extra_body."""
    params = getattr(call, "params", None)
    out: dict[str, Any] = {}
    if params is not None:
        out.update((name, getattr(params, name)) for name in params.set_fields())
    for name in ("tool_choice", "options", "extra_body"):
        value = getattr(call, name, None)
        if value is not None:
            out[name] = value
    return out or None


def output_value(value: Any) -> Any:
    """A validated structured output as plain JSON data (pydantic model, dataclass, or already plain)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [output_value(v) for v in value]
    return value


_VALUES = operator.itemgetter(*COLUMNS)
_BOOL_INDEXES = tuple(i for i, c in enumerate(COLUMNS) if c in BOOL_COLUMNS)


def sqlite_values(row: dict[str, Any]) -> tuple[Any, ...]:
    values = _VALUES(row)
    if not _BOOL_INDEXES:
        return values
    out = list(values)
    for i in _BOOL_INDEXES:
        if out[i] is not None:
            out[i] = int(out[i])
    return tuple(out)


# -- request / response JSON files ---------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: Any, limit: int = 64) -> str:
    """A file-name component: ASCII letters, digits, `.`, `_`, `-` only; no leading dot."""
    text = _UNSAFE.sub("_", str(value)).strip("._") or "x"
    return text[:limit]


def file_stem(rec: TurnRecord) -> str:
    t = rec.started_at
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int((t % 1) * 1000):03d}Z"
    return f"{stamp}_{safe_name(rec.correlation_id)}_{int(rec.turn):03d}"


def request_document(rec: TurnRecord) -> dict[str, Any]:
    """The request as sent: URL and headers redacted here, the rest scrubbed as JSON text."""
    req = rec.request
    if req is None:
        return {"correlation_id": rec.correlation_id, "turn": rec.turn, "request": None}
    body = req.json
    if body is None and req.body:
        try:
            body = json.loads(req.body)
        except ValueError:
            body = req.body.decode("utf-8", "replace")
    return {
        "correlation_id": rec.correlation_id,
        "turn": rec.turn,
        "provider": rec.call.provider.name,
        "model": rec.call.model,
        "method": req.method,
        "url": redact_url(req.url),
        "headers": redact_headers(req.headers),
        "body": body,
    }


def response_document(rec: TurnRecord, row: dict[str, Any]) -> dict[str, Any]:
    r = rec.response
    doc = {
        "correlation_id": rec.correlation_id,
        "turn": rec.turn,
        "provider": r.provider,
        "model": r.model,
        "requested_model": r.requested_model,
        "id": r.id,
        "request_id": r.request_id,
        "status": row["status"],
        "error": error_text(r.error),
        "choices": [
            {"index": c.index, "finish_reason": c.finish_reason, "raw_finish_reason": c.raw_finish_reason,
             "refusal": c.refusal, "parts": [part_dict(p) for p in c.parts]}
            for c in r.choices
        ],
        "usage": {k: v for k, v in r.usage.to_dict().items()},
        "cost": {"usd": row["cost_usd"], "reason": row["cost_reason"]},
        "timings": r.timings.to_dict(),
        "provider_events": r.provider_events or None,
        "tool_results": [tool_result_dict(t) for t in rec.tool_results] if rec.tool_results else None,
        "attempts": [attempt_dict(a) for a in rec.attempts] if rec.attempts else None,
    }
    return doc


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def write_files(directory: str, rec: TurnRecord, row: dict[str, Any], scrub: Scrubber) -> str:
    """One `<stamp>_<correlation>_<turn>.request.json` / `.response.json` pair (one line of JSON
    each, mode 0600, never overwriting); returns the stem."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stem = file_stem(rec)
    base = os.path.join(directory, stem)
    n = 1
    while os.path.exists(base + ".request.json") or os.path.exists(base + ".response.json"):
        n += 1
        base = os.path.join(directory, f"{stem}-{n}")
    # compact JSON (the C encoder; `jq .` pretty-prints), scrubbed as text: one pass, no object walk
    _write_private(base + ".request.json", scrub.text(dumps(request_document(rec))) + "\n")
    _write_private(base + ".response.json", scrub.text(dumps(response_document(rec, row))) + "\n")
    return os.path.basename(base)
